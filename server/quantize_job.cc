#include "server/quantize_job.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/convert.h"
#include "kernels/crc32c.h"
#include "kernels/ggml_formats.h"
#include "kernels/status_macros.h"

namespace quantd {
namespace {

absl::Status NameTensor(const std::string& name, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat("tensor ", name, ": ", status.message()));
}

absl::Status Cancelled(const std::string& name) {
  return absl::CancelledError(absl::StrCat("tensor ", name, ": cancelled"));
}

}  // namespace

int64_t TensorWorkingSetBytes(const Layout& layout, DType dtype,
                              OutputKind output, bool calibration) {
  const int64_t n = layout.num_elements;
  int64_t bytes = n * DTypeSize(dtype);  // received
  if (dtype != DType::kF32) bytes += 4 * n;  // f32 copy
  if (output != OutputKind::kPacked || layout.IsBlockFormat() || calibration) {
    bytes += 4 * n;  // dequantized values
  }
  if (calibration) {
    // ComputeOutputError: G in f32, two panels of up to 256 rows; the
    // range estimator's copies of the per-channel stats.
    const int64_t in = layout.row_length;
    bytes += 4 * in * in + 2 * 4 * std::min<int64_t>(256, layout.rows) * in +
             32 * in;
  }
  if (layout.IsBlockFormat()) bytes += 4 * layout.row_length;  // importance
  bytes += layout.packed_bytes + layout.num_groups * 5;
  return bytes;
}

namespace {

// Quantizes `src` into out.quantized with the layout's block format and
// measures the round trip through ggml's dequantizer. The dequantized values
// are left in `w_hat` (n floats) for a fake-quant output.
absl::Status RunBlockFormat(const TensorInput& input, const float* src,
                            const std::atomic<bool>& cancelled,
                            TensorOutput& out, std::vector<float>& w_hat) {
  const Layout& layout = input.layout;
  const GgmlFormatTraits* block = GgmlFormatOf(layout.scheme);
  if (block == nullptr) {
    return absl::InternalError(absl::StrCat(
        "layout of block format ", layout.scheme.format, " not in the table"));
  }
  const float* importance =
      input.importance.empty() ? nullptr : input.importance.data();
  // A calibration set stands in for missing importance weights where the
  // format uses them (llama.cpp's imatrix is the set's Σx²/tokens).
  if (importance == nullptr && block->uses_importance &&
      input.calibration != nullptr && !input.calibration->importance().empty()) {
    importance = input.calibration->importance().data();
    out.calibration->importance_from_calibration = true;
  }
  QUANTD_RETURN_IF_ERROR(GgmlQuantize(*block, src, layout.rows,
                                      layout.row_length, importance,
                                      out.quantized.codes.data()));
  if (cancelled.load(std::memory_order_relaxed)) return Cancelled(input.name);
  w_hat.resize(static_cast<size_t>(layout.num_elements));
  QUANTD_RETURN_IF_ERROR(GgmlDequantize(*block, out.quantized.codes.data(),
                                        layout.rows, layout.row_length,
                                        w_hat.data()));
  if (cancelled.load(std::memory_order_relaxed)) return Cancelled(input.name);
  out.metrics = ComputeErrorMetrics(src, w_hat.data(), w_hat.size());
  out.metrics.bits_per_weight = layout.BitsPerWeight();
  return absl::OkStatus();
}

// The output-space error over the set's G and the set's activation range.
absl::Status MeasureWithCalibration(const TensorInput& input, const float* src,
                                    const std::vector<float>& w_hat,
                                    CalibrationResult& result) {
  const CalibrationSet& set = *input.calibration;
  auto named = [&](const absl::Status& s) {
    return absl::Status(s.code(),
                        absl::StrCat("tensor ", input.name, ": calibration set '",
                                     set.name(), "': ", s.message()));
  };
  const Layout& layout = input.layout;
  if (!set.gram().empty()) {
    absl::StatusOr<OutputError> e =
        ComputeOutputError(src, w_hat.data(), layout.rows, layout.row_length,
                           set.gram());
    if (!e.ok()) return named(e.status());
    result.output_error = *e;
  }
  if (set.has_stats()) {
    result.range_options = input.activation_range;
    absl::StatusOr<ActivationRange> r =
        EstimateTensorRange(set.accumulator(), input.activation_range);
    if (!r.ok()) return named(r.status());
    result.activation_range = *r;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TensorOutput> RunQuantizeJob(TensorInput& input,
                                            const std::atomic<bool>& cancelled) {
  const absl::Time start = absl::Now();
  const Layout& layout = input.layout;
  const auto n = static_cast<size_t>(layout.num_elements);

  std::vector<float> f32;
  const float* src = nullptr;
  if (input.dtype == DType::kF32) {
    src = input.storage.data();
  } else {
    f32.resize(n);
    absl::Status s =
        ConvertToF32(input.dtype, input.storage.data(), n, f32.data());
    if (!s.ok()) return NameTensor(input.name, s);
    src = f32.data();
  }
  if (cancelled.load(std::memory_order_relaxed)) return Cancelled(input.name);

  TensorOutput out;
  out.name = input.name;
  out.bytes_in = input.bytes;
  out.quantized = AllocateQuantized(layout);
  if (input.calibration != nullptr) {
    out.calibration.emplace();
    out.calibration->calibration = input.calibration->name();
    out.calibration->tokens = input.calibration->tokens();
  }
  std::vector<float> w_hat;
  if (layout.IsBlockFormat()) {
    absl::Status s = RunBlockFormat(input, src, cancelled, out, w_hat);
    if (absl::IsCancelled(s)) return s;
    if (!s.ok()) return NameTensor(input.name, s);
  } else {
    if (absl::Status s = Quantize(src, out.quantized); !s.ok()) {
      return NameTensor(input.name, s);
    }
    if (cancelled.load(std::memory_order_relaxed)) return Cancelled(input.name);
    // One pass: the dequantized values exist in full only when they are
    // sent or measured against a calibration set.
    if (input.output != OutputKind::kPacked || input.calibration != nullptr) {
      w_hat.resize(n);
    }
    out.metrics = DequantizeAndMeasure(out.quantized, src,
                                       w_hat.empty() ? nullptr : w_hat.data());
  }
  if (input.calibration != nullptr) {
    absl::Status s = MeasureWithCalibration(input, src, w_hat, *out.calibration);
    if (!s.ok()) return s;
    if (cancelled.load(std::memory_order_relaxed)) return Cancelled(input.name);
  }
  if (input.output == OutputKind::kPacked) std::vector<float>().swap(w_hat);
  // The input is no longer needed: give its memory back before sending.
  std::vector<float>().swap(input.storage);
  std::vector<float>().swap(f32);

  const QuantizedTensor& q = out.quantized;
  out.send_packed = input.output != OutputKind::kFakeQuant;
  if (out.send_packed) {
    out.codes_crc32c = Crc32c(q.codes.data(), q.codes.size());
    out.scales_crc32c = Crc32c(q.scales.data(), q.scales.size() * sizeof(float));
    out.zero_points_crc32c = Crc32c(q.zero_points.data(), q.zero_points.size());
    out.bytes_out += static_cast<int64_t>(
        q.codes.size() + q.scales.size() * sizeof(float) + q.zero_points.size());
  }
  if (input.output != OutputKind::kPacked) {
    out.fake_quant = std::move(w_hat);
    out.fake_quant_crc32c =
        Crc32c(out.fake_quant.data(), out.fake_quant.size() * sizeof(float));
    out.bytes_out += static_cast<int64_t>(out.fake_quant.size() * sizeof(float));
  }
  out.compute_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return out;
}

}  // namespace quantd

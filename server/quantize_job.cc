#include "server/quantize_job.h"

#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/convert.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "kernels/quantize_tensor.h"

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

  std::optional<CalibrationView> calibration;
  if (input.calibration != nullptr) {
    const CalibrationSet& set = *input.calibration;
    calibration.emplace(set.name(), set.features(), set.accumulator(),
                        set.gram(), set.importance(), set.holdout());
  }
  TensorJob job;
  job.name = input.name;
  job.layout = layout;
  job.output = input.output;
  job.importance = input.importance;
  job.calibration = calibration.has_value() ? &*calibration : nullptr;
  job.activation_range = input.activation_range;
  job.imported_scales = input.imported_scales;
  job.imported_zero_points = input.imported_zero_points;
  absl::StatusOr<TensorResult> result =
      QuantizeTensor(job, src, [&]() -> absl::Status {
        if (cancelled.load(std::memory_order_relaxed)) {
          return Cancelled(input.name);
        }
        return absl::OkStatus();
      });
  if (!result.ok()) return result.status();
  // The input is no longer needed: give its memory back before sending.
  std::vector<float>().swap(input.storage);
  std::vector<float>().swap(f32);

  TensorOutput out;
  out.name = input.name;
  out.bytes_in = input.bytes;
  out.layout = std::move(result->layout);
  out.parts = std::move(result->parts);
  out.metrics = result->metrics;
  out.tensor_scale = result->tensor_scale;
  out.scale_offset = result->scale_offset;
  out.calibration = std::move(result->calibration);
  // Every part is what the table says the layout implies (the client
  // checks the same), or it is not sent; anything else is a bug.
  for (const PartSpec& spec : PartTable()) {
    PartBuffer& part = out.parts[spec.part];
    if (!PartSent(spec, input.output)) {
      part = PartBuffer();
      continue;
    }
    const int64_t want = PartBytes(spec, out.layout, input.output);
    if (static_cast<int64_t>(part.size()) != want) {
      return absl::InternalError(absl::StrCat(
          "tensor ", input.name, ": ", spec.name, " of format ",
          out.layout.scheme.format, " have ", part.size(),
          " bytes, the layout says ", want));
    }
    out.crc32c[spec.part] = Crc32c(part.bytes().data(), part.size());
    out.bytes_out += want;
  }
  out.compute_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return out;
}

}  // namespace quantd

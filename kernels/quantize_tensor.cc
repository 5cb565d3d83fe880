#include "kernels/quantize_tensor.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/awq.h"
#include "kernels/calibration_stats.h"
#include "kernels/convert.h"
#include "kernels/dtype.h"
#include "kernels/float_formats.h"
#include "kernels/ggml_formats.h"
#include "kernels/gptq.h"
#include "kernels/gptq_ggml.h"
#include "kernels/hqq.h"
#include "kernels/layout.h"
#include "kernels/nonuniform.h"
#include "kernels/output_error.h"
#include "kernels/quantize.h"
#include "kernels/range_estimators.h"
#include "kernels/scheme_options.h"
#include "kernels/smoothquant.h"
#include "kernels/w8a8.h"

namespace quantd {

namespace {

absl::Status NameTensor(absl::string_view name, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat("tensor ", name, ": ", status.message()));
}

// A result while the job computes it: the int layout's typed buffers (also
// the codes of every other family) and AWQ's / SmoothQuant's channel
// scales, which become parts when the job ends; the other families' extra
// parts go to TensorResult::parts as their kernels return them.
struct Working {
  QuantizedTensor quantized;
  std::vector<float> channel_scales;
};


// Quantizes `src` into work.quantized with the layout's block format and
// measures the round trip through ggml's dequantizer. The dequantized values
// are left in `w_hat` (n floats) for a fake-quant output or a calibration
// set's output error; otherwise it stays empty.
absl::Status RunBlockFormat(
    const TensorJob& input, const float* src,
    absl::FunctionRef<absl::Status()> check_cancelled, Working& work,
    TensorResult& out, std::vector<float>& w_hat) {
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
                                      work.quantized.codes.data()));
  QUANTD_RETURN_IF_ERROR(check_cancelled());
  // One pass in L1: the dequantized values exist in full only when they are
  // sent or measured against a calibration set.
  if (input.output != OutputKind::kPacked || input.calibration != nullptr) {
    w_hat.resize(static_cast<size_t>(layout.num_elements));
  }
  QUANTD_ASSIGN_OR_RETURN(
      out.metrics,
      GgmlDequantizeAndMeasure(*block, work.quantized.codes.data(), layout.rows,
                               layout.row_length, src,
                               w_hat.empty() ? nullptr : w_hat.data()));
  QUANTD_RETURN_IF_ERROR(check_cancelled());
  out.metrics.bits_per_weight = layout.BitsPerWeight();
  return absl::OkStatus();
}

// Float, codebook and HQQ formats: quantizes `src` with the layout's kernel,
// moves its parts into `out` and measures the round trip through the
// kernel's dequantizer, whose values are left in `w_hat` (n floats).
absl::Status RunOtherFormat(
    const TensorJob& input, const float* src,
    absl::FunctionRef<absl::Status()> check_cancelled, Working& work,
    TensorResult& out, std::vector<float>& w_hat) {
  const Layout& layout = input.layout;
  const auto n = static_cast<size_t>(layout.num_elements);
  w_hat.resize(n);
  double bits_per_weight = 0;
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  std::vector<uint8_t> block_scales;
  std::vector<float> second_scales;
  std::vector<float> codebooks;
  std::vector<float> zero_points_f32;
  switch (layout.kind) {
    case LayoutKind::kFloat: {
      QUANTD_ASSIGN_OR_RETURN(FloatFormatOptions options,
                              FloatOptionsOf(layout.scheme));
      QUANTD_ASSIGN_OR_RETURN(
          FloatQuantized q,
          FloatQuantize(src, layout.rows, layout.row_length, options));
      QUANTD_RETURN_IF_ERROR(check_cancelled());
      QUANTD_RETURN_IF_ERROR(FloatDequantize(q, w_hat.data()));
      bits_per_weight = FloatBitsPerWeight(q);
      if (q.options.format == FloatFormat::kNvfp4) out.tensor_scale = q.tensor_scale;
      if (q.options.double_quant) out.scale_offset = q.scale_offset;
      codes = std::move(q.codes);
      scales = std::move(q.scales);
      block_scales = std::move(q.block_scales);
      second_scales = std::move(q.second_scales);
      break;
    }
    case LayoutKind::kCodebook: {
      bool power_of_two = false;
      CodebookOptions options;
      options.bits = CodebookBits(layout.scheme, &power_of_two);
      options.granularity = layout.scheme.granularity;
      options.group_size = layout.scheme.group_size;
      QUANTD_ASSIGN_OR_RETURN(
          CodebookTensor q,
          power_of_two
              ? PowerOfTwoQuantize(src, layout.rows, layout.row_length, options)
              : KMeansQuantize(src, layout.rows, layout.row_length, options));
      QUANTD_RETURN_IF_ERROR(check_cancelled());
      QUANTD_RETURN_IF_ERROR(CodebookDequantize(q, w_hat.data()));
      bits_per_weight = q.BitsPerWeight();
      codes = std::move(q.codes);
      scales = std::move(q.scales);
      codebooks = std::move(q.codebooks);
      break;
    }
    case LayoutKind::kHqq: {
      QUANTD_ASSIGN_OR_RETURN(HqqOptions options, HqqOptionsOf(layout.scheme));
      QUANTD_ASSIGN_OR_RETURN(
          HqqTensor q,
          HqqQuantize(src, layout.rows, layout.row_length, options));
      QUANTD_RETURN_IF_ERROR(check_cancelled());
      QUANTD_RETURN_IF_ERROR(HqqDequantize(q, w_hat.data()));
      bits_per_weight = q.BitsPerWeight();
      codes = std::move(q.codes);
      scales = std::move(q.scales);
      zero_points_f32 = std::move(q.zero_points);
      break;
    }
    case LayoutKind::kInt:
    case LayoutKind::kGgmlBlock:
      return absl::InternalError("RunOtherFormat called for an int or ggml layout");
  }
  // QuantizeTensor's caller checks every part's size against the layout.
  out.parts[Part::kBlockScales] = PartBuffer::Adopt(std::move(block_scales));
  out.parts[Part::kSecondScales] = PartBuffer::Adopt(std::move(second_scales));
  out.parts[Part::kCodebooks] = PartBuffer::Adopt(std::move(codebooks));
  out.parts[Part::kZeroPointsF32] =
      PartBuffer::Adopt(std::move(zero_points_f32));
  work.quantized.codes = std::move(codes);
  work.quantized.scales = std::move(scales);
  out.metrics = ComputeErrorMetrics(src, w_hat.data(), n);
  out.metrics.bits_per_weight = bits_per_weight;
  QUANTD_RETURN_IF_ERROR(check_cancelled());
  return absl::OkStatus();
}

// The output-space error over the set's G and the set's activation range.
absl::Status MeasureWithCalibration(const TensorJob& input, const float* src,
                                    const std::vector<float>& w_hat,
                                    CalibrationResult& result) {
  const CalibrationView& set = *input.calibration;
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
    if (input.activation_range.per_channel) {
      absl::StatusOr<std::vector<ActivationRange>> channels =
          EstimateChannelRanges(set.accumulator(), input.activation_range);
      if (absl::IsFailedPrecondition(channels.status())) {
        return named(absl::InvalidArgumentError(absl::StrCat(
            "per-channel ranges with method ",
            RangeMethodName(input.activation_range.method),
            " need per-channel histograms (CalibrationHeader."
            "channel_histograms): ", channels.status().message())));
      }
      if (!channels.ok()) return named(channels.status());
      result.channel_ranges = *std::move(channels);
    }
  }
  return absl::OkStatus();
}

// Whether the integer-only check applies: int8 codes, symmetric, one scale
// per output channel or per tensor, a set with held-back rows and stats.
bool WantsIntegerCheck(const TensorJob& input, const Working& work) {
  const Layout& layout = input.layout;
  if (input.calibration == nullptr || input.calibration->holdout_rows() == 0 ||
      !input.calibration->has_stats() || layout.kind != LayoutKind::kInt ||
      layout.bits != 8 || !layout.scheme.symmetric ||
      work.quantized.codes.empty() || layout.scheme.method.method == Method::kAwq) {
    return false;
  }
  return layout.scheme.granularity == Granularity::kPerChannel ||
         layout.scheme.granularity == Granularity::kPerTensor;
}

// Runs the tensor's int8 codes through the integer-only path on the set's
// held-back rows (kernels/w8a8.h). The activation range is the tensor's
// static range; with SmoothQuant's factors s the inputs are x / s, whose
// range is the min-max of the set's per-channel extremes divided by s.
absl::Status RunIntegerCheck(const TensorJob& input, const float* src,
                             const Working& work, TensorResult& out) {
  const CalibrationView& set = *input.calibration;
  CalibrationResult& result = *out.calibration;
  if (!result.activation_range.has_value()) return absl::OkStatus();
  auto named = [&](const absl::Status& s) {
    return absl::Status(s.code(),
                        absl::StrCat("tensor ", input.name, ": calibration set '",
                                     set.name(), "': W8A8 check: ", s.message()));
  };
  ActivationRange range = *result.activation_range;
  if (!work.channel_scales.empty()) {
    absl::StatusOr<ChannelStats> stats = set.accumulator().Stats();
    if (!stats.ok()) return named(stats.status());
    float lo = 0.0f;
    float hi = 0.0f;
    for (size_t j = 0; j < work.channel_scales.size(); ++j) {
      lo = std::min(lo, stats->min[j] / work.channel_scales[j]);
      hi = std::max(hi, stats->max[j] / work.channel_scales[j]);
    }
    range = Int8Range(lo, hi, result.range_options.symmetric);
  }
  absl::StatusOr<W8A8Weights> weights = W8A8Weights::From(work.quantized);
  if (!weights.ok()) return named(weights.status());
  W8A8Activations act =
      W8A8Activations::FromRange(range, result.range_options.symmetric);
  act.smooth = work.channel_scales;
  const int64_t m = set.holdout_rows();
  const Layout& layout = input.layout;
  absl::StatusOr<W8A8Report> report =
      W8A8Check(set.holdout().data(), m, src, layout.rows, layout.row_length,
                *weights, act, W8A8Options());
  if (!report.ok()) return named(report.status());
  CalibrationResult::IntegerCheck check;
  check.report = *std::move(report);
  check.rows = m;
  check.activation = range;
  result.w8a8 = std::move(check);
  return absl::OkStatus();
}

// What `method` needs of the tensor's calibration set: OK, or
// InvalidArgument naming the tensor, the method and what is missing.
absl::Status CheckMethodInput(const TensorJob& input) {
  const Method method = input.layout.scheme.method.method;
  if (method == Method::kRtn) return absl::OkStatus();
  const absl::string_view name = MethodName(method);
  if (input.calibration == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", input.name, ": method ", name,
        " needs a calibration set (TensorHeader.calibration) and none is "
        "named"));
  }
  const CalibrationView& set = *input.calibration;
  if (set.features() != input.layout.row_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", input.name, ": calibration set '", set.name(), "' has ",
        set.features(), " features, the tensor's rows have ",
        input.layout.row_length, " elements"));
  }
  if (set.gram().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", input.name, ": method ", name, " needs G = XᵀX and "
        "calibration set '", set.name(), "' has none (an IMPORTANCE set); "
        "send ACTIVATIONS or GRAM"));
  }
  if (method != Method::kGptq && !set.has_stats()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", input.name, ": method ", name, " needs per-channel "
        "activation statistics and calibration set '", set.name(),
        "' has none (a GRAM set); send ACTIVATIONS"));
  }
  return absl::OkStatus();
}

// GPTQ, AWQ or SmoothQuant of `src` on the tensor's calibration set (checked
// by CheckMethodInput): fills work.quantized, work.channel_scales (AWQ,
// SmoothQuant) and the weight-space metrics, and leaves W_hat in the
// original space (scales folded back) in `w_hat`.
absl::Status RunMethod(const TensorJob& input, const float* src,
                       absl::FunctionRef<absl::Status()> check_cancelled,
                       Working& work, TensorResult& out,
                       std::vector<float>& w_hat) {
  const Layout& layout = input.layout;
  const MethodOptions& m = layout.scheme.method;
  const CalibrationView& set = *input.calibration;
  const GramView gram = GramView::F64(set.gram(), set.features(), set.tokens());
  const auto n = static_cast<size_t>(layout.num_elements);
  const int64_t cols = layout.row_length;
  w_hat.resize(n);
  switch (m.method) {
    case Method::kRtn:
      return absl::InternalError("RunMethod called for rtn");
    case Method::kGptq: {
      if (const GgmlFormatTraits* block = GgmlFormatOf(layout.scheme);
          block != nullptr) {
        // Onto the block's grid fixed by ggml's own quantizer (gptq_ggml.h).
        GptqGgmlOptions options;
        options.damp_percent = m.damp_percent;
        options.block_size = m.block_size;
        options.act_order = m.act_order;
        options.measure_output_error = false;
        QUANTD_ASSIGN_OR_RETURN(
            GptqGgmlResult r,
            GptqGgmlQuantize(*block, src, layout.rows, cols, gram, options));
        if (r.bytes.size() != work.quantized.codes.size()) {
          return absl::InternalError("gptq returned blocks of the wrong size");
        }
        work.quantized.codes = std::move(r.bytes);
        QUANTD_RETURN_IF_ERROR(check_cancelled());
        QUANTD_ASSIGN_OR_RETURN(
            out.metrics,
            GgmlDequantizeAndMeasure(*block, work.quantized.codes.data(),
                                     layout.rows, cols, src, w_hat.data()));
        out.metrics.bits_per_weight = layout.BitsPerWeight();
        return absl::OkStatus();
      }
      GptqOptions options;
      options.damp_percent = m.damp_percent;
      options.block_size = m.block_size;
      options.act_order = m.act_order;
      options.static_groups = m.static_groups;
      options.measure_output_error = false;
      QUANTD_ASSIGN_OR_RETURN(GptqResult r,
                              GptqQuantize(src, layout, gram, options));
      if (r.quantized.layout.group_index != layout.group_index) {
        return absl::InternalError("gptq's group index differs from the layout");
      }
      work.quantized = std::move(r.quantized);
      QUANTD_RETURN_IF_ERROR(check_cancelled());
      out.metrics = DequantizeAndMeasure(work.quantized, src, w_hat.data());
      return absl::OkStatus();
    }
    case Method::kAwq: {
      QUANTD_ASSIGN_OR_RETURN(ChannelStats stats, set.accumulator().Stats());
      std::vector<float> mean_abs(stats.mean_abs.begin(), stats.mean_abs.end());
      AwqOptions options;
      options.n_grid = m.n_grid;
      options.clip = m.clip_search;
      options.fake_quant = true;
      QUANTD_ASSIGN_OR_RETURN(
          AwqResult r, AwqQuantize(src, layout, mean_abs, gram, options));
      work.quantized = std::move(r.quantized);
      work.channel_scales = std::move(r.scales);
      w_hat = std::move(r.fake_quant);
      break;
    }
    case Method::kSmoothQuant: {
      QUANTD_ASSIGN_OR_RETURN(ChannelStats stats, set.accumulator().Stats());
      std::vector<float> max_abs(static_cast<size_t>(cols));
      for (size_t j = 0; j < max_abs.size(); ++j) {
        max_abs[j] = std::max(std::abs(stats.min[j]), std::abs(stats.max[j]));
      }
      SmoothQuantOptions options;
      options.search_alpha = m.alpha == 0.0;
      if (!options.search_alpha) options.alpha = m.alpha;
      QUANTD_ASSIGN_OR_RETURN(
          SmoothQuantResult r,
          SmoothQuant(src, layout.rows, cols, max_abs, &gram, options));
      QUANTD_RETURN_IF_ERROR(check_cancelled());
      QUANTD_RETURN_IF_ERROR(Quantize(r.smoothed_weight.data(), work.quantized));
      Dequantize(work.quantized, w_hat.data());
      for (int64_t i = 0; i < layout.rows; ++i) {
        float* row = w_hat.data() + i * cols;
        for (int64_t j = 0; j < cols; ++j) {
          row[j] /= r.scales[static_cast<size_t>(j)];
        }
      }
      work.channel_scales = std::move(r.scales);
      break;
    }
  }
  if (w_hat.size() != n) {
    return absl::InternalError("method returned a fake-quant of the wrong size");
  }
  QUANTD_RETURN_IF_ERROR(check_cancelled());
  out.metrics = ComputeErrorMetrics(src, w_hat.data(), n);
  out.metrics.bits_per_weight = layout.BitsPerWeight();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TensorResult> QuantizeTensor(
    const TensorJob& job, const float* src,
    absl::FunctionRef<absl::Status()> check_cancelled) {
  const Layout& layout = job.layout;
  const auto n = static_cast<size_t>(layout.num_elements);

  TensorResult out;
  Working work;
  work.quantized = AllocateQuantized(layout);
  if (job.calibration != nullptr) {
    out.calibration.emplace();
    out.calibration->calibration = job.calibration->name();
    out.calibration->tokens = job.calibration->tokens();
  }
  std::vector<float> w_hat;
  if (absl::Status s = CheckMethodInput(job); !s.ok()) return s;
  if (layout.scheme.method.method != Method::kRtn) {
    absl::Status s = RunMethod(job, src, check_cancelled, work, out, w_hat);
    if (absl::IsCancelled(s)) return s;
    if (!s.ok()) return NameTensor(job.name, s);
  } else if (layout.IsBlockFormat()) {
    absl::Status s =
        RunBlockFormat(job, src, check_cancelled, work, out, w_hat);
    if (absl::IsCancelled(s)) return s;
    if (!s.ok()) return NameTensor(job.name, s);
  } else if (layout.kind != LayoutKind::kInt) {
    absl::Status s =
        RunOtherFormat(job, src, check_cancelled, work, out, w_hat);
    if (absl::IsCancelled(s)) return s;
    if (!s.ok()) return NameTensor(job.name, s);
  } else {
    absl::Status s =
        job.imported_scales.empty()
            ? Quantize(src, work.quantized)
            : QuantizeWithScales(src, job.imported_scales,
                                 job.imported_zero_points, work.quantized);
    if (!s.ok()) return NameTensor(job.name, s);
    QUANTD_RETURN_IF_ERROR(check_cancelled());
    // One pass: the dequantized values exist in full only when they are
    // sent or measured against a calibration set.
    if (job.output != OutputKind::kPacked || job.calibration != nullptr) {
      w_hat.resize(n);
    }
    out.metrics = DequantizeAndMeasure(work.quantized, src,
                                       w_hat.empty() ? nullptr : w_hat.data());
  }
  if (job.calibration != nullptr) {
    absl::Status s = MeasureWithCalibration(job, src, w_hat, *out.calibration);
    if (!s.ok()) return s;
    QUANTD_RETURN_IF_ERROR(check_cancelled());
    if (WantsIntegerCheck(job, work)) {
      s = RunIntegerCheck(job, src, work, out);
      if (!s.ok()) return s;
      QUANTD_RETURN_IF_ERROR(check_cancelled());
    }
  }
  if (job.output == OutputKind::kPacked) std::vector<float>().swap(w_hat);

  QuantizedTensor& q = work.quantized;
  out.layout = std::move(q.layout);
  out.parts[Part::kCodes] = PartBuffer::Adopt(std::move(q.codes));
  out.parts[Part::kScales] = PartBuffer::Adopt(std::move(q.scales));
  out.parts[Part::kZeroPoints] = PartBuffer::Adopt(std::move(q.zero_points));
  out.parts[Part::kGroupIndex] = PartBuffer::Adopt(std::move(q.group_index));
  out.parts[Part::kChannelScales] =
      PartBuffer::Adopt(std::move(work.channel_scales));
  out.parts[Part::kFakeQuant] = PartBuffer::Adopt(std::move(w_hat));
  return out;
}

int64_t WorkingSetBytes(const Layout& layout, DType dtype, OutputKind output,
                        bool calibration, int64_t holdout_rows) {
  const int64_t n = layout.num_elements;
  int64_t bytes = n * DTypeSize(dtype);  // received
  if (dtype != DType::kF32) bytes += 4 * n;  // f32 copy
  const bool other = layout.kind == LayoutKind::kFloat ||
                     layout.kind == LayoutKind::kCodebook ||
                     layout.kind == LayoutKind::kHqq;
  if (output != OutputKind::kPacked || layout.IsBlockFormat() || other ||
      calibration) {
    bytes += 4 * n;  // dequantized values
  }
  switch (layout.kind) {
    case LayoutKind::kInt:
      break;
    case LayoutKind::kGgmlBlock:
      bytes += GgmlWorkingSetBytes(layout);
      break;
    case LayoutKind::kFloat:
      bytes += FloatWorkingSetBytes(layout);
      break;
    case LayoutKind::kCodebook:
      bytes += CodebookWorkingSetBytes(layout);
      break;
    case LayoutKind::kHqq:
      bytes += HqqWorkingSetBytes(layout);
      break;
  }
  if (calibration) bytes += CalibrationWorkingSetBytes(layout);
  if (calibration && holdout_rows > 0 && !layout.IsBlockFormat() &&
      layout.bits == 8) {
    bytes += W8A8CheckWorkingSetBytes(layout, holdout_rows);
  }
  bytes += QuantizedWorkingSetBytes(layout);
  switch (layout.scheme.method.method) {
    case Method::kRtn:
      break;
    case Method::kGptq:
      bytes += GptqWorkingSetBytes(layout);
      break;
    case Method::kAwq:
      bytes += AwqWorkingSetBytes(layout);
      break;
    case Method::kSmoothQuant:
      bytes += SmoothQuantWorkingSetBytes(layout);
      break;
  }
  return bytes;
}

}  // namespace quantd

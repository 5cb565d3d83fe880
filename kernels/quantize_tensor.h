// One tensor through the kernels, whatever its layout's family: int
// formats, ggml block formats, the float, codebook and HQQ formats, with or
// without a method (GPTQ, AWQ, SmoothQuant) and a calibration set. The
// caller converts the tensor to f32; QuantizeTensor quantizes it with the
// layout's kernel, measures the round trip (and, with a calibration set, the
// output error, the activation range and the integer-only check) and
// returns the parts the layout implies (parts.h). WorkingSetBytes says how
// much memory that takes, summed from each family's own statement of what
// it allocates beside the tensor.
//
//   TensorJob job;
//   job.name = "blk.0.attn_q";
//   job.layout = *MakeLayout(*ParseScheme("q4_k"), {4096, 4096});
//   const int64_t bytes =
//       WorkingSetBytes(job.layout, DType::kF32, job.output);  // reserve
//   absl::StatusOr<TensorResult> r = QuantizeTensor(
//       job, w.data(), [&] { return cancelled ? absl::CancelledError("stop")
//                                             : absl::OkStatus(); });
//   // r->parts[Part::kCodes]: the Q4_K blocks; r->metrics: their error.
//
// Ownership: a TensorJob and a CalibrationView borrow what they point at
// (the caller keeps it alive for the call); a TensorResult owns its parts.
// Thread-safety: the functions are thread-safe; concurrent calls share
// nothing but the calibration set, which they only read.
#ifndef QUANTD_KERNELS_QUANTIZE_TENSOR_H_
#define QUANTD_KERNELS_QUANTIZE_TENSOR_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/calibration_stats.h"
#include "kernels/dtype.h"
#include "kernels/layout.h"
#include "kernels/metrics.h"
#include "kernels/output_error.h"
#include "kernels/parts.h"
#include "kernels/range_estimators.h"
#include "kernels/scheme.h"
#include "kernels/scheme_options.h"
#include "kernels/w8a8.h"

namespace quantd {

// A complete calibration set as QuantizeTensor reads it: the set's name
// (for error messages), its accumulator, full G = XᵀX (features², empty
// for an IMPORTANCE set), importance weights (Σx²/tokens per feature) and
// held-back rows (holdout_rows() x features(), f32, row-major). Borrows
// all but the name.
class CalibrationView {
 public:
  CalibrationView(std::string name, int64_t features,
                  const CalibrationAccumulator& accumulator,
                  absl::Span<const double> gram,
                  absl::Span<const float> importance,
                  absl::Span<const float> holdout)
      : name_(std::move(name)),
        features_(features),
        accumulator_(&accumulator),
        gram_(gram),
        importance_(importance),
        holdout_(holdout) {}

  const std::string& name() const { return name_; }
  int64_t features() const { return features_; }
  const CalibrationAccumulator& accumulator() const { return *accumulator_; }
  int64_t tokens() const { return accumulator_->tokens(); }
  absl::Span<const double> gram() const { return gram_; }
  absl::Span<const float> importance() const { return importance_; }
  // True for ACTIVATIONS sets: min / max and histograms (activation ranges).
  bool has_stats() const { return accumulator_->has_stats(); }
  absl::Span<const float> holdout() const { return holdout_; }
  int64_t holdout_rows() const {
    return static_cast<int64_t>(holdout_.size()) / features_;
  }

 private:
  std::string name_;
  int64_t features_ = 0;
  const CalibrationAccumulator* accumulator_;
  absl::Span<const double> gram_;
  absl::Span<const float> importance_;
  absl::Span<const float> holdout_;
};

// One tensor to quantize.
struct TensorJob {
  std::string name;  // every error names it
  Layout layout;
  OutputKind output = OutputKind::kPacked;
  // Block formats: empty, or layout.row_length importance weights (finite,
  // >= 0; the caller checks) passed to GgmlQuantize.
  absl::Span<const float> importance;
  // The set whose activations are this tensor's input, or null.
  const CalibrationView* calibration = nullptr;
  // Estimator of the set's static int8 activation range.
  RangeOptions activation_range;
  // QAT import: when not empty, the int layout's codes use these instead of
  // computed scales (QuantizeWithScales; the caller checked their sizes).
  absl::Span<const float> imported_scales;
  absl::Span<const uint8_t> imported_zero_points;
};

// What a calibration set tells about a quantized tensor.
struct CalibrationResult {
  std::string calibration;  // the set
  int64_t tokens = 0;
  std::optional<OutputError> output_error;          // sets with G
  std::optional<ActivationRange> activation_range;  // ACTIVATIONS sets
  RangeOptions range_options;                       // how it was estimated
  // With range_options.per_channel: one range per input channel.
  std::vector<ActivationRange> channel_ranges;
  bool importance_from_calibration = false;
  // The integer-only check on the set's held-back rows (int8 schemes with
  // symmetric per-channel or per-tensor codes; see W8A8Check in the proto).
  struct IntegerCheck {
    W8A8Report report;           // report.gemm: oneDNN's implementation
    int64_t rows = 0;
    ActivationRange activation;  // the static range the check used
  };
  std::optional<IntegerCheck> w8a8;
};

// What QuantizeTensor returns.
struct TensorResult {
  // The layout of the parts (GPTQ act_order with dynamic groups: with the
  // group index).
  Layout layout;
  // Every part the layout implies (kernels/parts.h), straight from the
  // kernels' result buffers: codes, scales, zero points, group index, the
  // float / codebook / HQQ extra parts, AWQ's / SmoothQuant's channel
  // scales s (one f32 per input column, > 0: the codes quantize W diag(s),
  // so the layer's input must be divided by s) and, unless `output` is
  // kPacked, the fake-quant values. Parts the layout does not have are
  // empty; the caller checks each size against PartBytes.
  PerPart<PartBuffer> parts;
  ErrorMetrics metrics;
  float tensor_scale = 0.0f;  // NVFP4's g; 0 otherwise
  float scale_offset = 0.0f;  // NF4 dq's offset; 0 otherwise
  std::optional<CalibrationResult> calibration;  // with a calibration set
};

// Quantizes `src` (job.layout.num_elements finite f32 values) with
// job.layout's family: int formats through Quantize (or QuantizeWithScales
// with imported scales) and DequantizeAndMeasure (quantize.h); ggml block
// formats through GgmlQuantize with the job's importance weights (or the
// set's when the format uses them and the job has none) and
// GgmlDequantizeAndMeasure, for which the codes are the ggml bytes and
// there are no scales or zero points; the float, codebook and HQQ formats
// through their kernels (float_formats.h, nonuniform.h, hqq.h) and
// dequantizers, their metrics ComputeErrorMetrics of that round trip with
// the kernel's own bits per weight. A method other than RTN
// (Scheme::method) runs on the job's calibration set: GPTQ needs G (an
// ACTIVATIONS or GRAM set), AWQ and SmoothQuant also the per-channel
// statistics (an ACTIVATIONS set); without them, INVALID_ARGUMENT naming
// the tensor and what is missing. The weight-space metrics and the
// fake-quant values are those of W_hat in the original space (AWQ,
// SmoothQuant: the scales folded back); GPTQ act_order with dynamic groups
// returns the group index (Layout::group_index). With a calibration set: the
// output error from the set's G (sets with G), the set's activation range
// (ACTIVATIONS sets) and the integer-only check of int8 codes on the set's
// held-back rows; errors name the tensor and the set.
//
// `check_cancelled` is called between steps: it returns OK to go on or
// CANCELLED to stop, which is returned as is. Other errors name the tensor
// ("tensor <name>: ...");
// UNIMPLEMENTED for importance weights with a block format whose importance
// path the kernels lack (GgmlQuantize's contract).
absl::StatusOr<TensorResult> QuantizeTensor(
    const TensorJob& job, const float* src,
    absl::FunctionRef<absl::Status()> check_cancelled);

// Bytes a tensor holds from header to last response: received bytes, an f32
// copy when the input is F16/BF16, the dequantized (fake-quant) values when
// `output` asks for them, codes, scales and zero points
// (QuantizedWorkingSetBytes). A block format always dequantizes the whole
// tensor to measure it, and may hold row_length importance weights
// (GgmlWorkingSetBytes). The float, codebook and HQQ formats also always
// dequantize, and hold the kernel's result beside the preallocated parts,
// their extra parts and one byte per element of unpacked codes
// (FloatWorkingSetBytes, CodebookWorkingSetBytes, HqqWorkingSetBytes). With
// a calibration set (`calibration`), also what measuring the output error
// takes: the dequantized values, G rounded to f32 and two GEMM panels
// (CalibrationWorkingSetBytes). Plus the working set of the scheme's method
// (GPTQ: H and its factor in f64, an f32 copy of W; AWQ, SmoothQuant: G in
// f32, W diag(s) and a trial W_hat: GptqWorkingSetBytes,
// AwqWorkingSetBytes, SmoothQuantWorkingSetBytes). With `holdout_rows` held
// back by the set, an int8 tensor's integer-only check also holds those
// rows' codes and three outputs (f32 reference, integer-only,
// weights-only) and their s32 accumulators (W8A8CheckWorkingSetBytes).
// What the server's MemoryBudget reserves per tensor.
int64_t WorkingSetBytes(const Layout& layout, DType dtype, OutputKind output,
                        bool calibration = false, int64_t holdout_rows = 0);

}  // namespace quantd

#endif  // QUANTD_KERNELS_QUANTIZE_TENSOR_H_

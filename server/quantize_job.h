// One tensor's work, as a worker runs it: convert the received bytes to f32
// (rejecting NaN/Inf), quantize with the tensor's Layout, dequantize, measure
// the error and checksum each output part. No gRPC here: the reactor hands a
// TensorInput in and streams the TensorOutput back.
//
// The job names no family: QuantizeTensor (kernels/quantize_tensor.h)
// quantizes and measures the tensor for any layout, with or without a method
// and a calibration set; the job converts, checks cancellation between
// steps, hands the tensor and its set (as a CalibrationView) to it, and
// checks each part against the part table (kernels/parts.h) and checksums
// it. What the tensor's memory reservation covers is WorkingSetBytes (same
// header).
//
// Thread-compatible: a job's input and output belong to the worker that
// runs it.
#ifndef QUANTD_SERVER_QUANTIZE_JOB_H_
#define QUANTD_SERVER_QUANTIZE_JOB_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"
#include "kernels/layout.h"
#include "kernels/metrics.h"
#include "kernels/output_error.h"
#include "kernels/parts.h"
#include "kernels/quantize_tensor.h"
#include "kernels/scheme.h"
#include "server/calibration_set.h"

namespace quantd {

struct TensorInput {
  std::string name;
  DType dtype = DType::kF32;
  Layout layout;
  OutputKind output = OutputKind::kPacked;
  // The received little-endian bytes, in storage aligned for f32.
  std::vector<float> storage;
  int64_t bytes = 0;  // valid bytes in storage
  // Block formats: empty, or layout.row_length importance weights (finite,
  // >= 0; the assembler checks) passed to GgmlQuantize.
  std::vector<float> importance;
  // TensorHeader.calibration: the set whose activations are this tensor's
  // input (empty: none), and that set once complete (the reactor attaches
  // it before the job is queued; the job only reads it). Methods that need
  // X's statistics (G, importance, ranges) read calibration->accumulator().
  std::string calibration_name;
  std::shared_ptr<const CalibrationSet> calibration;
  // Estimator of the set's static int8 activation range.
  RangeOptions activation_range;
  // QAT import (TensorHeader.scales / zero_points, checked by the
  // assembler): when not empty, the int layout's codes use these instead of
  // computed scales (QuantizeWithScales).
  std::vector<float> imported_scales;
  std::vector<uint8_t> imported_zero_points;
};

struct TensorOutput {
  std::string name;
  Layout layout;
  // What is sent, part by part (kernels/parts.h): every part the layout and
  // the output kind imply, sized as PartBytes says, straight from the
  // kernels' result buffers; empty for the others. With AWQ and
  // SmoothQuant, Part::kChannelScales holds s, one f32 per input column
  // (> 0): the codes quantize W diag(s), so the layer's input must be
  // divided by s.
  PerPart<PartBuffer> parts;
  PerPart<uint32_t> crc32c;  // of each part's bytes (0 for an empty one)
  ErrorMetrics metrics;
  int64_t bytes_in = 0;
  int64_t bytes_out = 0;  // the sum of the parts' sizes
  double compute_seconds = 0;
  float tensor_scale = 0.0f;  // NVFP4's g; 0 otherwise
  float scale_offset = 0.0f;  // NF4 dq's offset; 0 otherwise
  std::optional<CalibrationResult> calibration;  // with a calibration set
};

// Runs the job. `cancelled` is checked between steps: if set, CANCELLED.
// A method other than RTN (Scheme::method) runs on the tensor's calibration
// set: GPTQ needs G (an ACTIVATIONS or GRAM set), AWQ and SmoothQuant also
// the per-channel statistics (an ACTIVATIONS set); without them,
// INVALID_ARGUMENT naming the tensor and what is missing. GPTQ act_order
// with dynamic groups returns the group index (Layout::group_index). The
// weight-space metrics and the fake-quant values
// are those of W_hat in the original space (AWQ, SmoothQuant: the scales
// folded back).
// INVALID_ARGUMENT "tensor <name>: element <i> is NaN" for non-finite input.
// UNIMPLEMENTED naming the tensor for importance weights with a block
// format whose importance path the kernels lack (GgmlQuantize's contract).
// With input.calibration: the output error from the set's G (sets with G),
// the set's activation range (ACTIVATIONS sets), and for a block format
// that uses importance weights and got none in its header, the set's
// importance weights; errors name the tensor and the set.
// Consumes `input.storage`.
absl::StatusOr<TensorOutput> RunQuantizeJob(TensorInput& input,
                                            const std::atomic<bool>& cancelled);

}  // namespace quantd

#endif  // QUANTD_SERVER_QUANTIZE_JOB_H_

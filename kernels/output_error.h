// The output-space error of a quantized weight from the Gram matrix G = XᵀX
// of its calibration inputs (calibration_stats.h), without X:
// ‖XWᵀ − XŴᵀ‖²_F = tr(ΔW G ΔWᵀ).
//
//   QUANTD_ASSIGN_OR_RETURN(OutputError e,
//       ComputeOutputError(w, w_hat, out_features, in_features, g));
//
// Thread-safety: reentrant. oneDNN runs on the caller's thread by default
// (`gemm_threads` = 1).
#ifndef QUANTD_KERNELS_OUTPUT_ERROR_H_
#define QUANTD_KERNELS_OUTPUT_ERROR_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/layout.h"

namespace quantd {

struct OutputError {
  double error_sq = 0;        // tr(ΔW G ΔWᵀ) = ‖XWᵀ − XŴᵀ‖²_F
  double signal_sq = 0;       // tr(W G Wᵀ) = ‖XWᵀ‖²_F
  double relative_error = 0;  // sqrt(error_sq / signal_sq); 0 if both are 0
  // 10·log10(signal_sq / error_sq); +inf when error_sq is 0.
  double sqnr_db = 0;
};

// W and Ŵ are out_features x in_features f32 row-major; `gram` is G
// (in_features², row-major, symmetric). ΔW·G and W·G are f32 oneDNN GEMMs
// (G rounded to f32) and the row dots are summed in f64, so each trace has
// a relative error of about in_features·2^-24·(|w|ᵀ|G||w|)/(wᵀGw) per row;
// each row's quadratic form is clamped at 0 (G is positive semi-definite).
// InvalidArgument for bad sizes or non-finite values; Internal if oneDNN
// fails. `gemm_threads` as in CalibrationOptions.
absl::StatusOr<OutputError> ComputeOutputError(
    const float* w, const float* w_hat, int64_t out_features,
    int64_t in_features, absl::Span<const double> gram, int gemm_threads = 1);

// Bytes measuring a tensor of `layout` against a calibration set takes
// beside its dequantized values: ComputeOutputError's G in f32 and two
// panels of up to 256 rows, and the range estimator's copies of the
// per-channel statistics. Part of WorkingSetBytes (quantize_tensor.h).
int64_t CalibrationWorkingSetBytes(const Layout& layout);

}  // namespace quantd

#endif  // QUANTD_KERNELS_OUTPUT_ERROR_H_

// Error metrics between a tensor w and its reconstruction w_hat, accumulated
// in double precision.
#ifndef QUANTD_KERNELS_METRICS_H_
#define QUANTD_KERNELS_METRICS_H_

#include <cstddef>

namespace quantd {

struct ErrorMetrics {
  double mse = 0;
  double rmse = 0;
  double max_abs_error = 0;
  // 20*log10(||w|| / ||w - w_hat||); +infinity when the error is zero.
  double sqnr_db = 0;
  // <w, w_hat> / (||w|| ||w_hat||); 1 when both norms are zero, 0 when one is.
  double cosine_similarity = 0;
  double bits_per_weight = 0;  // filled by the caller from the Layout
};

// Metrics over `n` elements. Deterministic: the summation order is fixed
// (4096-element blocks summed in order in double, then the block sums in
// order), independent of the vector path.
ErrorMetrics ComputeErrorMetrics(const float* w, const float* w_hat, size_t n);

}  // namespace quantd

#endif  // QUANTD_KERNELS_METRICS_H_

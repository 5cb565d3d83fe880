// Internal: the pieces of ComputeErrorMetrics, shared with the fused
// dequantize-and-measure paths (quantize.cc and the per-ISA files) so that
// every path finishes the metrics with the same formulas.
#ifndef QUANTD_KERNELS_INTERNAL_METRICS_INTERNAL_H_
#define QUANTD_KERNELS_INTERNAL_METRICS_INTERNAL_H_

#include <cstddef>

#include "kernels/metrics.h"

namespace quantd::internal {

// Running sums over a tensor, in double.
struct MetricSums {
  double err2 = 0;     // sum (w - w_hat)^2
  double w2 = 0;       // sum w^2
  double what2 = 0;    // sum w_hat^2
  double dot = 0;      // sum w * w_hat
  double max_abs = 0;  // max |w - w_hat|
};

// The elements per block of the reference summation order.
inline constexpr size_t kMetricsBlock = 4096;

// Sums one block of `n` (<= kMetricsBlock) elements in index order in double
// and adds the block sums to `sums`: exactly ComputeErrorMetrics' order when
// called on consecutive kMetricsBlock-element blocks starting at element 0.
void AccumulateBlockReference(const float* w, const float* w_hat, size_t n,
                              MetricSums& sums);

// mse, rmse, max_abs_error, sqnr_db and cosine_similarity of `n` elements
// from their sums (bits_per_weight is left 0), per the definitions in
// metrics.h.
ErrorMetrics FinishMetrics(const MetricSums& sums, size_t n);

}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_METRICS_INTERNAL_H_

#include "kernels/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "kernels/internal/metrics_internal.h"

namespace quantd {
namespace internal {

void AccumulateBlockReference(const float* w, const float* w_hat, size_t n,
                              MetricSums& sums) {
  double block_err2 = 0, block_w2 = 0, block_what2 = 0, block_dot = 0;
  double max_abs = sums.max_abs;
  for (size_t i = 0; i < n; ++i) {
    const double x = w[i];
    const double y = w_hat[i];
    const double d = x - y;
    block_err2 += d * d;
    block_w2 += x * x;
    block_what2 += y * y;
    block_dot += x * y;
    max_abs = std::max(max_abs, std::fabs(d));
  }
  sums.err2 += block_err2;
  sums.w2 += block_w2;
  sums.what2 += block_what2;
  sums.dot += block_dot;
  sums.max_abs = max_abs;
}

ErrorMetrics FinishMetrics(const MetricSums& sums, size_t n) {
  ErrorMetrics m;
  m.mse = n == 0 ? 0.0 : sums.err2 / static_cast<double>(n);
  m.rmse = std::sqrt(m.mse);
  m.max_abs_error = sums.max_abs;
  if (sums.err2 == 0) {
    m.sqnr_db = std::numeric_limits<double>::infinity();
  } else {
    // 20*log10(||w|| / ||w - w_hat||) == 10*log10(w2 / err2).
    m.sqnr_db = 10.0 * std::log10(sums.w2 / sums.err2);
  }
  if (sums.w2 == 0 && sums.what2 == 0) {
    m.cosine_similarity = 1.0;
  } else if (sums.w2 == 0 || sums.what2 == 0) {
    m.cosine_similarity = 0.0;
  } else {
    m.cosine_similarity = sums.dot / (std::sqrt(sums.w2) * std::sqrt(sums.what2));
  }
  return m;
}

}  // namespace internal

ErrorMetrics ComputeErrorMetrics(const float* w, const float* w_hat,
                                 size_t n) {
  // Fixed summation order: each block of kMetricsBlock elements is summed in
  // double, in index order, then block sums are added in block order. The
  // result depends only on the data, never on threads or vector width.
  internal::MetricSums sums;
  for (size_t b = 0; b < n; b += internal::kMetricsBlock) {
    const size_t end = std::min(n, b + internal::kMetricsBlock);
    internal::AccumulateBlockReference(w + b, w_hat + b, end - b, sums);
  }
  return internal::FinishMetrics(sums, n);
}

}  // namespace quantd

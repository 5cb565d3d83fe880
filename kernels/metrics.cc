#include "kernels/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

namespace quantd {

ErrorMetrics ComputeErrorMetrics(const float* w, const float* w_hat,
                                 size_t n) {
  // Fixed summation order: each block of kBlock elements is summed in
  // double, in index order, then block sums are added in block order. The
  // result depends only on the data, never on threads or vector width.
  constexpr size_t kBlock = 4096;
  double err2 = 0, w2 = 0, what2 = 0, dot = 0, max_abs = 0;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t end = std::min(n, b + kBlock);
    double block_err2 = 0, block_w2 = 0, block_what2 = 0, block_dot = 0;
    for (size_t i = b; i < end; ++i) {
      const double x = w[i];
      const double y = w_hat[i];
      const double d = x - y;
      block_err2 += d * d;
      block_w2 += x * x;
      block_what2 += y * y;
      block_dot += x * y;
      max_abs = std::max(max_abs, std::fabs(d));
    }
    err2 += block_err2;
    w2 += block_w2;
    what2 += block_what2;
    dot += block_dot;
  }
  ErrorMetrics m;
  m.mse = n == 0 ? 0.0 : err2 / static_cast<double>(n);
  m.rmse = std::sqrt(m.mse);
  m.max_abs_error = max_abs;
  if (err2 == 0) {
    m.sqnr_db = std::numeric_limits<double>::infinity();
  } else {
    // 20*log10(||w|| / ||w - w_hat||) == 10*log10(w2 / err2).
    m.sqnr_db = 10.0 * std::log10(w2 / err2);
  }
  if (w2 == 0 && what2 == 0) {
    m.cosine_similarity = 1.0;
  } else if (w2 == 0 || what2 == 0) {
    m.cosine_similarity = 0.0;
  } else {
    m.cosine_similarity = dot / (std::sqrt(w2) * std::sqrt(what2));
  }
  return m;
}

}  // namespace quantd

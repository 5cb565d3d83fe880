#include "kernels/internal/linalg_gram.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/internal/linalg.h"

namespace quantd {
namespace internal {

std::vector<float> DenseGramF32(const GramView& gram) {
  const size_t n = static_cast<size_t>(gram.features * gram.features);
  std::vector<float> g(n);
  if (gram.f64.empty()) {
    std::copy(gram.f32.begin(), gram.f32.begin() + static_cast<long>(n),
              g.begin());
  } else {
    for (size_t i = 0; i < n; ++i) g[i] = static_cast<float>(gram.f64[i]);
  }
  return g;
}

absl::Status CheckFinite(const float* x, int64_t n, absl::string_view what) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " has a non-finite value ", x[i], " at index ", i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> TraceQuadraticChunked(const float* d, int64_t rows,
                                             int64_t n, const float* g) {
  constexpr int64_t kRows = 256;
  const int64_t chunk = std::min(kRows, rows);
  std::vector<float> scratch(static_cast<size_t>(chunk * n));
  std::vector<double> per_row(static_cast<size_t>(chunk));
  double sum = 0.0;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t m = std::min(kRows, rows - r0);
    QUANTD_RETURN_IF_ERROR(QuadraticFormPerRow(d + r0 * n, n, m, n, g, n,
                                               scratch.data(),
                                               per_row.data()));
    for (int64_t r = 0; r < m; ++r) sum += per_row[static_cast<size_t>(r)];
  }
  return sum;
}

double RelativeFromTraces(double num, double den) {
  num = std::max(num, 0.0);
  if (den <= 0.0) {
    return num <= 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  }
  return std::sqrt(num / den);
}

}  // namespace internal
}  // namespace quantd

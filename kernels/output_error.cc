#include "kernels/output_error.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/internal/calibration_internal.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/linalg.h"

namespace quantd {
namespace {

// Output rows per GEMM in ComputeOutputError (bounds its scratch).
constexpr int64_t kOutputPanel = 256;

}  // namespace

absl::StatusOr<OutputError> ComputeOutputError(
    const float* w, const float* w_hat, int64_t out_features,
    int64_t in_features, absl::Span<const double> gram, int gemm_threads) {
  if (out_features < 1 || in_features < 1 ||
      in_features > (int64_t{1} << 24) ||
      gram.size() != static_cast<size_t>(in_features * in_features)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output error needs W of ", out_features, "x", in_features,
        " (both >= 1) and G of in_features² values, got ", gram.size()));
  }
  const int64_t n = out_features * in_features;
  if (const int64_t bad = internal::FirstNonFinite(w, n); bad >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("W element ", bad, " is not finite"));
  }
  if (const int64_t bad = internal::FirstNonFinite(w_hat, n); bad >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantized W element ", bad, " is not finite"));
  }
  const size_t in = static_cast<size_t>(in_features);
  std::vector<float> g(gram.size());
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(gram[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("G element ", i, " is not finite"));
    }
    g[i] = static_cast<float>(gram[i]);
  }
  const int64_t panel = std::min(kOutputPanel, out_features);
  std::vector<float> d(static_cast<size_t>(panel) * in);
  std::vector<float> y(d.size());
  OutputError e;
  internal::ScopedOmpThreads omp_threads(gemm_threads);
  // Σ_r max(0, a_r G a_rᵀ) over the rows a_r of `a`.
  auto quadratic = [&](const float* a, int64_t rows) -> absl::StatusOr<double> {
    absl::Status s = internal::Sgemm(false, false, rows, in_features,
                                     in_features, 1.0f, a, in_features,
                                     g.data(), in_features, 0.0f, y.data(),
                                     in_features);
    if (!s.ok()) return s;
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* ar = a + r * in_features;
      const float* yr = y.data() + r * in_features;
      double dot = 0;
      for (size_t c = 0; c < in; ++c) {
        dot += static_cast<double>(ar[c]) * static_cast<double>(yr[c]);
      }
      total += std::max(dot, 0.0);
    }
    return total;
  };
  for (int64_t r0 = 0; r0 < out_features; r0 += panel) {
    const int64_t rows = std::min(panel, out_features - r0);
    const size_t offset = static_cast<size_t>(r0) * in;
    const size_t count = static_cast<size_t>(rows) * in;
    for (size_t i = 0; i < count; ++i) {
      d[i] = w[offset + i] - w_hat[offset + i];
    }
    absl::StatusOr<double> err = quadratic(d.data(), rows);
    if (!err.ok()) return err.status();
    absl::StatusOr<double> sig = quadratic(w + offset, rows);
    if (!sig.ok()) return sig.status();
    e.error_sq += *err;
    e.signal_sq += *sig;
  }
  if (e.error_sq == 0.0) {
    e.relative_error = 0.0;
    e.sqnr_db = std::numeric_limits<double>::infinity();
  } else {
    e.relative_error = e.signal_sq > 0.0
                           ? std::sqrt(e.error_sq / e.signal_sq)
                           : std::numeric_limits<double>::infinity();
    e.sqnr_db = 10.0 * std::log10(e.signal_sq / e.error_sq);
  }
  return e;
}

int64_t CalibrationWorkingSetBytes(const Layout& layout) {
  // ComputeOutputError: G in f32, two panels of up to 256 rows; the
  // range estimator's copies of the per-channel stats.
  const int64_t in = layout.row_length;
  return 4 * in * in + 2 * 4 * std::min<int64_t>(256, layout.rows) * in +
         32 * in;
}

}  // namespace quantd

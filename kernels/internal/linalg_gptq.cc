#include "kernels/internal/linalg_gptq.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/internal/linalg.h"
#include "kernels/internal/linalg_gram.h"

namespace quantd {
namespace internal {

absl::Status CheckGptqInputs(const float* w, int64_t rows, int64_t cols,
                             const GramView& gram, double damp_percent,
                             int64_t block_size) {
  QUANTD_RETURN_IF_ERROR(CheckFinite(w, rows * cols, "weight"));
  QUANTD_RETURN_IF_ERROR(ValidateGram(gram, cols));
  if (!(damp_percent >= 0.0) || !std::isfinite(damp_percent)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "damp_percent is ", damp_percent, ", must be finite and >= 0"));
  }
  if (block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size is ", block_size, ", must be >= 1"));
  }
  if (cols > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError("too many input features");
  }
  return absl::OkStatus();
}

absl::StatusOr<GptqHessian> GptqInverseHessianFactor(const GramView& gram,
                                                     double damp_percent,
                                                     bool act_order) {
  const int64_t cols = gram.features;
  const auto sz = [](int64_t n) { return static_cast<size_t>(n); };
  GptqHessian out;
  std::vector<float>& h = out.hinv;
  h.resize(sz(cols * cols));
  const double h_factor = 2.0 / static_cast<double>(gram.tokens);
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      h[sz(i * cols + j)] = static_cast<float>(h_factor * gram.at(i, j));
    }
  }
  out.dead.assign(sz(cols), 0);
  for (int64_t c = 0; c < cols; ++c) {
    if (gram.at(c, c) == 0.0) {
      ++out.dead_columns;
      out.dead[sz(c)] = 1;
      h[sz(c * cols + c)] = 1.0f;
    }
  }
  out.perm.resize(sz(cols));
  std::iota(out.perm.begin(), out.perm.end(), 0);
  if (act_order) {
    std::stable_sort(out.perm.begin(), out.perm.end(),
                     [&](int32_t a, int32_t b) {
                       return h[sz(a * cols + a)] > h[sz(b * cols + b)];
                     });
    std::vector<float> hp(sz(cols * cols));
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        hp[sz(i * cols + j)] =
            h[sz(out.perm[sz(i)] * cols + out.perm[sz(j)])];
      }
    }
    h.swap(hp);
  }
  double diag_sum = 0.0;
  for (int64_t c = 0; c < cols; ++c) diag_sum += h[sz(c * cols + c)];
  const float damp = static_cast<float>(damp_percent * diag_sum /
                                        static_cast<double>(cols));
  for (int64_t c = 0; c < cols; ++c) h[sz(c * cols + c)] += damp;
  QUANTD_RETURN_IF_ERROR(UpperCholeskyOfInverse(h.data(), cols));
  return out;
}

}  // namespace internal
}  // namespace quantd

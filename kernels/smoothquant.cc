#include "kernels/smoothquant.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/internal/linalg_gram.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

size_t Sz(int64_t n) { return static_cast<size_t>(n); }

absl::Status CheckInputs(const float* w, int64_t rows, int64_t cols,
                         absl::Span<const float> act_max_abs) {
  if (rows < 1 || cols < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight shape ", rows, "x", cols, " is empty"));
  }
  QUANTD_RETURN_IF_ERROR(internal::CheckFinite(w, rows * cols, "weight"));
  if (static_cast<int64_t>(act_max_abs.size()) != cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "act_max_abs has ", act_max_abs.size(), " values, expected ", cols,
        " (one per input feature)"));
  }
  for (size_t j = 0; j < act_max_abs.size(); ++j) {
    if (!(act_max_abs[j] >= 0.0f) || !std::isfinite(act_max_abs[j])) {
      return absl::InvalidArgumentError(
          absl::StrCat("act_max_abs[", j, "] is ", act_max_abs[j],
                       ", must be finite and >= 0"));
    }
  }
  return absl::OkStatus();
}

void Scales(const float* w, int64_t rows, int64_t cols,
            absl::Span<const float> act_max_abs, float alpha, float* s) {
  std::vector<float> w_max(Sz(cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      w_max[Sz(j)] = std::max(w_max[Sz(j)], std::fabs(w[r * cols + j]));
    }
  }
  for (int64_t j = 0; j < cols; ++j) {
    const float m = std::max(w_max[Sz(j)], 1e-5f);
    s[j] = std::max(std::pow(act_max_abs[Sz(j)], alpha) /
                        std::pow(m, 1.0f - alpha),
                    1e-5f);
  }
}

// EstimateW8A8Error without the input checks; `g` is G in f32.
absl::StatusOr<double> Estimate(const float* w, int64_t rows, int64_t cols,
                                const float* s,
                                absl::Span<const float> act_max_abs,
                                const std::vector<float>& g, int64_t tokens,
                                double signal) {
  std::vector<float> ws(Sz(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      ws[Sz(r * cols + j)] = w[r * cols + j] * s[j];
    }
  }
  Scheme scheme;  // int8, symmetric, per channel
  QUANTD_ASSIGN_OR_RETURN(const Layout layout, MakeLayout(scheme, {rows, cols}));
  QuantizedTensor q = AllocateQuantized(layout);
  QUANTD_RETURN_IF_ERROR(Quantize(ws.data(), q));
  std::vector<float> w_hat(Sz(rows * cols));
  Dequantize(q, w_hat.data());
  // Activation noise per channel, times the column energy of W_hat'.
  double x_max = 0.0;
  for (int64_t j = 0; j < cols; ++j) {
    x_max = std::max(x_max, static_cast<double>(act_max_abs[Sz(j)]) / s[j]);
  }
  const double step = x_max / 127.0;
  const double n = static_cast<double>(tokens);
  double act_noise = 0.0;
  for (int64_t j = 0; j < cols; ++j) {
    const double mean_sq = static_cast<double>(g[Sz(j * cols + j)]) / n /
                           (static_cast<double>(s[j]) * s[j]);
    const double v = std::min(step * step / 12.0, mean_sq);
    double col = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      const double x = w_hat[Sz(r * cols + j)];
      col += x * x;
    }
    act_noise += n * v * col;
  }
  // Weight error in the original basis.
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      ws[Sz(r * cols + j)] = w[r * cols + j] - w_hat[Sz(r * cols + j)] / s[j];
    }
  }
  QUANTD_ASSIGN_OR_RETURN(
      const double weight_err,
      internal::TraceQuadraticChunked(ws.data(), rows, cols, g.data()));
  return internal::RelativeFromTraces(weight_err + act_noise, signal);
}

}  // namespace

absl::StatusOr<double> EstimateW8A8Error(const float* w, int64_t rows,
                                         int64_t cols,
                                         absl::Span<const float> scales,
                                         absl::Span<const float> act_max_abs,
                                         const GramView& gram) {
  QUANTD_RETURN_IF_ERROR(CheckInputs(w, rows, cols, act_max_abs));
  QUANTD_RETURN_IF_ERROR(ValidateGram(gram, cols));
  if (static_cast<int64_t>(scales.size()) != cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scales has ", scales.size(), " values, expected ", cols));
  }
  for (size_t j = 0; j < scales.size(); ++j) {
    if (!(scales[j] > 0.0f) || !std::isfinite(scales[j])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "scales[", j, "] is ", scales[j], ", must be finite and > 0"));
    }
  }
  const std::vector<float> g = internal::DenseGramF32(gram);
  QUANTD_ASSIGN_OR_RETURN(
      const double signal,
      internal::TraceQuadraticChunked(w, rows, cols, g.data()));
  return Estimate(w, rows, cols, scales.data(), act_max_abs, g, gram.tokens,
                  signal);
}

absl::StatusOr<SmoothQuantResult> SmoothQuant(
    const float* w, int64_t rows, int64_t cols,
    absl::Span<const float> act_max_abs, const GramView* gram,
    const SmoothQuantOptions& options) {
  QUANTD_RETURN_IF_ERROR(CheckInputs(w, rows, cols, act_max_abs));
  if (!(options.alpha >= 0.0 && options.alpha <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("alpha is ", options.alpha, ", must be in [0, 1]"));
  }
  if (options.n_grid < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_grid is ", options.n_grid, ", must be >= 1"));
  }
  if (options.search_alpha && gram == nullptr) {
    return absl::InvalidArgumentError(
        "search_alpha needs G (the calibration Gram matrix)");
  }
  SmoothQuantResult result;
  result.scales.resize(Sz(cols));
  result.estimated_error = std::numeric_limits<double>::quiet_NaN();
  std::vector<float> g;
  double signal = 0.0;
  if (gram != nullptr) {
    QUANTD_RETURN_IF_ERROR(ValidateGram(*gram, cols));
    g = internal::DenseGramF32(*gram);
    QUANTD_ASSIGN_OR_RETURN(
        signal, internal::TraceQuadraticChunked(w, rows, cols, g.data()));
  }
  if (options.search_alpha) {
    std::vector<float> s(Sz(cols));
    double best = std::numeric_limits<double>::infinity();
    for (int i = 0; i <= options.n_grid; ++i) {
      const float alpha =
          static_cast<float>(i) / static_cast<float>(options.n_grid);
      Scales(w, rows, cols, act_max_abs, alpha, s.data());
      QUANTD_ASSIGN_OR_RETURN(
          const double e, Estimate(w, rows, cols, s.data(), act_max_abs, g,
                                   gram->tokens, signal));
      result.alpha_errors.push_back(e);
      if (e < best) {
        best = e;
        result.alpha = alpha;
        result.scales = s;
        result.estimated_error = e;
      }
    }
  } else {
    result.alpha = options.alpha;
    Scales(w, rows, cols, act_max_abs, static_cast<float>(options.alpha),
           result.scales.data());
    if (gram != nullptr) {
      QUANTD_ASSIGN_OR_RETURN(
          result.estimated_error,
          Estimate(w, rows, cols, result.scales.data(), act_max_abs, g,
                   gram->tokens, signal));
    }
  }
  result.smoothed_weight.resize(Sz(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      result.smoothed_weight[Sz(r * cols + j)] =
          w[r * cols + j] * result.scales[Sz(j)];
    }
  }
  return result;
}

int64_t SmoothQuantWorkingSetBytes(const Layout& layout) {
  const int64_t n = layout.num_elements;
  const int64_t in = layout.row_length;
  // G in f32 for the searches, W diag(s), a trial W_hat and the channel
  // statistics and scales.
  return 4 * in * in + 2 * 4 * n + 64 * in;
}

}  // namespace quantd

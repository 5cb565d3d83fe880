#include "kernels/awq.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/internal/linalg.h"
#include "kernels/internal/linalg_gram.h"

namespace quantd {
namespace {

size_t Sz(int64_t n) { return static_cast<size_t>(n); }

// The reference's scales for one ratio, in f32.
void RatioScales(absl::Span<const float> act, float alpha, float* s) {
  float lo = std::numeric_limits<float>::infinity();
  float hi = 0.0f;
  for (size_t j = 0; j < act.size(); ++j) {
    s[j] = std::max(std::pow(act[j], alpha), 1e-4f);
    lo = std::min(lo, s[j]);
    hi = std::max(hi, s[j]);
  }
  const float norm = std::sqrt(hi * lo);
  for (size_t j = 0; j < act.size(); ++j) s[j] /= norm;
}

// w_hat = dequantize(Q(ws)) / s into `w_hat`; Q's buffers in `q`.
absl::Status QuantizeScaled(const float* ws, const float* s, int64_t rows,
                            int64_t cols, QuantizedTensor& q, float* w_hat) {
  QUANTD_RETURN_IF_ERROR(Quantize(ws, q));
  Dequantize(q, w_hat);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = w_hat + r * cols;
    for (int64_t j = 0; j < cols; ++j) row[j] /= s[j];
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AwqResult> AwqQuantize(const float* w, const Layout& layout,
                                      absl::Span<const float> act_mean_abs,
                                      const GramView& gram,
                                      const AwqOptions& options) {
  if (layout.IsBlockFormat() || FindFormat(layout.scheme.format) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "calibrated methods need an int2..int8 layout, got ",
        SchemeToString(layout.scheme)));
  }
  const int64_t rows = layout.rows;
  const int64_t cols = layout.row_length;
  QUANTD_RETURN_IF_ERROR(internal::CheckFinite(w, rows * cols, "weight"));
  QUANTD_RETURN_IF_ERROR(ValidateGram(gram, cols));
  if (static_cast<int64_t>(act_mean_abs.size()) != cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "act_mean_abs has ", act_mean_abs.size(), " values, expected ", cols,
        " (one per input feature)"));
  }
  for (size_t j = 0; j < act_mean_abs.size(); ++j) {
    if (!(act_mean_abs[j] >= 0.0f) || !std::isfinite(act_mean_abs[j])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "act_mean_abs[", j, "] is ", act_mean_abs[j],
          ", must be finite and >= 0"));
    }
  }
  if (options.n_grid < 1 || options.clip_grid < 1 ||
      !(options.max_shrink >= 0.0 && options.max_shrink < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AWQ options out of range: n_grid ", options.n_grid, " (>= 1), clip_grid ",
        options.clip_grid, " (>= 1), max_shrink ", options.max_shrink,
        " (in [0, 1))"));
  }

  const std::vector<float> g = internal::DenseGramF32(gram);
  QUANTD_ASSIGN_OR_RETURN(const double signal,
                          internal::TraceQuadraticChunked(w, rows, cols,
                                                          g.data()));
  AwqResult result;
  QuantizedTensor q = AllocateQuantized(layout);
  std::vector<float> s(Sz(cols));
  std::vector<float> ws(Sz(rows * cols));
  std::vector<float> w_hat(Sz(rows * cols));
  std::vector<float> diff(Sz(rows * cols));
  double best = std::numeric_limits<double>::infinity();

  // Scale search.
  for (int i = 0; i < options.n_grid; ++i) {
    const float alpha =
        static_cast<float>(i) / static_cast<float>(options.n_grid);
    RatioScales(act_mean_abs, alpha, s.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        ws[Sz(r * cols + j)] = w[r * cols + j] * s[Sz(j)];
      }
    }
    QUANTD_RETURN_IF_ERROR(
        QuantizeScaled(ws.data(), s.data(), rows, cols, q, w_hat.data()));
    for (size_t k = 0; k < diff.size(); ++k) diff[k] = w[k] - w_hat[k];
    QUANTD_ASSIGN_OR_RETURN(const double loss,
                            internal::TraceQuadraticChunked(
                                diff.data(), rows, cols, g.data()));
    result.alpha_errors.push_back(internal::RelativeFromTraces(loss, signal));
    if (loss < best) {
      best = loss;
      result.alpha = alpha;
      result.scales = s;
    }
  }
  s = result.scales;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      ws[Sz(r * cols + j)] = w[r * cols + j] * s[Sz(j)];
    }
  }

  // Clipping search on W' = W diag(s) with G' = diag(s)^-1 G diag(s)^-1.
  // Groups: `group_cols` consecutive columns of a row; a per-tensor layout
  // is one group over every row.
  const bool per_tensor = layout.scheme.granularity == Granularity::kPerTensor;
  const int64_t group_cols = per_tensor ? cols : layout.group_size;
  const int64_t groups_per_row = cols / group_cols;
  const int64_t num_groups = per_tensor ? 1 : rows * groups_per_row;
  result.clip_max.assign(Sz(num_groups), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t k = per_tensor ? 0 : r * groups_per_row + j / group_cols;
      result.clip_max[Sz(k)] =
          std::max(result.clip_max[Sz(k)], std::fabs(ws[Sz(r * cols + j)]));
    }
  }
  const int shrinks = static_cast<int>(
      std::floor(options.max_shrink * options.clip_grid + 1e-9));
  if (options.clip && shrinks > 0) {
    std::vector<float> g_scaled(g.size());
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        g_scaled[Sz(i * cols + j)] = g[Sz(i * cols + j)] / (s[Sz(i)] * s[Sz(j)]);
      }
    }
    const std::vector<float> org_max = result.clip_max;
    std::vector<double> min_err(Sz(num_groups),
                                std::numeric_limits<double>::infinity());
    std::vector<float> clipped(Sz(rows * cols));
    std::vector<float> scratch(Sz(rows * group_cols));
    std::vector<double> row_err(Sz(rows));
    std::vector<double> group_err(Sz(num_groups));
    for (int i_s = 0; i_s < shrinks; ++i_s) {
      const float factor = 1.0f - static_cast<float>(i_s) /
                                      static_cast<float>(options.clip_grid);
      std::vector<float> max_val(Sz(num_groups));
      for (size_t k = 0; k < max_val.size(); ++k) {
        max_val[k] = org_max[k] * factor;
      }
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < cols; ++j) {
          const float m =
              max_val[Sz(per_tensor ? 0 : r * groups_per_row + j / group_cols)];
          clipped[Sz(r * cols + j)] =
              std::clamp(ws[Sz(r * cols + j)], -m, m);
        }
      }
      QUANTD_RETURN_IF_ERROR(Quantize(clipped.data(), q));
      Dequantize(q, w_hat.data());
      for (size_t k = 0; k < diff.size(); ++k) diff[k] = w_hat[k] - ws[k];
      std::fill(group_err.begin(), group_err.end(), 0.0);
      for (int64_t c = 0; c < groups_per_row; ++c) {
        const int64_t c0 = c * group_cols;
        QUANTD_RETURN_IF_ERROR(internal::QuadraticFormPerRow(
            diff.data() + c0, cols, rows, group_cols,
            g_scaled.data() + c0 * cols + c0, cols, scratch.data(),
            row_err.data()));
        for (int64_t r = 0; r < rows; ++r) {
          group_err[Sz(per_tensor ? 0 : r * groups_per_row + c)] +=
              row_err[Sz(r)];
        }
      }
      for (int64_t k = 0; k < num_groups; ++k) {
        if (group_err[Sz(k)] < min_err[Sz(k)]) {
          min_err[Sz(k)] = group_err[Sz(k)];
          result.clip_max[Sz(k)] = max_val[Sz(k)];
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        const float m = result.clip_max[Sz(
            per_tensor ? 0 : r * groups_per_row + j / group_cols)];
        ws[Sz(r * cols + j)] = std::clamp(ws[Sz(r * cols + j)], -m, m);
      }
    }
  }

  QUANTD_RETURN_IF_ERROR(
      QuantizeScaled(ws.data(), s.data(), rows, cols, q, w_hat.data()));
  result.quantized = q;
  QUANTD_ASSIGN_OR_RETURN(
      result.output_error,
      OutputRelativeError(w, w_hat.data(), rows, cols, gram));
  if (options.fake_quant) result.fake_quant = w_hat;
  QuantizedTensor rtn = AllocateQuantized(layout);
  QUANTD_RETURN_IF_ERROR(Quantize(w, rtn));
  Dequantize(rtn, w_hat.data());
  QUANTD_ASSIGN_OR_RETURN(
      result.rtn_output_error,
      OutputRelativeError(w, w_hat.data(), rows, cols, gram));
  return result;
}

int64_t AwqWorkingSetBytes(const Layout& layout) {
  const int64_t n = layout.num_elements;
  const int64_t in = layout.row_length;
  // G in f32 for the searches, W diag(s), a trial W_hat and the channel
  // statistics and scales.
  return 4 * in * in + 2 * 4 * n + 64 * in;
}

}  // namespace quantd

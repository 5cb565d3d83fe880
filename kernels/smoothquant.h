// SmoothQuant (Xiao et al. 2022, "SmoothQuant: Accurate and Efficient
// Post-Training Quantization for Large Language Models"): migrate the
// quantization difficulty of W8A8 from activations to weights with a
// per-input-channel smoothing factor
//   s_j = max|X_j|^alpha / max_i |W_ij|^(1 - alpha),
// X' = X diag(s)^-1 (folded into the previous op), W' = W diag(s).
//
//   SmoothQuantOptions options;
//   options.search_alpha = true;
//   QUANTD_ASSIGN_OR_RETURN(
//       SmoothQuantResult r,
//       SmoothQuant(w, rows, cols, act_max_abs, &gram, options));
//   // r.smoothed_weight = W diag(r.scales); divide the inputs by r.scales.
//
// Thread-safety: reentrant (see gptq.h about oneDNN's threads).
#ifndef QUANTD_KERNELS_SMOOTHQUANT_H_
#define QUANTD_KERNELS_SMOOTHQUANT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/gptq.h"

namespace quantd {

struct SmoothQuantOptions {
  // The migration strength when search_alpha is false. Default: 0.5 (the
  // paper's default; 0.75..0.85 for models with strong outliers). In [0, 1].
  double alpha = 0.5;
  // Choose alpha = i / n_grid, i in [0, n_grid], minimizing
  // EstimateW8A8Error (requires G). Default: false.
  bool search_alpha = false;
  int n_grid = 20;  // >= 1
};

struct SmoothQuantResult {
  std::vector<float> scales;           // s, one per input column, > 0
  std::vector<float> smoothed_weight;  // W diag(s), rows x cols
  double alpha = 0.0;
  // EstimateW8A8Error at alpha; NaN without G.
  double estimated_error = 0.0;
  // With search_alpha: the estimate at each alpha of the grid, in order.
  std::vector<double> alpha_errors;
};

// The smoothing factors of the reference (mit-han-lab/smoothquant,
// smooth_ln_fcs), in f32: s_j = max(a_j^alpha / m_j^(1-alpha), 1e-5) with
// a_j = act_max_abs[j] and m_j = max(max_i |W_ij|, 1e-5); then W diag(s).
// `gram` may be nullptr unless search_alpha; when given, estimated_error is
// filled.
//
// Errors: InvalidArgument for rows or cols < 1, non-finite w (named by
// index), act_max_abs of the wrong size or with a negative or non-finite
// entry, alpha outside [0, 1], n_grid < 1, search_alpha without G, and
// ValidateGram's errors; Internal if oneDNN fails.
absl::StatusOr<SmoothQuantResult> SmoothQuant(
    const float* w, int64_t rows, int64_t cols,
    absl::Span<const float> act_max_abs, const GramView* gram,
    const SmoothQuantOptions& options);

// The expected relative output error of W8A8 after smoothing by `scales`,
// from G and the activation maxima alone:
//   weights: int8 symmetric per output channel (quantize.h's int8_channel)
//            of W' = W diag(s), giving W_hat';
//   activations: int8 symmetric per tensor, static, step
//            delta = max_j(a_j / s_j) / 127, modelled as independent
//            zero-mean rounding noise of variance
//            v_j = min(delta^2 / 12, mean(x_j^2) / s_j^2) per element of
//            channel j (uniform rounding noise, or the whole value when
//            the step exceeds it), mean(x_j^2) = G_jj / n;
//   error^2 = tr(dW G dW^T) + n sum_j v_j ||W_hat'[:, j]||^2,
//            dW = W - W_hat' diag(s)^-1
//   (the cross terms vanish in expectation); returned relative to
//   tr(W G W^T) as sqrt(error^2 / tr(W G W^T)).
// Errors as SmoothQuant's, plus `scales` of the wrong size or not > 0.
absl::StatusOr<double> EstimateW8A8Error(const float* w, int64_t rows,
                                         int64_t cols,
                                         absl::Span<const float> scales,
                                         absl::Span<const float> act_max_abs,
                                         const GramView& gram);

// Bytes SmoothQuant and the int quantization of W diag(s) take beside the
// tensor and its result: G in f32 for the alpha search, W diag(s), a trial
// W_hat and the channel statistics and scales. Part of WorkingSetBytes
// (quantize_tensor.h).
int64_t SmoothQuantWorkingSetBytes(const Layout& layout);

}  // namespace quantd

#endif  // QUANTD_KERNELS_SMOOTHQUANT_H_

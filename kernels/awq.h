// AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM
// Compression and Acceleration"): before round-to-nearest quantization of a
// linear layer's weight W (out x in), scale each input column by
// s_j = mean|x_j|^alpha so that the salient channels (large activations)
// lose less precision, with alpha chosen by a grid search on the layer's
// output error; then shrink each group's clipping range where that lowers
// the output error. The client folds 1/s into the op that produces x (the
// previous norm or linear), so y = (x / s) (W diag(s))^T = x W^T.
//
//   AwqOptions options;
//   QUANTD_ASSIGN_OR_RETURN(
//       AwqResult r, AwqQuantize(w, layout, act_mean_abs, gram, options));
//   // r.quantized: Q(clip(W diag(s))) in `layout`; r.scales: s.
//
// Output errors come from G = X^T X alone:
//   ||X W^T - X W_hat^T||^2 = tr(dW G dW^T),  dW = W - W_hat,
// with W_hat = dequantize(Q(W diag(s))) diag(s)^-1.
//
// Thread-safety: reentrant (see gptq.h about oneDNN's threads).
#ifndef QUANTD_KERNELS_AWQ_H_
#define QUANTD_KERNELS_AWQ_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/gptq.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"

namespace quantd {

struct AwqOptions {
  // Scale search: alpha = i / n_grid for i in [0, n_grid) (the reference's
  // 20 ratios 0, 0.05, ..., 0.95). Default: 20. Must be >= 1.
  int n_grid = 20;
  // Clipping search after the scale search. Default: true.
  bool clip = true;
  // Clipping candidates: max_val = max|w_group| * (1 - i / clip_grid) for
  // i in [0, floor(max_shrink * clip_grid)) (the reference: 20 and 0.5:
  // 1.0, 0.95, ..., 0.55). clip_grid >= 1, 0 <= max_shrink < 1.
  int clip_grid = 20;
  double max_shrink = 0.5;
  // Also return fake_quant = dequantize(quantized) diag(s)^-1 (rows x in
  // floats, the weight with the scales folded back). Default: false.
  bool fake_quant = false;
};

struct AwqResult {
  // The quantized clip(W diag(s)) in the layout's format, symmetry and
  // granularity (original column order).
  QuantizedTensor quantized;
  // s, one per input column (> 0). The layer's input must be divided by s.
  std::vector<float> scales;
  // The chosen ratio and the output error of each ratio tried (relative,
  // sqrt(tr(dW G dW^T) / tr(W G W^T)), before clipping).
  double alpha = 0.0;
  std::vector<double> alpha_errors;
  // Per group (layout order), the chosen clipping bound max_val applied to
  // W diag(s) (the unclipped max|.| when no shrink helped or clip is off).
  std::vector<float> clip_max;
  // Relative output error of the final W_hat, and of plain round to nearest
  // (Quantize of W in the same layout).
  double output_error = 0.0;
  double rtn_output_error = 0.0;
  // Empty unless AwqOptions::fake_quant.
  std::vector<float> fake_quant;
};

// AWQ of the f32 weight `w` (layout.rows x layout.row_length, row-major)
// with the per-input-channel activation magnitudes `act_mean_abs`
// (row_length values mean|x_j| over the calibration tokens, finite, >= 0)
// and G.
//
// The algorithm is the reference's (mit-han-lab/llm-awq, auto_scale and
// auto_clip) with two substitutions: the quantizer is the layout's int<b>
// format (quantize.h: its scale, zero point and rounding, per tensor,
// channel or group; the reference uses asymmetric min/max per group), and
// the losses are output errors from G over all calibration tokens (the
// reference runs X through the layer, the clip search on a 512-token
// sample). For each ratio: s = max(act_mean_abs^alpha, 1e-4),
// s /= sqrt(max(s) min(s)); loss = tr(dW G dW^T); the first smallest loss
// wins. Clipping, per group of W' = W diag(s) (per row for per-channel
// layouts, the whole tensor for per-tensor ones): clamp to
// [-max_val, max_val], quantize, and keep the max_val with the smallest
// dW' G'_gg dW'^T, G' = diag(s)^-1 G diag(s)^-1 restricted to the group's
// columns, first smallest wins.
//
// Errors: InvalidArgument for a non-int layout, non-finite w (named by
// index), act_mean_abs of the wrong size or with a negative or non-finite
// entry, options out of range, and ValidateGram's errors; Internal if
// oneDNN fails.
absl::StatusOr<AwqResult> AwqQuantize(const float* w, const Layout& layout,
                                      absl::Span<const float> act_mean_abs,
                                      const GramView& gram,
                                      const AwqOptions& options);

// Bytes AwqQuantize takes beside the tensor and its result: G in f32 for
// the searches, W diag(s), a trial W_hat and the channel statistics and
// scales. Part of WorkingSetBytes (quantize_tensor.h).
int64_t AwqWorkingSetBytes(const Layout& layout);

}  // namespace quantd

#endif  // QUANTD_KERNELS_AWQ_H_

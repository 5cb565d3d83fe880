// GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers"): quantize a linear layer's weight
// W (out x in) column by column onto one of the int<b> formats of
// quantize.h, feeding each column's rounding error back into the columns
// not yet quantized through the inverse Hessian H^-1 of the layer's
// reconstruction loss, H = 2 X^T X / n for calibration inputs X (n tokens x
// in features). The kernel takes the Gram matrix G = X^T X (the sufficient
// statistic the server accumulates), never X.
//
//   QUANTD_ASSIGN_OR_RETURN(Layout layout,
//                           MakeLayout(*ParseScheme("int4_asym_g128"),
//                                      {out, in}));
//   GramView gram = GramView::F64(g, in, tokens);  // g: in*in doubles
//   QUANTD_ASSIGN_OR_RETURN(GptqResult r, GptqQuantize(w, layout, gram, {}));
//   std::vector<float> w_hat(out * in);
//   Dequantize(r.quantized, w_hat.data());  // follows r's group index
//
// Also here, shared by awq.h and smoothquant.h: GramView (how G is passed)
// and OutputRelativeError (the output-space error measured through G).
//
// Thread-safety: reentrant. The GEMMs run in oneDNN, which may use its own
// threads; the result is deterministic for a given oneDNN thread count.
#ifndef QUANTD_KERNELS_GPTQ_H_
#define QUANTD_KERNELS_GPTQ_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {

// A read-only view of G = X^T X (features x features, row-major, f64 or f32)
// accumulated over `tokens` calibration tokens. Exactly one of f64/f32 is
// non-empty. Does not own the data. G is expected symmetric; the kernels use
// it as given (GPTQ reads its lower triangle through the Cholesky).
struct GramView {
  absl::Span<const double> f64;
  absl::Span<const float> f32;
  int64_t features = 0;
  int64_t tokens = 0;

  static GramView F64(absl::Span<const double> g, int64_t features,
                      int64_t tokens) {
    return GramView{g, {}, features, tokens};
  }
  static GramView F32(absl::Span<const float> g, int64_t features,
                      int64_t tokens) {
    return GramView{{}, g, features, tokens};
  }
  double at(int64_t i, int64_t j) const {
    const size_t k = static_cast<size_t>(i * features + j);
    return f64.empty() ? static_cast<double>(f32[k]) : f64[k];
  }
};

// Checks `gram` against a weight with `in_features` columns. InvalidArgument
// naming the problem: G's size is not features^2 or features differs from
// in_features, both or neither of f64/f32 set, tokens < 1, a NaN or infinite
// entry (named by row and column), a negative diagonal entry.
absl::Status ValidateGram(const GramView& gram, int64_t in_features);

// Output-space relative error of replacing W by W_hat (rows x cols, the
// layer y = x W^T) on the calibration inputs behind G:
//   sqrt(tr(dW G dW^T) / tr(W G W^T)),  dW = W - W_hat,
// i.e. ||X W^T - X W_hat^T||_F / ||X W^T||_F. 0 when both traces are 0,
// +infinity when only tr(W G W^T) is 0. Errors: ValidateGram's, and
// InvalidArgument for non-finite w or w_hat.
absl::StatusOr<double> OutputRelativeError(const float* w, const float* w_hat,
                                           int64_t rows, int64_t cols,
                                           const GramView& gram);

struct GptqOptions {
  // Added to H's diagonal: damp_percent * mean(diag(H)) (after dead columns
  // are set to 1). Default: 0.01. Must be >= 0 and finite.
  double damp_percent = 0.01;
  // Columns per lazy batch: errors are applied within the batch at once and
  // to the columns after it by one GEMM per batch. Default: 128. Only
  // affects speed and float rounding, never the algorithm (see below).
  int64_t block_size = 128;
  // Quantize columns in order of descending diag(H) (stable for ties), the
  // reference's --act-order / desc_act. Default: false.
  bool act_order = false;
  // With groups (Granularity::kPerGroup): compute every group's scale and
  // zero point up front from the original W (after dead columns are
  // zeroed), on the groups of the original column order. Default: false:
  // a group's parameters are computed when its first column is reached,
  // from the error-updated weights of its columns (in quantization order).
  bool static_groups = false;
  // Also compute GptqResult::output_error and rtn_output_error (two more
  // GEMMs of out x in x in). Default: true.
  bool measure_output_error = true;
};

struct GptqResult {
  // The quantized weight in `layout`'s format, symmetry and granularity,
  // codes in the original column order: Dequantize() gives scale * (q -
  // zero_point) per group. With act_order and dynamic groups (act_order &&
  // !static_groups && 0 < group_size < row length) groups are consecutive
  // in quantization order, as in the reference implementation (GPTQ's
  // desc_act with g_idx): then quantized.layout.group_index is set and
  // quantized.group_index = g_idx below, which Dequantize follows. Otherwise
  // groups are consecutive columns and the layout is `layout`'s.
  QuantizedTensor quantized;
  // Quantization order: perm[j] = the original column quantized j-th.
  // Empty without act_order.
  std::vector<int32_t> perm;
  // Per original column (in features entries), the index of its group
  // within a row, as GPTQ checkpoints store it: column c of row r uses
  // scale (and zero point) number r * groups_per_row + g_idx[c] of
  // `quantized`'s scale array. Empty unless group_size > 0.
  std::vector<int32_t> g_idx;
  // Input columns whose diag(G) is 0 (never activated): weight zeroed.
  int64_t dead_columns = 0;
  // The reference's Losses: sum over rows and columns of
  // (w - q)^2 / (2 * Hinv_cc^2), in the quantization order's basis.
  double loss = 0.0;
  // OutputRelativeError(W, W_hat) with the undamped G, and the same for
  // plain round to nearest (Quantize) of W in `layout`. NaN when not
  // measured.
  double output_error = 0.0;
  double rtn_output_error = 0.0;
};

// GPTQ of the f32 weight `w` (layout.rows x layout.row_length, row-major)
// onto `layout` (an int<b> layout from MakeLayout; per tensor, per channel
// or per group) with H = 2 G / tokens.
//
// The algorithm is the reference implementation's (IST-DASLab/gptq,
// GPTQ.fasterquant): dead columns (diag(G) == 0) get weight 0 and H
// diagonal 1; optional act_order permutation; damping; Hinv = the upper
// Cholesky factor of H^-1; then for each column c in order: q_c = the
// format's quantize-dequantize of w_c with its group's parameters,
// err = (w_c - q_c) / Hinv_cc, and w_j -= err * Hinv_cj for the later
// columns j. The grid and parameters are exactly the int<b> format's
// (quantize.h: same scale, zero point, FLT_MIN floor, f32 reciprocal and
// round-half-even), computed per tensor or per channel from the whole
// original (dead-zeroed) W before any update, per group as GptqOptions
// describes. So `quantized` is a valid QuantizedTensor of `layout` (with
// act_order and dynamic groups, of `layout` with group_index set).
//
// One deliberate difference from the reference: with dynamic groups
// smaller than block_size, the reference computes a group's parameters
// from weights that miss the updates of earlier columns of the same lazy
// batch; here a group's parameters always see every earlier column's
// update (batches are cut at group starts when needed), which is the
// unbatched algorithm. Both agree whenever group_size is a multiple of
// block_size (e.g. the usual 128/128).
//
// Errors (InvalidArgument unless said): a block format or non-int layout;
// `w` with a NaN or infinity (named by index); ValidateGram's errors;
// damp_percent < 0 or not finite; block_size < 1; FailedPrecondition when
// the damped H is not positive definite (e.g. damp_percent 0 and a singular
// G); Internal when oneDNN fails.
absl::StatusOr<GptqResult> GptqQuantize(const float* w, const Layout& layout,
                                        const GramView& gram,
                                        const GptqOptions& options);

// Bytes GPTQ (GptqQuantize, GptqGgmlQuantize) takes beside the tensor and
// its result: H and its Cholesky factor / inverse in f64, the updated f32
// copy of W and one batch's error panel. Part of WorkingSetBytes
// (quantize_tensor.h).
int64_t GptqWorkingSetBytes(const Layout& layout);

}  // namespace quantd

#endif  // QUANTD_KERNELS_GPTQ_H_

// GPTQ onto ggml's block formats (ggml_formats.h): the weight W (out x in)
// of a linear layer is quantized column by column as in gptq.h, but every
// element is rounded onto the fixed grid of ITS ggml block, so the output is
// ordinary ggml bytes (a GGUF tensor of that type) that llama.cpp loads
// unchanged.
//
//   const GgmlFormatTraits* q4_k = FindGgmlFormat("Q4_K");
//   GramView gram = GramView::F64(g, in, tokens);  // g: in*in doubles, X^T X
//   GptqGgmlOptions options;
//   options.act_order = true;
//   QUANTD_ASSIGN_OR_RETURN(GptqGgmlResult r,
//                           GptqGgmlQuantize(*q4_k, w, out, in, gram, options));
//   // r.bytes: out * GgmlRowBytes(*q4_k, in) bytes, ggml's layout.
//   std::vector<float> w_hat(out * in);
//   QUANTD_RETURN_IF_ERROR(
//       GgmlDequantize(*q4_k, r.bytes.data(), out, in, w_hat.data()));
//
// The algorithm (a static grid, as GPTQ's static_groups):
//  1. The static pass: W as given (dead columns included) is quantized by
//     ggml's own quantizer, GgmlQuantize, with the importance weights
//     diag(G) / tokens (llama.cpp's imatrix: the mean square of each input
//     feature) when the format takes them and options.use_importance. This
//     fixes every block's scales, minimums and sub-block scales; they are
//     never changed afterwards, so the output's scale bytes are exactly the
//     static pass's.
//  2. The GPTQ column loop of gptq.h (H = 2 G / tokens, dead columns zeroed,
//     optional act_order, damping, the upper Cholesky factor of H^-1, lazy
//     batches; internal/linalg_gptq.h holds the shared code), where each
//     element is rounded to the nearest value of its own block's grid:
//       - linear formats: the values v(q) = scale * level(q) - offset in the
//         f32 operations of ggml's dequantizer (Q4_0: d * (q - 8); Q4_1:
//         d * q + m; Q5_0: d * (q - 16); Q5_1: d * q + m; Q8_0: d * q with
//         q in [-127, 127], the range ggml's quantizer produces; Q2_K:
//         (d * sc) * q - dmin * m, q in [0, 3]; Q3_K: (d * s) * q,
//         q in [-4, 3]; Q4_K / Q5_K: (d * sc) * q - dmin * m, q in [0, 15] /
//         [0, 31]; Q6_K: (d * s) * q, q in [-32, 31]);
//       - table formats: IQ4_NL d * kGgmlIq4NlValues[q], IQ4_XS
//         (d * (s - 32)) * kGgmlIq4NlValues[q], MXFP4
//         kGgmlMxfp4Values[q] * 2^(e - 128).
//     Nearest means least |v(q) - x| in f32 over the allowed q; ties go to
//     the smaller q; a sub-block whose scale is 0 takes the code whose level
//     is nearest 0 (all its values are equal).
//  3. The chosen codes are written into the static pass's blocks. Because
//     v(q) uses the dequantizer's own f32 operations, GgmlDequantize of the
//     bytes gives exactly (bit for bit) the w_hat that the error feedback
//     used.
// Every format of GgmlFormatTable() is supported: Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS and MXFP4.
//
// Deterministic: the same inputs give the same bytes for a given oneDNN
// thread count (as gptq.h). Thread-safety: reentrant.
#ifndef QUANTD_KERNELS_GPTQ_GGML_H_
#define QUANTD_KERNELS_GPTQ_GGML_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ggml_formats.h"
#include "kernels/gptq.h"

namespace quantd {

struct GptqGgmlOptions {
  // As GptqOptions: damping fraction of mean(diag(H)) (>= 0, finite),
  // columns per lazy batch (>= 1), descending-diag(H) quantization order.
  // Defaults: 0.01, 128, false. act_order changes only the order in which
  // columns are quantized: the bytes are always in ggml's (original) order.
  double damp_percent = 0.01;
  int64_t block_size = 128;
  bool act_order = false;
  // Pass diag(G) / tokens to ggml's quantizer in the static pass (only
  // formats with uses_importance read it). Default: true.
  bool use_importance = true;
  // Compute GptqGgmlResult::output_error and rtn_output_error. Default: true.
  bool measure_output_error = true;
  // Fill GptqGgmlResult::w_hat. Default: false.
  bool return_w_hat = false;
};

struct GptqGgmlResult {
  // rows * GgmlRowBytes(format, cols) bytes in ggml's layout.
  std::vector<uint8_t> bytes;
  // The static pass's bytes (GgmlQuantize of W with the same importance):
  // plain round to nearest, the baseline. Same size as `bytes`; the two
  // differ only in code bits.
  std::vector<uint8_t> rtn_bytes;
  // With return_w_hat: the values the column loop used, rows x cols in the
  // original column order; GgmlDequantize(bytes) equals them bit for bit.
  std::vector<float> w_hat;
  // Quantization order (perm[j] = original column quantized j-th); empty
  // without act_order.
  std::vector<int32_t> perm;
  // Input columns whose diag(G) is 0: their weight is taken as 0 by the
  // column loop (they do not affect the layer's output on the calibration
  // data). The static pass still sees their original values.
  int64_t dead_columns = 0;
  // The reference's loss: sum of (w - q)^2 / (2 Hinv_cc^2).
  double loss = 0.0;
  // OutputRelativeError (gptq.h) of the decoded bytes and of rtn_bytes
  // against W with the undamped G. NaN when not measured.
  double output_error = 0.0;
  double rtn_output_error = 0.0;
};

// GPTQ of the f32 weight `w` (rows x cols, row-major) onto `format` with
// the calibration statistics `gram` (cols features). See the file comment.
//
// Errors (InvalidArgument unless said): cols not a positive multiple of the
// format's block size (the message names both), rows < 1, `w` with a NaN or
// infinity (named by index), ValidateGram's errors, damp_percent < 0 or not
// finite, block_size < 1; a block whose static scale or minimum decodes to
// a non-finite value (e.g. Q8_0 with |w| beyond its f16 scale's range; the
// message names the row and block); FailedPrecondition when the damped H is
// not positive definite; Internal when oneDNN fails.
absl::StatusOr<GptqGgmlResult> GptqGgmlQuantize(const GgmlFormatTraits& format,
                                                const float* w, int64_t rows,
                                                int64_t cols,
                                                const GramView& gram,
                                                const GptqGgmlOptions& options);

}  // namespace quantd

#endif  // QUANTD_KERNELS_GPTQ_GGML_H_

// W8A8 check: runs a linear layer y = x W^T the way an integer-only engine
// does (static int8 activation codes, int8 weight codes, an s8 x s8 -> s32
// GEMM in oneDNN, one f32 rescale per output) on a held-back sample of
// activation rows and measures it against the f32 layer, beside the
// weights-only fake-quant error, so the share of the activations is visible.
//
//   QuantizedTensor wq = AllocateQuantized(int8_per_channel_layout);  // n x k
//   QUANTD_RETURN_IF_ERROR(Quantize(w, wq));
//   QUANTD_ASSIGN_OR_RETURN(W8A8Weights weights, W8A8Weights::From(wq));
//   // range: range_estimators.h's EstimateTensorRange (symmetric: s8 codes).
//   W8A8Activations act = W8A8Activations::FromRange(range, true);
//   QUANTD_ASSIGN_OR_RETURN(W8A8Report report,
//       W8A8Check(x, m, w, n, k, weights, act, {}));
//   // report.w8a8.relative_error, .sqnr_db, .max_abs_error,
//   // report.weight_only (the same, weights-only), report.clipped_fraction
//
// The integer path, exactly (the scalar reference is the specification):
//   x'[i][c] = x[i][c] / smooth[c] in f32 (only with SmoothQuant factors:
//              the weight codes are then those of W diag(smooth));
//   q = nearbyint(x' / scale) + zero_point (f32 division, round half to
//       even, as ONNX QuantizeLinear), saturated to [-128, 127] (s8,
//       zero_point 0) or [0, 255] (u8, asymmetric); an element is "clipped"
//       when it saturated;
//   acc[i][j] = sum_c (q[i][c] - zero_point) * wq[j][c] in s32, computed
//       by Int8GemmS32 (oneDNN's s8 or u8 x s8 -> s32 matmul of the raw
//       codes, minus zero_point * sum_c wq[j][c]; exact, see the class;
//       k <= 65536 keeps every sum inside s32);
//   y[i][j] = (scale * s_w[j]) * (float)acc[i][j] in f32, s_w per output
//       channel or one per tensor.
// The f32 reference X W^T and the weights-only X' W_hat^T (W_hat =
// s_w[j] * wq[j][c]) are oneDNN sgemms; the sums of the metrics are double.
//
// W8A8Check creates its Int8GemmS32 on each call (oneDNN's own primitive
// cache makes a repeated shape cheap); a caller running many batches of one
// shape can hold an Int8GemmS32 itself.
//
// Thread-safety: reentrant. oneDNN may use its own threads (the OpenMP
// team of the caller); the s32 result is exact and so independent of them.
#ifndef QUANTD_KERNELS_W8A8_H_
#define QUANTD_KERNELS_W8A8_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/quantize.h"
#include "kernels/range_estimators.h"

namespace quantd {

// Int8 weight codes of an n x k weight (n output channels, row-major) with
// symmetric scales. Does not own the data.
struct W8A8Weights {
  const int8_t* codes = nullptr;  // n * k codes, x = scale * code
  absl::Span<const float> scales;  // n (per output channel) or 1 (tensor)

  // From an int8 symmetric per-channel or per-tensor QuantizedTensor of
  // quantize.h (whose 8-bit fields are the two's complement codes).
  // InvalidArgument for any other layout. The view aliases `q`.
  static absl::StatusOr<W8A8Weights> From(const QuantizedTensor& q);
};

// The static activation quantization.
struct W8A8Activations {
  // s_x: finite and > 0. range_estimators.h's ActivationRange::scale.
  float scale = 1.0f;
  // 0 for symmetric s8 codes; with `asymmetric`, the u8 zero point in
  // [0, 255] (ActivationRange::zero_point).
  int32_t zero_point = 0;
  bool asymmetric = false;
  // Empty, or k per-input-channel divisors (finite, > 0): SmoothQuant's
  // factors s, folded into the weight codes (which quantize W diag(s)).
  absl::Span<const float> smooth;

  // From a static range of range_estimators.h (EstimateTensorRange, Int8Range):
  // its scale, and its zero point as u8 codes when `symmetric` is false.
  static W8A8Activations FromRange(const ActivationRange& range,
                                   bool symmetric) {
    W8A8Activations a;
    a.scale = range.scale;
    a.asymmetric = !symmetric;
    a.zero_point = symmetric ? 0 : range.zero_point;
    return a;
  }
};

struct W8A8Options {
  // Fill W8A8Report::y with the W8A8 output. Default: false.
  bool return_output = false;
};

// Errors of an output Y against the f32 reference Y_ref (m x n).
struct OutputErrorStats {
  double relative_error = 0.0;  // ||Y - Y_ref||_F / ||Y_ref||_F
  double sqnr_db = 0.0;         // 10 log10(||Y_ref||^2 / ||Y - Y_ref||^2)
  double max_abs_error = 0.0;   // max |Y - Y_ref|
};

struct W8A8Report {
  // The integer-only path: int8 activations and weights, s32 accumulators.
  OutputErrorStats w8a8;
  // Weights-only fake quant: f32 activations (x'), dequantized weights.
  OutputErrorStats weight_only;
  // Fraction of the m * k activations that saturated.
  double clipped_fraction = 0.0;
  int64_t clipped = 0;
  // With return_output: the W8A8 output y (m x n).
  std::vector<float> y;
  // oneDNN's implementation of the s8 GEMM (Int8GemmS32::implementation).
  std::string gemm;
};

// Runs the W8A8 layer on `x` (m x k f32 activation rows) and compares it
// with x w^T (`w`: the n x k f32 weight the codes came from, before any
// smoothing). relative_error is 0 when both norms are 0 and +infinity when
// only the reference's is; sqnr_db is +infinity for an exact output.
// Errors (InvalidArgument): m, n or k < 1; k > 65536; a NaN or infinity in
// x or w (named by index); scales not of size n or 1, or not finite;
// activation scale not finite and > 0; zero_point not 0 for s8 or outside
// [0, 255] for u8; smooth not empty and not of size k, or an entry not
// finite and > 0; Internal when oneDNN fails.
absl::StatusOr<W8A8Report> W8A8Check(const float* x, int64_t m, const float* w,
                                     int64_t n, int64_t k,
                                     const W8A8Weights& weights,
                                     const W8A8Activations& activations,
                                     const W8A8Options& options);

// The activation codes of x (m x k) by the rule above, into `dst` (m * k
// bytes: two's complement s8, or u8 when asymmetric). Returns the number of
// saturated elements. REQUIRES: finite x and parameters valid as W8A8Check
// checks them.
int64_t QuantizeActivationsInt8(const float* x, int64_t m, int64_t k,
                                const W8A8Activations& activations,
                                uint8_t* dst);

// acc = (A - zero_point) B^T in s32 for A (m x k codes: s8, or u8 when
// src_unsigned) and B (n x k s8 codes), both row-major; acc is m x n.
// The scalar reference: plain loops, the specification.
void Int8GemmS32Reference(const uint8_t* a, bool src_unsigned,
                          int32_t zero_point, const int8_t* b, int64_t m,
                          int64_t n, int64_t k, int32_t* acc);

// The same through oneDNN's matmul primitive (s8/u8 x s8 -> s32), created
// once per shape and executed many times, as the oneDNN examples do; the
// zero point is applied afterwards from B's row sums. Bit-identical to the
// reference (integer arithmetic) on every CPU:
//   - where oneDNN runs a VNNI or AMX int8 kernel (its implementation name
//     says "vnni" or "amx"), products are summed straight into s32: one
//     matmul of the codes as given;
//   - elsewhere oneDNN's int8 GEMM multiplies u8 by s8 pairwise into
//     saturating s16 (vpmaddubsw), which is not exact for sources above
//     127, so A is shifted to u8 (s8 + 128) and split into its low 7 bits
//     and its top bit, two u8 matmuls with sources in [0, 127] (which
//     cannot saturate) combined as lo + 128 * hi minus the shift's and
//     zero point's share, (128 + zero_point) * sum_c b[j][c].
// A value type: copies share the primitive; Run may be called concurrently.
class Int8GemmS32 {
 public:
  enum class Path {
    kAuto,          // the single matmul where exact, else the 7-bit split
    kSevenBitSplit  // always the split (for tests and benchmarks)
  };
  // InvalidArgument for m, n or k < 1 or k > 65536; Internal when oneDNN
  // cannot create the primitive.
  static absl::StatusOr<Int8GemmS32> Create(int64_t m, int64_t n, int64_t k,
                                            bool src_unsigned,
                                            Path path = Path::kAuto);
  // acc = (a - zero_point) b^T as Int8GemmS32Reference. Internal when
  // oneDNN fails.
  absl::Status Run(const uint8_t* a, int32_t zero_point, const int8_t* b,
                   int32_t* acc) const;

  int64_t m() const { return m_; }
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  // Whether Run splits the source in two matmuls.
  bool split() const;
  // oneDNN's implementation name, e.g. "brg:avx512_core_vnni".
  const std::string& implementation() const;

 private:
  struct Impl;
  Int8GemmS32(std::shared_ptr<const Impl> impl, int64_t m, int64_t n,
              int64_t k);
  std::shared_ptr<const Impl> impl_;
  int64_t m_ = 0;
  int64_t n_ = 0;
  int64_t k_ = 0;
};

// Bytes W8A8Check takes for a tensor of `layout` on `holdout_rows` rows:
// the activation codes (two copies for the 7-bit split), the reference,
// integer-only and weights-only outputs and the s32 results. Part of
// WorkingSetBytes (quantize_tensor.h).
int64_t W8A8CheckWorkingSetBytes(const Layout& layout, int64_t holdout_rows);

}  // namespace quantd

#endif  // QUANTD_KERNELS_W8A8_H_

// HQQ, Half-Quadratic Quantization (Badri & Shaji, 2023): calibration-free
// asymmetric integer quantization whose zero point (and optionally scale) per
// group is optimized so that the reconstruction error is small in an lp
// norm with p < 1, which tolerates outliers. This follows the semantics of
// the `hqq` library's optimize_weights_proximal_legacy, in f32.
//
//   HqqOptions options;            // 4 bits, groups of 64, lp 0.7, beta 10...
//   QUANTD_ASSIGN_OR_RETURN(HqqTensor q,
//                           HqqQuantize(w.data(), rows, row_length, options));
//   std::vector<float> w_hat(rows * row_length);
//   HqqDequantize(q, w_hat.data());  // w_hat = (q - zero_point) * scale
//
// Output layout. Codes are unsigned b-bit integers in [0, 2^b - 1] packed LSB
// first over the whole tensor like PackCodes (quantize.h); scales and zero
// points are one f32 each per group of group_size consecutive elements of a
// row. The zero point is a float and need not be an integer or lie inside
// the code range, so this is NOT the uint8-zero-point layout of
// QuantizedTensor, and the scale convention differs too: the value of code q
// in group g is x = (q - zero_point[g]) * scale[g], one f32 subtraction and
// one f32 multiply.
//
// Algorithm, per group of values x (all arithmetic f32 unless noted; qmax =
// 2^b - 1; round = nearest, ties to even):
//   Init (min-max, the library's round_zero=false):
//     denom = max(x) - min(x); inv = qmax / denom, or 1 when |denom| <= 1e-4;
//     inv = min(inv, 2e4); zero = -min(x) * inv.
//   For t = 0, 1, ..., iterations (beta_t = beta * kappa^t, in double):
//     q = clamp(round(x * inv + zero), 0, qmax)
//     r = (q - zero) / inv
//     err_t = sum |x - r| (double, index order)
//     if early_stop and err_t >= err_best: restore the best (inv, zero), stop
//     keep (inv, zero) as the best; if t == iterations: stop
//     e = x - r;  w_e = sign(e) * max(|e| - (1/beta_t) * |e|^(p-1), 0)
//         (the lp shrinkage; |e|^(p-1) computed in double, rounded to f32;
//          w_e = 0 where e = 0)
//     target = x - w_e
//     zero = mean(q - target * inv)       (mean: double sum / n, to f32)
//     optimize_scale only (an extension; the library's legacy solver moves
//     the zero point alone): first inv = cov(target, q) / var(target)
//     (double) when that is finite and > 0, then zero = mean(q) - inv *
//     mean(target) (double, to f32); otherwise the zero update above.
//   mse_guard only: if the chosen point's squared output error
//     sum (x - (q - zero) * (1 / inv))^2 (double) exceeds the initial
//     point's, the group keeps the initial point.
//   Output: scale = 1 / inv, zero_point = zero, codes = q of the chosen point.
// Differences from the library, on purpose: early stopping is decided per
// group (the library compares the mean over the whole tensor, so one group's
// result would depend on the others), and the stopping point returns the
// best (inv, zero) seen rather than the one a step past it. Consequence
// (with early_stop): every group's sum |x - r| is at most that of the
// initial min-max point, i.e. plain asymmetric round-to-nearest with a float
// zero point. HQQ minimizes an lp error with p < 1, which gives up on
// outliers, so its squared error can exceed plain RTN's (on outlier-heavy
// groups at 2 bits); mse_guard keeps such groups at the RTN point, so that
// with both options no group is worse than min-max RTN in either sum |e| or
// sum e^2.
//
// Determinism: a pure function of its inputs; same bytes on every run and
// machine (no vector path; -ffp-contract=off).
// Thread-safety: reentrant.
#ifndef QUANTD_KERNELS_HQQ_H_
#define QUANTD_KERNELS_HQQ_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace quantd {

struct Layout;  // scheme.h

struct HqqOptions {
  // Code width, 1..8. Default: 4.
  int bits = 4;
  // Elements per group along the row; must divide row_length. 0 means one
  // group per row. Default: 64 (the library's default).
  int64_t group_size = 64;
  // The p of the lp norm, in (0, 1]. Default: 0.7.
  float lp_norm = 0.7f;
  // Initial beta of the half-quadratic penalty, > 0. Default: 10.
  float beta = 10.0f;
  // Growth of beta per step, >= 1. Default: 1.01.
  float kappa = 1.01f;
  // Maximum number of proximal steps, >= 0. Default: 20.
  int iterations = 20;
  // Stop a group at its first step that does not lower sum |x - r|.
  // Default: true.
  bool early_stop = true;
  // Also refit the scale each step (see above). Default: false.
  bool optimize_scale = false;
  // Keep the min-max RTN point of a group whose squared error HQQ would
  // raise (see above; not in the library). Default: false.
  bool mse_guard = false;
};

struct HqqTensor {
  int64_t rows = 0;
  int64_t row_length = 0;
  int bits = 0;
  int64_t group_size = 0;
  int64_t num_groups = 0;
  std::vector<uint8_t> codes;       // ceil(rows * row_length * bits / 8)
  std::vector<float> scales;        // num_groups
  std::vector<float> zero_points;   // num_groups, floats

  int64_t num_elements() const { return rows * row_length; }
  // bits + 64 / group_size (an f32 scale and an f32 zero point per group).
  double BitsPerWeight() const;
};

// Quantizes the rows x row_length row-major f32 tensor `src`.
// InvalidArgument naming the problem when rows or row_length < 1, bits is
// outside 1..8, group_size < 0 or does not divide row_length, lp_norm is not
// in (0, 1], beta <= 0, kappa < 1, iterations < 0, or an element is NaN or
// infinite (naming its index), or a group's max - min overflows f32.
absl::StatusOr<HqqTensor> HqqQuantize(const float* src, int64_t rows,
                                      int64_t row_length,
                                      const HqqOptions& options);

// dst[i] = (float(q_i) - zero_point[g]) * scale[g] for the num_elements()
// elements. InvalidArgument if `src`'s sizes are inconsistent.
absl::Status HqqDequantize(const HqqTensor& src, float* dst);

// Bytes HqqQuantize's result holds beside the preallocated codes and
// scales (QuantizedWorkingSetBytes) and the dequantized values: its codes
// and scales, one byte per element of unpacked codes and the f32 zero
// points. Part of WorkingSetBytes (quantize_tensor.h). REQUIRES:
// layout.kind is kHqq.
int64_t HqqWorkingSetBytes(const Layout& layout);

}  // namespace quantd

#endif  // QUANTD_KERNELS_HQQ_H_

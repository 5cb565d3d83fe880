// Internal: the scale-search helpers of ggml's quantizers (ggml-quants.c's
// nearest_int, make_qx_quants, make_q3_quants, make_qkx2_quants,
// make_qkx3_quants, make_qp_quants), shared by the K-quants
// (ggml_kquants.cc) and the imatrix paths of the 32-element formats
// (ggml_formats.cc). Scalar, the specification: each follows its ggml
// routine operation for operation (the same f32 expressions in the same
// order, the same strict or non-strict comparisons), so the results are the
// same bits; the library is built with -ffp-contract=off like ggml's
// reference quantizers.
//
//   int8_t codes[32];
//   const float d = GgmlMakeQxQuants(32, 8, x, codes, 1, weights);
//
// Thread-safety: pure functions.
#ifndef QUANTD_KERNELS_INTERNAL_GGML_SEARCH_H_
#define QUANTD_KERNELS_INTERNAL_GGML_SEARCH_H_

#include <cstdint>
#include <cstring>

namespace quantd::internal {

// ggml's GROUP_MAX_EPS: a group whose max |x| is below it counts as zero.
inline constexpr float kGgmlGroupMaxEps = 1e-15f;

// ggml's nearest_int: adds 1.5 * 2^23 and reads the low mantissa bits, which
// rounds half to even for |fval| <= 4194303. Outside that range (and for
// Inf/NaN) the result is whatever the same bit manipulation gives, exactly
// as in ggml, without undefined behaviour.
inline int GgmlNearestInt(float fval) {
  const float val = fval + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &val, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// make_qx_quants: symmetric codes L[i] in [0, 2 * nmax - 1] (the signed code
// plus nmax) for n values of x; returns their scale. Starts from
// -nmax / (signed max of x) and tries 18 nearby scales, keeping the one that
// maximises (sum w x l)^2 / (sum w l^2). Weights are qw when non-null, else
// by rmse_type: 1 -> x^2, 2 -> 1, 3 -> |x|, other -> sqrt|x|. rmse_type 0
// returns the first scale without fitting; a negative rmse_type returns
// after the first fit. A group with max |x| below kGgmlGroupMaxEps gets
// codes 0 and scale 0.
float GgmlMakeQxQuants(int n, int nmax, const float* x, int8_t* L,
                       int rmse_type, const float* qw);

// make_q3_quants: codes L[i] in [0, 2 * nmax - 1] with x^2 weights, refined
// element by element when do_rmse; returns the scale.
float GgmlMakeQ3Quants(int n, int nmax, const float* x, int8_t* L,
                       bool do_rmse);

// make_qkx2_quants / make_qkx3_quants: asymmetric codes L[i] in [0, nmax],
// returning the scale; *the_min receives the negated minimum (as in ggml;
// the minimum is never above 0). Tries nstep + 1 scales
// (rmin + rdelta * is + nmax) / (max - min), each refitted by weighted least
// squares, keeping the least weighted squared (use_mad: absolute) error.
// Laux is n bytes of scratch. make_qkx2 requires weights; make_qkx3 takes
// nullptr for x^2 weights and guards its rounding against Inf/NaN.
float GgmlMakeQkx2Quants(int n, int nmax, const float* x, const float* weights,
                         uint8_t* L, float* the_min, uint8_t* Laux, float rmin,
                         float rdelta, int nstep, bool use_mad);
float GgmlMakeQkx3Quants(int n, int nmax, const float* x, const float* weights,
                         uint8_t* L, float* the_min, uint8_t* Laux, float rmin,
                         float rdelta, int nstep, bool use_mad);

// make_qp_quants: non-negative codes L[i] in [0, nmax] for non-negative x
// (sub-block scales) with the given weights; returns the scale.
float GgmlMakeQpQuants(int n, int nmax, const float* x, uint8_t* L,
                       const float* quant_weights);

}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_GGML_SEARCH_H_

// Internal: the vector lane types the ggml kernels are written over, so that
// a kernel is written once as a template over V and each ISA file
// instantiates it (see internal/ggml_kquants_lanes.h with
// ggml_kquants_avx2.cc):
//
//   // Lane k: the sum of squares of block k, blocks transposed into x[32].
//   template <typename V>
//   typename V::F SumSquares(const typename V::F* x) {
//     typename V::F s = V::Zero();
//     for (int i = 0; i < 32; ++i) s = V::Add(s, V::Mul(x[i], x[i]));
//     return s;
//   }
//   // In a file built with -mavx2: SumSquares<Avx2Lanes>(x), 8 blocks;
//   // in one built with -mavx512f: SumSquares<Avx512Lanes>(x), 16 blocks.
//
// A lane type provides F (f32 vector), I (int32 vector), M (lane mask),
// kLanes and static operations, each one instruction or a few, with the same
// result bits on every lane type (the comments give the semantics where a
// name could leave doubt). Avx2Lanes: 8 lanes, masks are full vectors;
// Avx512Lanes: 16 lanes, masks are k registers.
//
// Everything here has internal linkage, so that code compiled with
// -mavx512f never leaks into a caller built without it. Include only from
// files compiled with at least -mavx2 -mfma -mf16c; Avx512Lanes exists only
// where -mavx512f (with -mavx512bw -mavx512vl -mavx512dq) is on.
#ifndef QUANTD_KERNELS_INTERNAL_GGML_LANES_H_
#define QUANTD_KERNELS_INTERNAL_GGML_LANES_H_

// GCC 12's avx512fintrin.h trips -Wuninitialized on its own
// _mm512_undefined_* operands (GCC bug 105593); silenced for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

namespace quantd::internal {
namespace {  // NOLINT: per-ISA copies on purpose, see above.

// ggml's nearest_int on each lane of an AVX2 vector, the same bit
// manipulation.
inline __m256i NearestInt8(__m256 v) {
  const __m256 biased = _mm256_add_ps(v, _mm256_set1_ps(12582912.0f));
  return _mm256_sub_epi32(
      _mm256_and_si256(_mm256_castps_si256(biased),
                       _mm256_set1_epi32(0x007fffff)),
      _mm256_set1_epi32(0x00400000));
}

inline __m256i Clamp8(__m256i v, int lo, int hi) {
  return _mm256_max_epi32(_mm256_set1_epi32(lo),
                          _mm256_min_epi32(_mm256_set1_epi32(hi), v));
}

// Eight lanes (AVX2). Masks are full vectors (all ones per true lane).
struct Avx2Lanes {
  using F = __m256;
  using I = __m256i;
  using M = __m256;
  static constexpr int kLanes = 8;

  static F Set(float v) { return _mm256_set1_ps(v); }
  static I SetI(int v) { return _mm256_set1_epi32(v); }
  static F Zero() { return _mm256_setzero_ps(); }
  static F Load(const float* p) { return _mm256_load_ps(p); }
  static void Store(float* p, F v) { _mm256_store_ps(p, v); }
  static F Add(F a, F b) { return _mm256_add_ps(a, b); }
  static F Sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F Mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F Div(F a, F b) { return _mm256_div_ps(a, b); }
  static F Min(F a, F b) { return _mm256_min_ps(a, b); }  // a < b ? a : b
  static F Max(F a, F b) { return _mm256_max_ps(a, b); }  // a > b ? a : b
  static F Sqrt(F a) { return _mm256_sqrt_ps(a); }
  static F Abs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static F Neg(F a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
  static M Gt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M Lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M Le(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
  static M Eq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static M Neq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_NEQ_UQ); }
  static M NeI(I a, I b) {
    return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_cmpeq_epi32(a, b),
                                                _mm256_set1_epi32(-1)));
  }
  static M And(M a, M b) { return _mm256_and_ps(a, b); }
  static M Or(M a, M b) { return _mm256_or_ps(a, b); }
  static M Not(M a) {
    return _mm256_xor_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(-1)));
  }
  static M NoLanes() { return _mm256_setzero_ps(); }
  static bool Any(M m) { return _mm256_movemask_ps(m) != 0; }
  static F Blend(F a, F b, M m) { return _mm256_blendv_ps(a, b, m); }  // m ? b : a
  static I BlendI(I a, I b, M m) {
    return _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), m));
  }
  static F Keep(M m, F a) { return _mm256_and_ps(m, a); }  // m ? a : 0
  static I ZeroI(M m, I a) {  // m ? 0 : a
    return _mm256_andnot_si256(_mm256_castps_si256(m), a);
  }
  static I MaskI(I a, M m) {  // m ? a : 0
    return _mm256_and_si256(a, _mm256_castps_si256(m));
  }
  static I AddI(I a, I b) { return _mm256_add_epi32(a, b); }
  static F ToF(I a) { return _mm256_cvtepi32_ps(a); }
  static I NearestInt(F v) { return NearestInt8(v); }
  static I Clamp(I v, int lo, int hi) { return Clamp8(v, lo, hi); }
  // dst[i] lane k = src[k * n + i], i < n.
  static void Transpose(const float* src, int n, F* dst) {
    const __m256i idx = _mm256_mullo_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(n));
    for (int i = 0; i < n; ++i) dst[i] = _mm256_i32gather_ps(src + i, idx, 4);
  }
  static void StoreI(int32_t* p, I v) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(p), v);
  }
};

#if defined(__AVX512F__)

// Sixteen lanes (AVX-512); the operations of Avx2Lanes, masks in k registers.
struct Avx512Lanes {
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;
  static constexpr int kLanes = 16;

  static F Set(float v) { return _mm512_set1_ps(v); }
  static I SetI(int v) { return _mm512_set1_epi32(v); }
  static F Zero() { return _mm512_setzero_ps(); }
  static F Load(const float* p) { return _mm512_load_ps(p); }
  static void Store(float* p, F v) { _mm512_store_ps(p, v); }
  static F Add(F a, F b) { return _mm512_add_ps(a, b); }
  static F Sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F Mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F Div(F a, F b) { return _mm512_div_ps(a, b); }
  static F Min(F a, F b) { return _mm512_min_ps(a, b); }  // a < b ? a : b
  static F Max(F a, F b) { return _mm512_max_ps(a, b); }  // a > b ? a : b
  static F Sqrt(F a) { return _mm512_sqrt_ps(a); }
  static F Abs(F a) { return _mm512_andnot_ps(_mm512_set1_ps(-0.0f), a); }
  static F Neg(F a) { return _mm512_xor_ps(a, _mm512_set1_ps(-0.0f)); }
  static M Gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M Lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M Le(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
  static M Eq(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static M Neq(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ); }
  static M NeI(I a, I b) { return _mm512_cmpneq_epi32_mask(a, b); }
  static M And(M a, M b) { return static_cast<M>(a & b); }
  static M Or(M a, M b) { return static_cast<M>(a | b); }
  static M Not(M a) { return static_cast<M>(~a); }
  static M NoLanes() { return 0; }
  static bool Any(M m) { return m != 0; }
  static F Blend(F a, F b, M m) { return _mm512_mask_blend_ps(m, a, b); }  // m ? b : a
  static I BlendI(I a, I b, M m) { return _mm512_mask_blend_epi32(m, a, b); }
  static F Keep(M m, F a) { return _mm512_maskz_mov_ps(m, a); }     // m ? a : 0
  static I ZeroI(M m, I a) { return _mm512_maskz_mov_epi32(Not(m), a); }  // m ? 0 : a
  static I MaskI(I a, M m) { return _mm512_maskz_mov_epi32(m, a); }  // m ? a : 0
  static I AddI(I a, I b) { return _mm512_add_epi32(a, b); }
  static F ToF(I a) { return _mm512_cvtepi32_ps(a); }
  // ggml's nearest_int, the same bit manipulation as NearestInt8.
  static I NearestInt(F v) {
    const F biased = _mm512_add_ps(v, _mm512_set1_ps(12582912.0f));
    return _mm512_sub_epi32(
        _mm512_and_si512(_mm512_castps_si512(biased), _mm512_set1_epi32(0x007fffff)),
        _mm512_set1_epi32(0x00400000));
  }
  static I Clamp(I v, int lo, int hi) {
    return _mm512_max_epi32(_mm512_set1_epi32(lo),
                            _mm512_min_epi32(_mm512_set1_epi32(hi), v));
  }
  // dst[i] lane k = src[k * n + i], i < n.
  static void Transpose(const float* src, int n, F* dst) {
    const __m512i idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(n));
    for (int i = 0; i < n; ++i) dst[i] = _mm512_i32gather_ps(idx, src + i, 4);
  }
  static void StoreI(int32_t* p, I v) { _mm512_store_si512(p, v); }
};

#endif  // __AVX512F__

}  // namespace
}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_GGML_LANES_H_

// AVX-512 paths of ggml's K-quants (compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512dq and AVX2; contract in internal/ggml_kquants.h): the
// lane-generic code of internal/ggml_kquants_lanes.h with sixteen lanes,
// one sub-block per lane: the 16 sub-blocks of a Q2_K/Q3_K/Q6_K
// super-block, or the 8 + 8 of two Q4_K/Q5_K super-blocks (an odd last one
// takes the eight-lane pass). Lane masks are AVX-512 mask registers.
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

#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/ggml_kquants_lanes.h"

namespace quantd::internal {
namespace {

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

// Q4_K/Q5_K: pairs of super-blocks, an odd last one on eight lanes.
template <bool kQ5>
void QuantizeQ45KPairs(const float* src, int64_t num_blocks,
                       const float* importance, uint8_t* dst) {
  constexpr int64_t kBytes =
      kQ5 ? sizeof(GgmlBlockQ5_K) : sizeof(GgmlBlockQ4_K);
  const int64_t pairs = num_blocks / 2 * 2;
  QuantizeQ45K<Avx512Lanes, kQ5>(src, pairs, importance, dst);
  if (pairs < num_blocks) {
    QuantizeQ45K<Avx2Lanes, kQ5>(
        src + pairs * kGgmlBlock256, 1,
        importance != nullptr ? importance + pairs * kGgmlBlock256 : nullptr,
        dst + pairs * kBytes);
  }
}

}  // namespace

void GgmlQuantizeQ2_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  QuantizeQ2K<Avx512Lanes>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ3_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  QuantizeQ3K<Avx512Lanes>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ4_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  QuantizeQ45KPairs<false>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ5_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  QuantizeQ45KPairs<true>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ6_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  QuantizeQ6K<Avx512Lanes>(src, num_blocks, importance, dst);
}

}  // namespace quantd::internal

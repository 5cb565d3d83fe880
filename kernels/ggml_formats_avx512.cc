// AVX-512 paths of the ggml block quantizers (compiled with -mavx512f
// -mavx512bw -mavx512vl -mavx512dq; contract in internal/ggml_kernels.h):
// one block is two zmm registers. Same operations as the scalar reference
// in ggml_formats.cc, so the bytes are identical; the reference's special
// cases (1/scale not finite; Q4_1's extremes being a signed zero) are
// handed to the reference.
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own
// _mm512_undefined_* operands (GCC bug 105593); silenced for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/ggml_formats.h"
#include "kernels/internal/ggml_kernels.h"

namespace quantd::internal {
namespace {

inline __m512 Abs(__m512 v) { return _mm512_abs_ps(v); }

// F16C's conversion rounds to nearest even like FloatToHalf (the tests
// check it on scales at the f16 limits and in its subnormal range).
inline void StoreHalf(float f, uint8_t* dst) {
  const uint16_t h = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
  std::memcpy(dst, &h, 2);
}

inline float SignedAbsMax(const float* x, __m512 v0, __m512 v1, float amax) {
  if (amax == 0.0f) return 0.0f;
  const __m512 amaxv = _mm512_set1_ps(amax);
  const uint32_t mask =
      static_cast<uint32_t>(_mm512_cmp_ps_mask(Abs(v0), amaxv, _CMP_EQ_OQ)) |
      static_cast<uint32_t>(_mm512_cmp_ps_mask(Abs(v1), amaxv, _CMP_EQ_OQ)) << 16;
  return x[std::countr_zero(mask)];
}

inline __m512i RoundHalfAwayToInt(__m512 x) {
  const __m512 t =
      _mm512_roundscale_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __mmask16 half = _mm512_cmp_ps_mask(Abs(_mm512_sub_ps(x, t)),
                                            _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 step = _mm512_or_ps(_mm512_set1_ps(1.0f),
                                   _mm512_and_ps(x, _mm512_set1_ps(-0.0f)));
  return _mm512_cvttps_epi32(_mm512_mask_add_ps(t, half, t, step));
}

inline __m512i TruncCodes(__m512 v, __m512 scale, __m512 offset, int max) {
  return _mm512_min_epi32(
      _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(v, scale), offset)),
      _mm512_set1_epi32(max));
}

inline void StoreNibbles(__m512i lo, __m512i hi, uint8_t* dst) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                   _mm512_cvtepi32_epi8(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4))));
}

}  // namespace

void GgmlQuantizeQ8_0Avx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ8_0);
    const __m512 v0 = _mm512_loadu_ps(x);
    const __m512 v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(Abs(v0), Abs(v1)));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!std::isfinite(id)) {
      GgmlQuantizeQ8_0Reference(x, 1, importance, y);
      continue;
    }
    StoreHalf(d, y);
    const __m512 idv = _mm512_set1_ps(id);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 2),
                     _mm512_cvtepi32_epi8(RoundHalfAwayToInt(_mm512_mul_ps(v0, idv))));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 18),
                     _mm512_cvtepi32_epi8(RoundHalfAwayToInt(_mm512_mul_ps(v1, idv))));
  }
}

void GgmlQuantizeQ4_0Avx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ4_0);
    const __m512 v0 = _mm512_loadu_ps(x);
    const __m512 v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(Abs(v0), Abs(v1)));
    const float d = SignedAbsMax(x, v0, v1, amax) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!std::isfinite(id)) {
      GgmlQuantizeQ4_0Reference(x, 1, importance, y);
      continue;
    }
    StoreHalf(d, y);
    const __m512 idv = _mm512_set1_ps(id);
    const __m512 offset = _mm512_set1_ps(8.5f);
    StoreNibbles(TruncCodes(v0, idv, offset, 15), TruncCodes(v1, idv, offset, 15),
                 y + 2);
  }
}

void GgmlQuantizeQ4_1Avx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ4_1);
    const __m512 v0 = _mm512_loadu_ps(x);
    const __m512 v1 = _mm512_loadu_ps(x + 16);
    const float min = _mm512_reduce_min_ps(_mm512_min_ps(v0, v1));
    const float max = _mm512_reduce_max_ps(_mm512_max_ps(v0, v1));
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (min == 0.0f || max == 0.0f || !std::isfinite(d) || !std::isfinite(id)) {
      GgmlQuantizeQ4_1Reference(x, 1, importance, y);
      continue;
    }
    StoreHalf(d, y);
    StoreHalf(min, y + 2);
    const __m512 idv = _mm512_set1_ps(id);
    const __m512 minv = _mm512_set1_ps(min);
    const __m512 offset = _mm512_set1_ps(0.5f);
    StoreNibbles(TruncCodes(_mm512_sub_ps(v0, minv), idv, offset, 15),
                 TruncCodes(_mm512_sub_ps(v1, minv), idv, offset, 15), y + 4);
  }
}

void GgmlQuantizeQ5_0Avx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ5_0);
    const __m512 v0 = _mm512_loadu_ps(x);
    const __m512 v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(Abs(v0), Abs(v1)));
    const float d = SignedAbsMax(x, v0, v1, amax) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!std::isfinite(id)) {
      GgmlQuantizeQ5_0Reference(x, 1, importance, y);
      continue;
    }
    StoreHalf(d, y);
    const __m512 idv = _mm512_set1_ps(id);
    const __m512 offset = _mm512_set1_ps(16.5f);
    const __m512i q0 = TruncCodes(v0, idv, offset, 31);
    const __m512i q1 = TruncCodes(v1, idv, offset, 31);
    const __m512i bit4 = _mm512_set1_epi32(0x10);
    const uint32_t qh =
        static_cast<uint32_t>(_mm512_test_epi32_mask(q0, bit4)) |
        static_cast<uint32_t>(_mm512_test_epi32_mask(q1, bit4)) << 16;
    std::memcpy(y + 2, &qh, 4);
    const __m512i low4 = _mm512_set1_epi32(0x0F);
    StoreNibbles(_mm512_and_si512(q0, low4), _mm512_and_si512(q1, low4), y + 6);
  }
}

}  // namespace quantd::internal

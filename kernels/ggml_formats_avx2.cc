// AVX2 paths of the ggml block quantizers (compiled with -mavx2 -mfma
// -mf16c; contract in internal/ggml_kernels.h). Each is the scalar
// reference of ggml_formats.cc with eight lanes: the same f32 operations
// in the same order, so the bytes are identical. Blocks where the
// reference relies on a special case (1/scale not finite; Q4_1's extremes
// being a signed zero) go to the reference itself.
#include <immintrin.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/ggml_formats.h"
#include "kernels/internal/ggml_kernels.h"

namespace quantd::internal {
namespace {

inline __m256 Abs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

inline float HorizontalMax(__m256 v) {
  __m256 m = _mm256_max_ps(v, _mm256_permute2f128_ps(v, v, 1));
  m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0x4E));
  m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0xB1));
  return _mm256_cvtss_f32(m);
}

inline float HorizontalMin(__m256 v) {
  __m256 m = _mm256_min_ps(v, _mm256_permute2f128_ps(v, v, 1));
  m = _mm256_min_ps(m, _mm256_shuffle_ps(m, m, 0x4E));
  m = _mm256_min_ps(m, _mm256_shuffle_ps(m, m, 0xB1));
  return _mm256_cvtss_f32(m);
}

// F16C's conversion rounds to nearest even like FloatToHalf (the tests
// check it on scales at the f16 limits and in its subnormal range).
inline void StoreHalf(float f, uint8_t* dst) {
  const uint16_t h = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
  std::memcpy(dst, &h, 2);
}

// The reference's signed max-magnitude element (first on ties, +0 if the
// block is all zeros) from the block's four vectors and their max |x|.
inline float SignedAbsMax(const float* x, const __m256* v, float amax) {
  if (amax == 0.0f) return 0.0f;
  const __m256 amaxv = _mm256_set1_ps(amax);
  uint32_t mask = 0;
  for (int k = 3; k >= 0; --k) {
    mask = (mask << 8) | static_cast<uint32_t>(_mm256_movemask_ps(
                             _mm256_cmp_ps(Abs(v[k]), amaxv, _CMP_EQ_OQ)));
  }
  return x[std::countr_zero(mask)];
}

// roundf on each lane: truncate, then step away from zero when the exact
// remainder is at least one half.
inline __m256i RoundHalfAwayToInt(__m256 x) {
  const __m256 t = _mm256_round_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = _mm256_sub_ps(x, t);
  const __m256 half = _mm256_cmp_ps(Abs(frac), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 step = _mm256_or_ps(
      _mm256_set1_ps(1.0f), _mm256_and_ps(x, _mm256_set1_ps(-0.0f)));
  return _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(half, step)));
}

// Bytes lo[j] | hi[j] << 4 for the 16 codes (each 0..15) in lo0/lo1 and
// hi0/hi1 (eight int32 each).
inline void StoreNibbles(__m256i lo0, __m256i lo1, __m256i hi0, __m256i hi1,
                         uint8_t* dst) {
  const __m256i b0 = _mm256_or_si256(lo0, _mm256_slli_epi32(hi0, 4));
  const __m256i b1 = _mm256_or_si256(lo1, _mm256_slli_epi32(hi1, 4));
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(b0, b1), 0xD8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                   _mm_packus_epi16(_mm256_castsi256_si128(w),
                                    _mm256_extracti128_si256(w, 1)));
}

}  // namespace

bool GgmlAllFiniteAvx2(const float* x, int64_t n) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  __m256i m = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    m = _mm256_max_epi32(
        m, _mm256_and_si256(
               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)),
               abs_mask));
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), m);
  int32_t max = 0;
  for (int32_t v : lanes) max = v > max ? v : max;
  for (; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return max < 0x7F800000;
}

void GgmlQuantizeQ8_0Avx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ8_0);
    __m256 v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(x + 8 * k);
    const float amax = HorizontalMax(_mm256_max_ps(
        _mm256_max_ps(Abs(v[0]), Abs(v[1])), _mm256_max_ps(Abs(v[2]), Abs(v[3]))));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!std::isfinite(id)) {
      GgmlQuantizeQ8_0Reference(x, 1, importance, y);
      continue;
    }
    StoreHalf(d, y);
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = RoundHalfAwayToInt(_mm256_mul_ps(v[k], idv));
    const __m256i w01 = _mm256_packs_epi32(q[0], q[1]);
    const __m256i w23 = _mm256_packs_epi32(q[2], q[3]);
    const __m256i bytes = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(w01, w23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + 2), bytes);
  }
}

void GgmlQuantizeQ4_0Avx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  if (importance != nullptr) {
    // ggml's imatrix search (make_qx_quants / make_qkx3_quants): scalar.
    GgmlQuantizeQ4_0Reference(src, num_blocks, importance, dst);
    return;
  }
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ4_0);
    __m256 v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(x + 8 * k);
    const float amax = HorizontalMax(_mm256_max_ps(
        _mm256_max_ps(Abs(v[0]), Abs(v[1])), _mm256_max_ps(Abs(v[2]), Abs(v[3]))));
    const float d = SignedAbsMax(x, v, amax) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!std::isfinite(id)) {
      GgmlQuantizeQ4_0Reference(x, 1, importance, y);
      continue;
    }
    StoreHalf(d, y);
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm256_min_epi32(
          _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(v[k], idv),
                                            _mm256_set1_ps(8.5f))),
          _mm256_set1_epi32(15));
    }
    StoreNibbles(q[0], q[1], q[2], q[3], y + 2);
  }
}

void GgmlQuantizeQ4_1Avx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  if (importance != nullptr) {
    // ggml's imatrix search (make_qx_quants / make_qkx3_quants): scalar.
    GgmlQuantizeQ4_1Reference(src, num_blocks, importance, dst);
    return;
  }
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ4_1);
    __m256 v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(x + 8 * k);
    const float min = HorizontalMin(
        _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
    const float max = HorizontalMax(
        _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    // Which zero the reference keeps as min or max depends on the order of
    // the elements; an overflowing range makes codes from NaN.
    if (min == 0.0f || max == 0.0f || !std::isfinite(d) || !std::isfinite(id)) {
      GgmlQuantizeQ4_1Reference(x, 1, importance, y);
      continue;
    }
    StoreHalf(d, y);
    StoreHalf(min, y + 2);
    const __m256 idv = _mm256_set1_ps(id);
    const __m256 minv = _mm256_set1_ps(min);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm256_min_epi32(
          _mm256_cvttps_epi32(_mm256_add_ps(
              _mm256_mul_ps(_mm256_sub_ps(v[k], minv), idv), _mm256_set1_ps(0.5f))),
          _mm256_set1_epi32(15));
    }
    StoreNibbles(q[0], q[1], q[2], q[3], y + 4);
  }
}

void GgmlQuantizeQ5_0Avx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  if (importance != nullptr) {
    // ggml's imatrix search (make_qx_quants / make_qkx3_quants): scalar.
    GgmlQuantizeQ5_0Reference(src, num_blocks, importance, dst);
    return;
  }
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ5_0);
    __m256 v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(x + 8 * k);
    const float amax = HorizontalMax(_mm256_max_ps(
        _mm256_max_ps(Abs(v[0]), Abs(v[1])), _mm256_max_ps(Abs(v[2]), Abs(v[3]))));
    const float d = SignedAbsMax(x, v, amax) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!std::isfinite(id)) {
      GgmlQuantizeQ5_0Reference(x, 1, importance, y);
      continue;
    }
    StoreHalf(d, y);
    const __m256 idv = _mm256_set1_ps(id);
    const __m256i low4 = _mm256_set1_epi32(0x0F);
    __m256i q[4];
    uint32_t qh = 0;
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm256_min_epi32(
          _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(v[k], idv),
                                            _mm256_set1_ps(16.5f))),
          _mm256_set1_epi32(31));
      qh |= static_cast<uint32_t>(_mm256_movemask_ps(
                _mm256_castsi256_ps(_mm256_slli_epi32(q[k], 27))))
            << (8 * k);
      q[k] = _mm256_and_si256(q[k], low4);
    }
    std::memcpy(y + 2, &qh, 4);
    StoreNibbles(q[0], q[1], q[2], q[3], y + 6);
  }
}

}  // namespace quantd::internal

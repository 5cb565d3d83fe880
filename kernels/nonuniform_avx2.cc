// AVX2 inner loops of the codebook formats (internal/nonuniform_kernels.h):
// 8 lanes; a table of up to 8 floats sits in one register (permutevar8x32),
// 16 in two blended on bit 3 of the index, larger ones are gathered.
// Results equal the scalar paths exactly: the search compares the same f32
// midpoints, and a lookup is a copy.
#include <immintrin.h>

#include <cstdint>

#include "kernels/internal/nonuniform_kernels.h"

namespace quantd::internal {
namespace {

// table[index] for 8 lanes; `lo`/`hi` hold table[0, 8) and [8, 16).
inline __m256 Lookup8(__m256i index, __m256 lo, __m256 hi, const float* table,
                      int bits) {
  if (bits <= 3) return _mm256_permutevar8x32_ps(lo, index);
  if (bits == 4) {
    const __m256 from_lo = _mm256_permutevar8x32_ps(lo, index);
    const __m256 from_hi = _mm256_permutevar8x32_ps(hi, index);
    // Bit 3 of the index moved to the sign bit selects the upper half.
    const __m256 select = _mm256_castsi256_ps(_mm256_slli_epi32(index, 28));
    return _mm256_blendv_ps(from_lo, from_hi, select);
  }
  return _mm256_i32gather_ps(table, index, 4);
}

// Loads table[0, 16) (as far as it exists; zero beyond) into two registers.
inline void LoadTable(const float* table, int entries, __m256& lo,
                      __m256& hi) {
  alignas(32) float padded[16] = {};
  for (int j = 0; j < entries && j < 16; ++j) padded[j] = table[j];
  lo = _mm256_load_ps(padded);
  hi = _mm256_load_ps(padded + 8);
}

}  // namespace

void AssignCodesAvx2(const float* x, int64_t n, const float* midpoints,
                     int bits, uint8_t* codes) {
  __m256 lo;
  __m256 hi;
  LoadTable(midpoints, 16, lo, hi);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    __m256i index = _mm256_setzero_si256();
    for (int step = 1 << (bits - 1); step > 0; step >>= 1) {
      const __m256i probe =
          _mm256_add_epi32(index, _mm256_set1_epi32(step - 1));
      const __m256 m = Lookup8(probe, lo, hi, midpoints, bits);
      const __m256i less =
          _mm256_castps_si256(_mm256_cmp_ps(m, v, _CMP_LT_OQ));
      index = _mm256_add_epi32(
          index, _mm256_and_si256(less, _mm256_set1_epi32(step)));
    }
    const __m128i words =
        _mm_packus_epi32(_mm256_castsi256_si128(index),
                         _mm256_extracti128_si256(index, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + i),
                     _mm_packus_epi16(words, words));
  }
  AssignCodesScalar(x + i, n - i, midpoints, bits, codes + i);
}

void LookupAvx2(const uint8_t* codes, int64_t n, const float* table, int bits,
                float* dst) {
  __m256 lo;
  __m256 hi;
  LoadTable(table, 1 << bits, lo, hi);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i index = _mm256_cvtepu8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)));
    _mm256_storeu_ps(dst + i, Lookup8(index, lo, hi, table, bits));
  }
  LookupScalar(codes + i, n - i, table, bits, dst + i);
}

}  // namespace quantd::internal

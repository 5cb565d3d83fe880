// AVX-512 inner loops of the codebook formats (internal/nonuniform_kernels.h):
// 16 lanes; a table of up to 16 floats sits in one register (permutexvar),
// 32 in two (permutex2var), larger ones are gathered. Results equal the
// scalar paths exactly: the search compares the same f32 midpoints, and a
// lookup is a copy.
//
// GCC 12 warns that the intrinsics' own _mm512_undefined_* placeholders are
// uninitialized, at header lines; silenced around the include only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "kernels/internal/nonuniform_kernels.h"

namespace quantd::internal {
namespace {

// table[index] for 16 lanes; `lo`/`hi` hold table[0, 16) and [16, 32).
inline __m512 Lookup16(__m512i index, __m512 lo, __m512 hi, const float* table,
                       int bits) {
  if (bits <= 4) return _mm512_permutexvar_ps(index, lo);
  if (bits == 5) return _mm512_permutex2var_ps(lo, index, hi);
  return _mm512_i32gather_ps(index, table, 4);
}

// Loads table[0, 32) (as far as it exists; zero beyond) into two registers.
inline void LoadTable(const float* table, int entries, __m512& lo,
                      __m512& hi) {
  const int in_lo = entries < 16 ? entries : 16;
  const int in_hi = entries > 16 ? (entries < 32 ? entries - 16 : 16) : 0;
  lo = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << in_lo) - 1), table);
  hi = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << in_hi) - 1),
                             table + 16);
}

}  // namespace

void AssignCodesAvx512(const float* x, int64_t n, const float* midpoints,
                       int bits, uint8_t* codes) {
  __m512 lo;
  __m512 hi;
  LoadTable(midpoints, kMaxMidpoints < 32 ? kMaxMidpoints : 32, lo, hi);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    __m512i index = _mm512_setzero_si512();
    for (int step = 1 << (bits - 1); step > 0; step >>= 1) {
      const __m512i probe =
          _mm512_add_epi32(index, _mm512_set1_epi32(step - 1));
      const __m512 m = Lookup16(probe, lo, hi, midpoints, bits);
      const __mmask16 less = _mm512_cmp_ps_mask(m, v, _CMP_LT_OQ);
      index = _mm512_mask_add_epi32(index, less, index,
                                    _mm512_set1_epi32(step));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i),
                     _mm512_cvtepi32_epi8(index));
  }
  AssignCodesScalar(x + i, n - i, midpoints, bits, codes + i);
}

void LookupAvx512(const uint8_t* codes, int64_t n, const float* table,
                  int bits, float* dst) {
  __m512 lo;
  __m512 hi;
  LoadTable(table, 1 << bits, lo, hi);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i index = _mm512_cvtepu8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i)));
    _mm512_storeu_ps(dst + i, Lookup16(index, lo, hi, table, bits));
  }
  LookupScalar(codes + i, n - i, table, bits, dst + i);
}

}  // namespace quantd::internal

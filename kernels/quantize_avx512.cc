// AVX-512 (F, BW, VL, DQ) kernels. Compiled with -mavx512*; only called when
// internal::CpuIsa() is kAvx512 (see isa_kernels.h).
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own
// _mm512_undefined_* pass-through operands (GCC bug 105593). The warning is
// reported at header lines, so silencing it around the include keeps it on
// for our code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>
#include <cstring>

#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/quantize_driver.h"

namespace quantd::internal {
namespace {

inline __mmask16 TailMask(int64_t n) {
  return static_cast<__mmask16>((1u << n) - 1);
}

// Horizontal reductions by hand: GCC 12's _mm512_reduce_* expand to
// _mm512_extracti64x4_epi64 with an undefined pass-through operand, which
// -Werror=uninitialized rejects.
inline int ReduceMaxEpi32(__m512i v) {
  v = _mm512_max_epi32(v, _mm512_shuffle_i64x2(v, v, 0x4E));
  v = _mm512_max_epi32(v, _mm512_shuffle_i64x2(v, v, 0xB1));
  __m128i m = _mm512_castsi512_si128(v);
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4E));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xB1));
  return _mm_cvtsi128_si32(m);
}

inline float ReduceMinPs(__m512 v) {
  v = _mm512_min_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  v = _mm512_min_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
  __m128 m = _mm512_castps512_ps128(v);
  m = _mm_min_ps(m, _mm_shuffle_ps(m, m, 0x4E));
  m = _mm_min_ps(m, _mm_shuffle_ps(m, m, 0xB1));
  return _mm_cvtss_f32(m);
}

inline float ReduceMaxPs(__m512 v) {
  v = _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  v = _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
  __m128 m = _mm512_castps512_ps128(v);
  m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0x4E));
  m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0xB1));
  return _mm_cvtss_f32(m);
}

struct Avx512Ops {
  // max |x| as the max of the sign-cleared bit patterns: for non-negative
  // floats integer order is float order, and Inf/NaN (>= 0x7F800000) are
  // above every finite value, so one pass yields amax and finiteness.
  static bool AbsMax(const float* x, int64_t n, float* amax) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
    __m512i m0 = _mm512_setzero_si512(), m1 = m0, m2 = m0, m3 = m0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
      m0 = _mm512_max_epi32(m0, _mm512_and_si512(_mm512_loadu_si512(x + i), abs_mask));
      m1 = _mm512_max_epi32(m1, _mm512_and_si512(_mm512_loadu_si512(x + i + 16), abs_mask));
      m2 = _mm512_max_epi32(m2, _mm512_and_si512(_mm512_loadu_si512(x + i + 32), abs_mask));
      m3 = _mm512_max_epi32(m3, _mm512_and_si512(_mm512_loadu_si512(x + i + 48), abs_mask));
    }
    for (; i + 16 <= n; i += 16) {
      m0 = _mm512_max_epi32(m0, _mm512_and_si512(_mm512_loadu_si512(x + i), abs_mask));
    }
    if (i < n) {
      const __m512i v = _mm512_maskz_loadu_epi32(TailMask(n - i), x + i);
      m1 = _mm512_max_epi32(m1, _mm512_and_si512(v, abs_mask));
    }
    m0 = _mm512_max_epi32(_mm512_max_epi32(m0, m1), _mm512_max_epi32(m2, m3));
    const int bits = ReduceMaxEpi32(m0);
    if (bits >= 0x7F800000) return false;
    std::memcpy(amax, &bits, sizeof(float));
    return true;
  }

  static bool MinMax(const float* x, int64_t n, float* lo, float* hi) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
    __m512 vlo = _mm512_setzero_ps(), vhi = vlo;  // min(x,0), max(x,0)
    __m512i vabs = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m512 v = _mm512_loadu_ps(x + i);
      vlo = _mm512_min_ps(vlo, v);
      vhi = _mm512_max_ps(vhi, v);
      vabs = _mm512_max_epi32(vabs, _mm512_and_si512(_mm512_castps_si512(v), abs_mask));
    }
    if (i < n) {
      const __m512 v = _mm512_maskz_loadu_ps(TailMask(n - i), x + i);  // pads 0
      vlo = _mm512_min_ps(vlo, v);
      vhi = _mm512_max_ps(vhi, v);
      vabs = _mm512_max_epi32(vabs, _mm512_and_si512(_mm512_castps_si512(v), abs_mask));
    }
    if (ReduceMaxEpi32(vabs) >= 0x7F800000) return false;
    *lo = ReduceMinPs(vlo);
    *hi = ReduceMaxPs(vhi);
    return true;
  }

  static void CodesSym(const float* x, int64_t n, float inv, int bits,
                       uint8_t* codes) {
    const int qmax = (1 << (bits - 1)) - 1;
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i vmin = _mm512_set1_epi32(-(qmax + 1));
    const __m512i vmax = _mm512_set1_epi32(qmax);
    const __m512i vmask = _mm512_set1_epi32((1 << bits) - 1);
    // cvtps_epi32 rounds with MXCSR (default: nearest even) like nearbyint.
    auto code = [&](__m512 v) {
      __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v, vinv));
      q = _mm512_min_epi32(_mm512_max_epi32(q, vmin), vmax);
      return _mm512_and_si512(q, vmask);  // two's complement field
    };
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
      const __m128i a = _mm512_cvtepi32_epi8(code(_mm512_loadu_ps(x + i)));
      const __m128i b = _mm512_cvtepi32_epi8(code(_mm512_loadu_ps(x + i + 16)));
      const __m128i c = _mm512_cvtepi32_epi8(code(_mm512_loadu_ps(x + i + 32)));
      const __m128i d = _mm512_cvtepi32_epi8(code(_mm512_loadu_ps(x + i + 48)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), a);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i + 16), b);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i + 32), c);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i + 48), d);
    }
    for (; i + 16 <= n; i += 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i),
                       _mm512_cvtepi32_epi8(code(_mm512_loadu_ps(x + i))));
    }
    if (i < n) {
      const __mmask16 m = TailMask(n - i);
      _mm512_mask_cvtepi32_storeu_epi8(codes + i, m,
                                       code(_mm512_maskz_loadu_ps(m, x + i)));
    }
  }

  static void CodesAsym(const float* x, int64_t n, float inv, int zp, int bits,
                        uint8_t* codes) {
    const int qmax = (1 << bits) - 1;
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i vzp = _mm512_set1_epi32(zp);
    const __m512i vzero = _mm512_setzero_si512();
    const __m512i vmax = _mm512_set1_epi32(qmax);
    auto code = [&](__m512 v) {
      __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, vinv)), vzp);
      return _mm512_min_epi32(_mm512_max_epi32(q, vzero), vmax);
    };
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      const __m128i a = _mm512_cvtepi32_epi8(code(_mm512_loadu_ps(x + i)));
      const __m128i b = _mm512_cvtepi32_epi8(code(_mm512_loadu_ps(x + i + 16)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), a);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i + 16), b);
    }
    for (; i + 16 <= n; i += 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i),
                       _mm512_cvtepi32_epi8(code(_mm512_loadu_ps(x + i))));
    }
    if (i < n) {
      const __mmask16 m = TailMask(n - i);
      _mm512_mask_cvtepi32_storeu_epi8(codes + i, m,
                                       code(_mm512_maskz_loadu_ps(m, x + i)));
    }
  }

  static void Pack(const uint8_t* codes, int64_t n, int bits, uint8_t* dst) {
    int64_t i = 0;
    if (bits == 4) {
      // u16 lane = a | b<<8 (a, b < 16); (w | w>>4) & 0xFF = a | b<<4.
      const __m512i lo_byte = _mm512_set1_epi16(0x00FF);
      for (; i + 64 <= n; i += 64) {
        const __m512i w = _mm512_loadu_si512(codes + i);
        const __m512i p = _mm512_and_si512(
            _mm512_or_si512(w, _mm512_srli_epi16(w, 4)), lo_byte);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i / 2),
                            _mm512_cvtepi16_epi8(p));
      }
    } else if (bits == 2) {
      // u32 lane = a | b<<8 | c<<16 | d<<24 (each < 4):
      // t = w | w>>6 puts b at bit 2 (and d at bit 18); t | t>>12 puts c at
      // bit 4 and d at bit 6. The low byte is a | b<<2 | c<<4 | d<<6.
      for (; i + 64 <= n; i += 64) {
        const __m512i w = _mm512_loadu_si512(codes + i);
        __m512i t = _mm512_or_si512(w, _mm512_srli_epi32(w, 6));
        t = _mm512_or_si512(t, _mm512_srli_epi32(t, 12));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i / 4),
                         _mm512_cvtepi32_epi8(t));
      }
    }
    PackCodesBmi2(codes + i, n - i, bits, dst + i / 8 * bits);
  }
};

}  // namespace

int64_t QuantizeIntAvx512(const float* src, QuantizedTensor& dst) {
  return QuantizeIntDriver<Avx512Ops>(src, dst);
}

int64_t RowScalesSymInt8(const float* src, int64_t rows, int64_t row_length,
                         float* scales, float* inv_scales) {
  // Only the AVX-512 build has this helper; the oneDNN path needs AVX-512
  // anyway for its own fast reorder, and callers check CpuIsa().
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * row_length;
    float amax = 0;
    if (!Avx512Ops::AbsMax(x, row_length, &amax)) {
      return r * row_length + FirstNonFinite(x, row_length);
    }
    const GroupParams p = SymParams(amax, 8);
    scales[r] = p.scale;
    inv_scales[r] = p.inv;
  }
  return -1;
}

namespace {
// Converts, then checks the max of |bits|: one pass, then a scalar scan only
// if something is non-finite.
inline int64_t CheckConverted(__m512i vabs, const float* dst, size_t n) {
  if (ReduceMaxEpi32(vabs) < 0x7F800000) return -1;
  return FirstNonFinite(dst, static_cast<int64_t>(n));
}
}  // namespace

int64_t ConvertF16Avx512(const uint16_t* src, size_t n, float* dst) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  __m512i vabs = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_ps(dst + i, v);
    vabs = _mm512_max_epi32(vabs, _mm512_and_si512(_mm512_castps_si512(v), abs_mask));
  }
  if (i < n) {
    const __mmask16 m = TailMask(static_cast<int64_t>(n - i));
    const __m512 v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i));
    _mm512_mask_storeu_ps(dst + i, m, v);
    vabs = _mm512_max_epi32(vabs, _mm512_and_si512(_mm512_castps_si512(v), abs_mask));
  }
  return CheckConverted(vabs, dst, n);
}

int64_t ConvertBF16Avx512(const uint16_t* src, size_t n, float* dst) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  __m512i vabs = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_slli_epi32(
        _mm512_cvtepu16_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))),
        16);
    _mm512_storeu_si512(dst + i, v);
    vabs = _mm512_max_epi32(vabs, _mm512_and_si512(v, abs_mask));
  }
  if (i < n) {
    const __mmask16 m = TailMask(static_cast<int64_t>(n - i));
    const __m512i v = _mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i)), 16);
    _mm512_mask_storeu_epi32(dst + i, m, v);
    vabs = _mm512_max_epi32(vabs, _mm512_and_si512(v, abs_mask));
  }
  return CheckConverted(vabs, dst, n);
}

int64_t ConvertF32Avx512(const float* src, size_t n, float* dst) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  __m512i vabs = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_loadu_si512(src + i);
    _mm512_storeu_si512(dst + i, v);
    vabs = _mm512_max_epi32(vabs, _mm512_and_si512(v, abs_mask));
  }
  if (i < n) {
    const __mmask16 m = TailMask(static_cast<int64_t>(n - i));
    const __m512i v = _mm512_maskz_loadu_epi32(m, src + i);
    _mm512_mask_storeu_epi32(dst + i, m, v);
    vabs = _mm512_max_epi32(vabs, _mm512_and_si512(v, abs_mask));
  }
  return CheckConverted(vabs, dst, n);
}

}  // namespace quantd::internal

// AVX-512 (F, BW, VL, DQ) kernels. Compiled with -mavx512*; only called when
// internal::CpuIsa() is kAvx512 (see isa_kernels.h).
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own
// _mm512_undefined_* pass-through operands (GCC bug 105593). The warning is
// reported at header lines, so silencing it around the include keeps it on
// for our code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/internal/dequantize_driver.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/metrics_internal.h"
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

  // kDivide: x / inv (full range: `inv` is the scale) instead of x * inv.
  template <bool kDivide = false>
  static void CodesSym(const float* x, int64_t n, float inv, int bits,
                       uint8_t* codes) {
    const int qmax = (1 << (bits - 1)) - 1;
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i vmin = _mm512_set1_epi32(-(qmax + 1));
    const __m512i vmax = _mm512_set1_epi32(qmax);
    const __m512i vmask = _mm512_set1_epi32((1 << bits) - 1);
    // cvtps_epi32 rounds with MXCSR (default: nearest even) like nearbyint.
    auto code = [&](__m512 v) {
      __m512i q = _mm512_cvtps_epi32(kDivide ? _mm512_div_ps(v, vinv)
                                             : _mm512_mul_ps(v, vinv));
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

// ---------------------------------------------------------------------------
// Dequantization (see internal/dequantize_driver.h).
// ---------------------------------------------------------------------------
namespace {

struct Avx512DequantizeOps {
  static constexpr int64_t kLanes = 16;

  static void Unpack(const uint8_t* packed, int64_t n, int bits,
                     uint8_t* codes) {
    int64_t i = 0;
    if (bits == 4) {
      // u16 lane = byte b; (b | b<<4) & 0x0F0F puts the low nibble in the
      // low byte and the high nibble in the high byte: codes 2k, 2k+1.
      const __m512i nibbles = _mm512_set1_epi16(0x0F0F);
      for (; i + 64 <= n; i += 64) {
        const __m512i w = _mm512_cvtepu8_epi16(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + i / 2)));
        _mm512_storeu_si512(
            codes + i,
            _mm512_and_si512(_mm512_or_si512(w, _mm512_slli_epi16(w, 4)), nibbles));
      }
    }
    UnpackCodesBmi2(packed + i / 8 * bits, n - i, bits, codes + i);
  }

  // scale * (float)(q - zero_point) of 16 code bytes; symmetric fields are
  // sign-extended from `bits` by a shift pair (count in `shift`).
  template <bool kSymmetric>
  static __m512 Values(__m128i bytes, __m128i shift, __m512i zero_point,
                       __m512 scale) {
    __m512i q = _mm512_cvtepu8_epi32(bytes);
    if (kSymmetric) q = _mm512_sra_epi32(_mm512_sll_epi32(q, shift), shift);
    q = _mm512_sub_epi32(q, zero_point);
    return _mm512_mul_ps(scale, _mm512_cvtepi32_ps(q));
  }

  template <bool kSymmetric, typename Sink>
  static void Run(const uint8_t* codes, int64_t begin, int64_t end,
                  float scale, int zero_point, int bits, Sink& sink) {
    const __m128i shift = _mm_cvtsi32_si128(32 - bits);
    const __m512 vscale = _mm512_set1_ps(scale);
    const __m512i vzp = _mm512_set1_epi32(zero_point);
    int64_t i = begin;
    for (; i + 16 <= end; i += 16) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i));
      sink.Put(i, Values<kSymmetric>(b, shift, vzp, vscale));
    }
    if (i < end) {
      const __m128i b = _mm_maskz_loadu_epi8(TailMask(end - i), codes + i);
      sink.PutTail(i, Values<kSymmetric>(b, shift, vzp, vscale), end - i);
    }
  }

  template <bool kSymmetric, typename Sink>
  static void RunPerElement(const uint8_t* codes, int64_t n,
                            const float* scales, const int32_t* zero_points,
                            int bits, Sink& sink) {
    const __m128i shift = _mm_cvtsi32_si128(32 - bits);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i));
      sink.Put(i, Values<kSymmetric>(b, shift, _mm512_loadu_si512(zero_points + i),
                                     _mm512_loadu_ps(scales + i)));
    }
    if (i < n) {
      const __mmask16 m = TailMask(n - i);
      const __m128i b = _mm_maskz_loadu_epi8(m, codes + i);
      sink.PutTail(i,
                   Values<kSymmetric>(b, shift,
                                      _mm512_maskz_loadu_epi32(m, zero_points + i),
                                      _mm512_maskz_loadu_ps(m, scales + i)),
                   n - i);
    }
  }
};

class Avx512StoreSink {
 public:
  explicit Avx512StoreSink(float* dst) : dst_(dst) {}
  void BeginChunk(int64_t first) { out_ = dst_ + first; }
  void Put(int64_t i, __m512 v) { _mm512_storeu_ps(out_ + i, v); }
  void PutTail(int64_t i, __m512 v, int64_t r) {
    _mm512_mask_storeu_ps(out_ + i, TailMask(r), v);
  }
  void EndChunk(int64_t) {}

 private:
  float* dst_;
  float* out_ = nullptr;
};

inline double ReduceAddPd(__m512d v) {
  v = _mm512_add_pd(v, _mm512_shuffle_f64x2(v, v, 0x4E));
  v = _mm512_add_pd(v, _mm512_shuffle_f64x2(v, v, 0xB1));
  const __m128d m = _mm512_castpd512_pd128(v);
  return _mm_cvtsd_f64(_mm_add_sd(m, _mm_unpackhi_pd(m, m)));
}

inline double ReduceMaxPd(__m512d v) {
  v = _mm512_max_pd(v, _mm512_shuffle_f64x2(v, v, 0x4E));
  v = _mm512_max_pd(v, _mm512_shuffle_f64x2(v, v, 0xB1));
  const __m128d m = _mm512_castpd512_pd128(v);
  return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
}

// Adds the metric sums of one chunk, x[0, n) against y[0, n) (n <= 4096),
// to `sums`: per-element double terms as in the reference, accumulated in
// two sets of 8 double lanes (low and high half of each 16-float vector),
// reduced in a fixed order at the end of the chunk.
//
// w^2, w_hat^2 and w*w_hat use FMA: the product of two floats is exact in
// double, so fma(x, y, acc) == acc + x*y bit for bit. (w - w_hat)^2 keeps a
// separate multiply: the double difference may have more than 26 bits.
void AccumulateChunkAvx512(const float* x_ptr, const float* y_ptr, int64_t n,
                           MetricSums& sums) {
  const __m512d zero = _mm512_setzero_pd();
  __m512d err2[2] = {zero, zero}, w2[2] = {zero, zero};
  __m512d what2[2] = {zero, zero}, dot[2] = {zero, zero};
  __m512d max_abs[2] = {zero, zero};
  auto half = [&](int k, __m256 xs, __m256 ys) {
    const __m512d x = _mm512_cvtps_pd(xs);
    const __m512d y = _mm512_cvtps_pd(ys);
    const __m512d d = _mm512_sub_pd(x, y);
    err2[k] = _mm512_add_pd(err2[k], _mm512_mul_pd(d, d));
    w2[k] = _mm512_fmadd_pd(x, x, w2[k]);
    what2[k] = _mm512_fmadd_pd(y, y, what2[k]);
    dot[k] = _mm512_fmadd_pd(x, y, dot[k]);
    max_abs[k] = _mm512_max_pd(max_abs[k], _mm512_abs_pd(d));
  };
  auto accumulate = [&](__m512 x, __m512 y) {
    half(0, _mm512_castps512_ps256(x), _mm512_castps512_ps256(y));
    half(1, _mm512_castps512_ps256(_mm512_shuffle_f32x4(x, x, 0xEE)),
         _mm512_castps512_ps256(_mm512_shuffle_f32x4(y, y, 0xEE)));
  };
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    accumulate(_mm512_loadu_ps(x_ptr + i), _mm512_loadu_ps(y_ptr + i));
  }
  if (i < n) {  // lanes past the end count as 0 - 0
    const __mmask16 m = TailMask(n - i);
    accumulate(_mm512_maskz_loadu_ps(m, x_ptr + i),
               _mm512_maskz_loadu_ps(m, y_ptr + i));
  }
  sums.err2 += ReduceAddPd(_mm512_add_pd(err2[0], err2[1]));
  sums.w2 += ReduceAddPd(_mm512_add_pd(w2[0], w2[1]));
  sums.what2 += ReduceAddPd(_mm512_add_pd(what2[0], what2[1]));
  sums.dot += ReduceAddPd(_mm512_add_pd(dot[0], dot[1]));
  sums.max_abs = std::max(sums.max_abs,
                          ReduceMaxPd(_mm512_max_pd(max_abs[0], max_abs[1])));
}

// Dequantizes each chunk into w_hat (if given) or an L1 buffer, then
// accumulates the chunk while it is still in cache.
class Avx512MeasureSink {
 public:
  Avx512MeasureSink(const float* src, float* w_hat)
      : src_(src), w_hat_(w_hat) {}

  void BeginChunk(int64_t first) {
    first_ = first;
    out_ = w_hat_ != nullptr ? w_hat_ + first : buffer_;
  }
  void Put(int64_t i, __m512 v) { _mm512_storeu_ps(out_ + i, v); }
  void PutTail(int64_t i, __m512 v, int64_t r) {
    _mm512_mask_storeu_ps(out_ + i, TailMask(r), v);
  }
  void EndChunk(int64_t n) {
    AccumulateChunkAvx512(src_ + first_, out_, n, sums_);
  }
  const MetricSums& sums() const { return sums_; }

 private:
  const float* src_;
  float* w_hat_;
  int64_t first_ = 0;
  float* out_ = nullptr;
  MetricSums sums_;
  alignas(64) float buffer_[kDequantizeChunk];
};


}  // namespace

void DequantizeIntAvx512(const QuantizedTensor& src, float* dst) {
  Avx512StoreSink sink(dst);
  DequantizeIntDriver<Avx512DequantizeOps>(src, sink);
}

ErrorMetrics DequantizeAndMeasureAvx512(const QuantizedTensor& q,
                                        const float* src, float* w_hat) {
  Avx512MeasureSink sink(src, w_hat);
  DequantizeIntDriver<Avx512DequantizeOps>(q, sink);
  ErrorMetrics m =
      FinishMetrics(sink.sums(), static_cast<size_t>(q.layout.num_elements));
  m.bits_per_weight = q.layout.BitsPerWeight();
  return m;
}

void AccumulateMetricsAvx512(const float* w, const float* w_hat, int64_t n,
                             MetricSums& sums) {
  AccumulateChunkAvx512(w, w_hat, n, sums);
}

}  // namespace quantd::internal

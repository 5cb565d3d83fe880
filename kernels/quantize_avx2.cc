// AVX2 (+FMA, F16C, BMI2) kernels. Compiled with -mavx2 -mfma -mf16c -mbmi2;
// only called when internal::CpuIsa() is at least kAvx2 (see isa_kernels.h).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/convert.h"
#include "kernels/internal/dequantize_driver.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/metrics_internal.h"
#include "kernels/internal/quantize_driver.h"

namespace quantd::internal {
namespace {

inline int HorizontalMaxEpi32(__m256i v) {
  __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v),
                            _mm256_extracti128_si256(v, 1));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4E));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xB1));
  return _mm_cvtsi128_si32(m);
}

inline float HorizontalMin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_shuffle_ps(m, m, 0x4E));
  m = _mm_min_ps(m, _mm_shuffle_ps(m, m, 0xB1));
  return _mm_cvtss_f32(m);
}

inline float HorizontalMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0x4E));
  m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0xB1));
  return _mm_cvtss_f32(m);
}

inline uint32_t AbsBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u & 0x7FFFFFFFu;
}

// Packs 4 vectors of 8 int32 codes (each in [-128, 127]) into 32 bytes in
// element order (packs_* interleave 128-bit lanes; the permute undoes it).
inline __m256i PackTo32Bytes(__m256i q0, __m256i q1, __m256i q2, __m256i q3) {
  const __m256i a = _mm256_packs_epi32(q0, q1);
  const __m256i b = _mm256_packs_epi32(q2, q3);
  const __m256i c = _mm256_packs_epi16(a, b);
  return _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

struct Avx2Ops {
  // See Avx512Ops::AbsMax: integer max of sign-cleared bits.
  static bool AbsMax(const float* x, int64_t n, float* amax) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
    __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;
    int64_t i = 0;
    auto load = [&](int64_t k) {
      return _mm256_and_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k)), abs_mask);
    };
    for (; i + 32 <= n; i += 32) {
      m0 = _mm256_max_epi32(m0, load(i));
      m1 = _mm256_max_epi32(m1, load(i + 8));
      m2 = _mm256_max_epi32(m2, load(i + 16));
      m3 = _mm256_max_epi32(m3, load(i + 24));
    }
    for (; i + 8 <= n; i += 8) m0 = _mm256_max_epi32(m0, load(i));
    m0 = _mm256_max_epi32(_mm256_max_epi32(m0, m1), _mm256_max_epi32(m2, m3));
    uint32_t bits = static_cast<uint32_t>(HorizontalMaxEpi32(m0));
    for (; i < n; ++i) bits = std::max(bits, AbsBits(x[i]));
    if (bits >= 0x7F800000u) return false;
    std::memcpy(amax, &bits, sizeof(float));
    return true;
  }

  static bool MinMax(const float* x, int64_t n, float* lo, float* hi) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
    __m256 vlo = _mm256_setzero_ps(), vhi = vlo;
    __m256i vabs = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      vlo = _mm256_min_ps(vlo, v);
      vhi = _mm256_max_ps(vhi, v);
      vabs = _mm256_max_epi32(vabs, _mm256_and_si256(_mm256_castps_si256(v), abs_mask));
    }
    uint32_t bits = static_cast<uint32_t>(HorizontalMaxEpi32(vabs));
    float l = HorizontalMin(vlo), h = HorizontalMax(vhi);
    for (; i < n; ++i) {
      bits = std::max(bits, AbsBits(x[i]));
      l = std::min(l, x[i]);
      h = std::max(h, x[i]);
    }
    if (bits >= 0x7F800000u) return false;
    *lo = l;
    *hi = h;
    return true;
  }

  // kDivide: x / inv (full range: `inv` is the scale) instead of x * inv.
  template <bool kDivide = false>
  static void CodesSym(const float* x, int64_t n, float inv, int bits,
                       uint8_t* codes) {
    const int qmax = (1 << (bits - 1)) - 1;
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i vmin = _mm256_set1_epi32(-(qmax + 1));
    const __m256i vmax = _mm256_set1_epi32(qmax);
    const __m256i vmask = _mm256_set1_epi32(bits == 8 ? -1 : (1 << bits) - 1);
    auto code = [&](int64_t k) {
      const __m256 v = _mm256_loadu_ps(x + k);
      __m256i q = _mm256_cvtps_epi32(kDivide ? _mm256_div_ps(v, vinv)
                                             : _mm256_mul_ps(v, vinv));
      q = _mm256_min_epi32(_mm256_max_epi32(q, vmin), vmax);
      return _mm256_and_si256(q, vmask);  // int8: keep the sign for packs
    };
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i),
                          PackTo32Bytes(code(i), code(i + 8), code(i + 16),
                                        code(i + 24)));
    }
    const unsigned mask = (1u << bits) - 1;
    for (; i < n; ++i) {
      int q = static_cast<int>(std::nearbyint(kDivide ? x[i] / inv : x[i] * inv));
      q = std::clamp(q, -(qmax + 1), qmax);
      codes[i] = static_cast<uint8_t>(static_cast<unsigned>(q) & mask);
    }
  }

  static void CodesAsym(const float* x, int64_t n, float inv, int zp, int bits,
                        uint8_t* codes) {
    const int qmax = (1 << bits) - 1;
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i vzp = _mm256_set1_epi32(zp);
    const __m256i vmax = _mm256_set1_epi32(qmax);
    // Codes are in [0, 255]; bias by -128 so the signed packs keep them, and
    // flip the top bit back afterwards.
    const __m256i vbias = _mm256_set1_epi32(128);
    auto code = [&](int64_t k) {
      __m256i q = _mm256_add_epi32(
          _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), vinv)), vzp);
      q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_setzero_si256()), vmax);
      return _mm256_sub_epi32(q, vbias);
    };
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      const __m256i p = PackTo32Bytes(code(i), code(i + 8), code(i + 16),
                                      code(i + 24));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i),
                          _mm256_xor_si256(p, flip));
    }
    for (; i < n; ++i) {
      int q = static_cast<int>(std::nearbyint(x[i] * inv)) + zp;
      codes[i] = static_cast<uint8_t>(std::clamp(q, 0, qmax));
    }
  }

  static void Pack(const uint8_t* codes, int64_t n, int bits, uint8_t* dst) {
    int64_t i = 0;
    if (bits == 4) {
      // See Avx512Ops::Pack; packus_epi16 works per 128-bit lane, so pack
      // two vectors and fix the lane order with a permute.
      const __m256i lo_byte = _mm256_set1_epi16(0x00FF);
      for (; i + 64 <= n; i += 64) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i + 32));
        const __m256i p0 = _mm256_and_si256(_mm256_or_si256(w0, _mm256_srli_epi16(w0, 4)), lo_byte);
        const __m256i p1 = _mm256_and_si256(_mm256_or_si256(w1, _mm256_srli_epi16(w1, 4)), lo_byte);
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi16(p0, p1), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i / 2), p);
      }
    }
    PackCodesBmi2(codes + i, n - i, bits, dst + i / 8 * bits);
  }
};

template <int kBits>
void PackBmi2Fixed(const uint8_t* codes, int64_t n, uint8_t* dst) {
  // pext gathers the low kBits of each of 8 bytes into 8*kBits contiguous
  // bits, LSB first: exactly the stream layout of 8 codes.
  constexpr uint64_t kMask = 0x0101010101010101ull * ((1u << kBits) - 1);
  for (int64_t i = 0; i < n; i += 8) {
    uint64_t word;
    std::memcpy(&word, codes + i, 8);
    const uint64_t packed = _pext_u64(word, kMask);
    std::memcpy(dst + i / 8 * kBits, &packed, kBits);
  }
}

}  // namespace

void PackCodesBmi2(const uint8_t* codes, int64_t n, int bits, uint8_t* dst) {
  switch (bits) {
    case 2: PackBmi2Fixed<2>(codes, n, dst); break;
    case 3: PackBmi2Fixed<3>(codes, n, dst); break;
    case 4: PackBmi2Fixed<4>(codes, n, dst); break;
    case 5: PackBmi2Fixed<5>(codes, n, dst); break;
    case 6: PackBmi2Fixed<6>(codes, n, dst); break;
    case 7: PackBmi2Fixed<7>(codes, n, dst); break;
    default:
      if (n > 0) std::memcpy(dst, codes, static_cast<size_t>(n));
      break;
  }
}

template <int kBits>
void UnpackBmi2Fixed(const uint8_t* packed, int64_t n, uint8_t* codes) {
  // pdep spreads 8*kBits contiguous bits, LSB first, over the low kBits of
  // each of 8 bytes: the inverse of PackBmi2Fixed.
  constexpr uint64_t kMask = 0x0101010101010101ull * ((1u << kBits) - 1);
  for (int64_t i = 0; i < n; i += 8) {
    uint64_t word = 0;
    std::memcpy(&word, packed + i / 8 * kBits, kBits);
    const uint64_t spread = _pdep_u64(word, kMask);
    std::memcpy(codes + i, &spread, 8);
  }
}

void UnpackCodesBmi2(const uint8_t* src, int64_t n, int bits, uint8_t* codes) {
  switch (bits) {
    case 2: UnpackBmi2Fixed<2>(src, n, codes); break;
    case 3: UnpackBmi2Fixed<3>(src, n, codes); break;
    case 4: UnpackBmi2Fixed<4>(src, n, codes); break;
    case 5: UnpackBmi2Fixed<5>(src, n, codes); break;
    case 6: UnpackBmi2Fixed<6>(src, n, codes); break;
    case 7: UnpackBmi2Fixed<7>(src, n, codes); break;
    default:
      if (n > 0) std::memcpy(codes, src, static_cast<size_t>(n));
      break;
  }
}

int64_t QuantizeIntAvx2(const float* src, QuantizedTensor& dst) {
  return QuantizeIntDriver<Avx2Ops>(src, dst);
}

namespace {
inline int64_t CheckConverted(__m256i vabs, const float* dst, size_t n,
                              size_t tail_start) {
  uint32_t bits = static_cast<uint32_t>(HorizontalMaxEpi32(vabs));
  for (size_t i = tail_start; i < n; ++i) bits = std::max(bits, AbsBits(dst[i]));
  if (bits < 0x7F800000u) return -1;
  return FirstNonFinite(dst, static_cast<int64_t>(n));
}

inline uint16_t LoadU16(const uint16_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
}  // namespace

int64_t ConvertF16Avx2(const uint16_t* src, size_t n, float* dst) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  __m256i vabs = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_ps(dst + i, v);
    vabs = _mm256_max_epi32(vabs, _mm256_and_si256(_mm256_castps_si256(v), abs_mask));
  }
  const size_t tail = i;
  for (; i < n; ++i) dst[i] = HalfToFloat(LoadU16(src + i));
  return CheckConverted(vabs, dst, n, tail);
}

int64_t ConvertBF16Avx2(const uint16_t* src, size_t n, float* dst) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  __m256i vabs = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_slli_epi32(
        _mm256_cvtepu16_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))),
        16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), v);
    vabs = _mm256_max_epi32(vabs, _mm256_and_si256(v, abs_mask));
  }
  const size_t tail = i;
  for (; i < n; ++i) dst[i] = BFloat16ToFloat(LoadU16(src + i));
  return CheckConverted(vabs, dst, n, tail);
}

int64_t ConvertF32Avx2(const float* src, size_t n, float* dst) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  __m256i vabs = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), v);
    vabs = _mm256_max_epi32(vabs, _mm256_and_si256(v, abs_mask));
  }
  const size_t tail = i;
  for (; i < n; ++i) std::memcpy(dst + i, src + i, sizeof(float));
  return CheckConverted(vabs, dst, n, tail);
}

// ---------------------------------------------------------------------------
// Dequantization (see internal/dequantize_driver.h).
// ---------------------------------------------------------------------------
namespace {

// Lanes [0, r) set, for maskload/maskstore.
inline __m256i TailMask8(int64_t r) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(r)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The first r (< 8) code bytes, zero padded, without reading past them.
inline __m128i LoadTailBytes(const uint8_t* p, int64_t r) {
  uint64_t word = 0;
  std::memcpy(&word, p, static_cast<size_t>(r));
  return _mm_cvtsi64_si128(static_cast<long long>(word));
}

struct Avx2DequantizeOps {
  static constexpr int64_t kLanes = 8;

  static void Unpack(const uint8_t* packed, int64_t n, int bits,
                     uint8_t* codes) {
    int64_t i = 0;
    if (bits == 4) {
      // See Avx512DequantizeOps::Unpack.
      const __m256i nibbles = _mm256_set1_epi16(0x0F0F);
      for (; i + 32 <= n; i += 32) {
        const __m256i w = _mm256_cvtepu8_epi16(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + i / 2)));
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(codes + i),
            _mm256_and_si256(_mm256_or_si256(w, _mm256_slli_epi16(w, 4)), nibbles));
      }
    }
    UnpackCodesBmi2(packed + i / 8 * bits, n - i, bits, codes + i);
  }

  // scale * (float)(q - zero_point) of the low 8 code bytes.
  template <bool kSymmetric>
  static __m256 Values(__m128i bytes, __m128i shift, __m256i zero_point,
                       __m256 scale) {
    __m256i q = _mm256_cvtepu8_epi32(bytes);
    if (kSymmetric) q = _mm256_sra_epi32(_mm256_sll_epi32(q, shift), shift);
    q = _mm256_sub_epi32(q, zero_point);
    return _mm256_mul_ps(scale, _mm256_cvtepi32_ps(q));
  }

  static __m128i Load8(const uint8_t* p) {
    return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  }

  template <bool kSymmetric, typename Sink>
  static void Run(const uint8_t* codes, int64_t begin, int64_t end,
                  float scale, int zero_point, int bits, Sink& sink) {
    const __m128i shift = _mm_cvtsi32_si128(32 - bits);
    const __m256 vscale = _mm256_set1_ps(scale);
    const __m256i vzp = _mm256_set1_epi32(zero_point);
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
      sink.Put(i, Values<kSymmetric>(Load8(codes + i), shift, vzp, vscale));
    }
    if (i < end) {
      sink.PutTail(i,
                   Values<kSymmetric>(LoadTailBytes(codes + i, end - i), shift,
                                      vzp, vscale),
                   end - i);
    }
  }

  template <bool kSymmetric, typename Sink>
  static void RunPerElement(const uint8_t* codes, int64_t n,
                            const float* scales, const int32_t* zero_points,
                            int bits, Sink& sink) {
    const __m128i shift = _mm_cvtsi32_si128(32 - bits);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      sink.Put(i, Values<kSymmetric>(
                      Load8(codes + i), shift,
                      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zero_points + i)),
                      _mm256_loadu_ps(scales + i)));
    }
    if (i < n) {
      const __m256i m = TailMask8(n - i);
      sink.PutTail(i,
                   Values<kSymmetric>(LoadTailBytes(codes + i, n - i), shift,
                                      _mm256_maskload_epi32(zero_points + i, m),
                                      _mm256_maskload_ps(scales + i, m)),
                   n - i);
    }
  }
};

class Avx2StoreSink {
 public:
  explicit Avx2StoreSink(float* dst) : dst_(dst) {}
  void BeginChunk(int64_t first) { out_ = dst_ + first; }
  void Put(int64_t i, __m256 v) { _mm256_storeu_ps(out_ + i, v); }
  void PutTail(int64_t i, __m256 v, int64_t r) {
    _mm256_maskstore_ps(out_ + i, TailMask8(r), v);
  }
  void EndChunk(int64_t) {}

 private:
  float* dst_;
  float* out_ = nullptr;
};

inline double ReduceAddPd(__m256d v) {
  __m128d m = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(m, _mm_unpackhi_pd(m, m)));
}

inline double ReduceMaxPd(__m256d v) {
  __m128d m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
}

// See AccumulateChunkAvx512: two sets of 4 double lanes (low and high half
// of each 8-float vector), FMA only for the exact float*float products.
void AccumulateChunkAvx2(const float* x_ptr, const float* y_ptr, int64_t n,
                         MetricSums& sums) {
  const __m256d zero = _mm256_setzero_pd();
  const __m256d abs_mask =
      _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFF));
  __m256d err2[2] = {zero, zero}, w2[2] = {zero, zero};
  __m256d what2[2] = {zero, zero}, dot[2] = {zero, zero};
  __m256d max_abs[2] = {zero, zero};
  auto half = [&](int k, __m128 xs, __m128 ys) {
    const __m256d x = _mm256_cvtps_pd(xs);
    const __m256d y = _mm256_cvtps_pd(ys);
    const __m256d d = _mm256_sub_pd(x, y);
    err2[k] = _mm256_add_pd(err2[k], _mm256_mul_pd(d, d));
    w2[k] = _mm256_fmadd_pd(x, x, w2[k]);
    what2[k] = _mm256_fmadd_pd(y, y, what2[k]);
    dot[k] = _mm256_fmadd_pd(x, y, dot[k]);
    max_abs[k] = _mm256_max_pd(max_abs[k], _mm256_and_pd(d, abs_mask));
  };
  auto accumulate = [&](__m256 x, __m256 y) {
    half(0, _mm256_castps256_ps128(x), _mm256_castps256_ps128(y));
    half(1, _mm256_extractf128_ps(x, 1), _mm256_extractf128_ps(y, 1));
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    accumulate(_mm256_loadu_ps(x_ptr + i), _mm256_loadu_ps(y_ptr + i));
  }
  if (i < n) {  // lanes past the end count as 0 - 0
    const __m256i m = TailMask8(n - i);
    accumulate(_mm256_maskload_ps(x_ptr + i, m), _mm256_maskload_ps(y_ptr + i, m));
  }
  sums.err2 += ReduceAddPd(_mm256_add_pd(err2[0], err2[1]));
  sums.w2 += ReduceAddPd(_mm256_add_pd(w2[0], w2[1]));
  sums.what2 += ReduceAddPd(_mm256_add_pd(what2[0], what2[1]));
  sums.dot += ReduceAddPd(_mm256_add_pd(dot[0], dot[1]));
  sums.max_abs = std::max(sums.max_abs,
                          ReduceMaxPd(_mm256_max_pd(max_abs[0], max_abs[1])));
}

// See Avx512MeasureSink.
class Avx2MeasureSink {
 public:
  Avx2MeasureSink(const float* src, float* w_hat) : src_(src), w_hat_(w_hat) {}

  void BeginChunk(int64_t first) {
    first_ = first;
    out_ = w_hat_ != nullptr ? w_hat_ + first : buffer_;
  }
  void Put(int64_t i, __m256 v) { _mm256_storeu_ps(out_ + i, v); }
  void PutTail(int64_t i, __m256 v, int64_t r) {
    _mm256_maskstore_ps(out_ + i, TailMask8(r), v);
  }
  void EndChunk(int64_t n) { AccumulateChunkAvx2(src_ + first_, out_, n, sums_); }
  const MetricSums& sums() const { return sums_; }

 private:
  const float* src_;
  float* w_hat_;
  int64_t first_ = 0;
  float* out_ = nullptr;
  MetricSums sums_;
  alignas(32) float buffer_[kDequantizeChunk];
};

}  // namespace

void DequantizeIntAvx2(const QuantizedTensor& src, float* dst) {
  Avx2StoreSink sink(dst);
  DequantizeIntDriver<Avx2DequantizeOps>(src, sink);
}

ErrorMetrics DequantizeAndMeasureAvx2(const QuantizedTensor& q,
                                      const float* src, float* w_hat) {
  Avx2MeasureSink sink(src, w_hat);
  DequantizeIntDriver<Avx2DequantizeOps>(q, sink);
  ErrorMetrics m =
      FinishMetrics(sink.sums(), static_cast<size_t>(q.layout.num_elements));
  m.bits_per_weight = q.layout.BitsPerWeight();
  return m;
}

void AccumulateMetricsAvx2(const float* w, const float* w_hat, int64_t n,
                           MetricSums& sums) {
  AccumulateChunkAvx2(w, w_hat, n, sums);
}

}  // namespace quantd::internal

// AVX-512 element loops of the low-precision float formats (compiled with
// -mavx512f -mavx512bw -mavx512vl -mavx512dq; contract in
// internal/float_kernels.h). 16 elements per step within a scale group; a
// group's last < 16 elements go through the scalar element code.
//
// The encoder is the reference's arithmetic on 16 lanes: the binade comes
// from the f32 exponent field instead of frexp, the quantum 2^(binade - m)
// is built from bits, a / quantum is an exact power-of-two scaling, and
// vrndscaleps rounds half to even as nearbyint does. Decoding looks the code
// up (a gather from the 256-entry table, or vpermps on the 16-entry one) and
// does the same single multiply.
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own
// _mm512_undefined_* operands (GCC bug 105593); silenced for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/internal/float_kernels.h"

namespace quantd::internal {
namespace {

constexpr int kLanes = 16;

void GroupAmax(const float* src, int64_t num_groups, int64_t group_size,
               float* amax) {
  for (int64_t g = 0; g < num_groups; ++g) {
    const float* x = src + g * group_size;
    __m512 m = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + kLanes <= group_size; j += kLanes) {
      m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
    }
    if (j < group_size) {
      const auto mask = static_cast<__mmask16>((1u << (group_size - j)) - 1);
      m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, x + j)));
    }
    amax[g] = _mm512_reduce_max_ps(m);
  }
}

// Codes (one per i32 lane) of 16 finite values; EncodeMiniFloat per lane.
inline __m512i Encode16(__m512 v, const MiniFloatSpec& spec) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i sign = _mm512_srli_epi32(
      _mm512_and_si512(bits, _mm512_set1_epi32(INT32_MIN)),
      static_cast<unsigned>(31 - spec.exp_bits - spec.man_bits));
  const __m512 a = _mm512_min_ps(_mm512_abs_ps(v), _mm512_set1_ps(spec.max_value));
  const __m512i exponent = _mm512_sub_epi32(
      _mm512_srli_epi32(_mm512_castps_si512(a), 23), _mm512_set1_epi32(127));
  const __m512i binade = _mm512_max_epi32(exponent, _mm512_set1_epi32(spec.emin));
  const __m512 inv_quantum = _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_sub_epi32(_mm512_set1_epi32(spec.man_bits + 127), binade), 23));
  const __m512 k = _mm512_roundscale_ps(
      _mm512_mul_ps(a, inv_quantum), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512i magnitude = _mm512_add_epi32(
      _mm512_cvttps_epi32(k),
      _mm512_slli_epi32(_mm512_sub_epi32(binade, _mm512_set1_epi32(spec.emin)),
                        static_cast<unsigned>(spec.man_bits)));
  return _mm512_or_si512(magnitude, sign);
}

// Stores 16 codes (i32 lanes < 256, < 16 for 4 bits) of elements i..i+15.
inline void Store16(__m512i codes, int64_t i, int bits, NibbleOrder order,
                    uint8_t* dst) {
  const __m128i bytes = _mm512_cvtepi32_epi8(codes);
  if (bits == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), bytes);
    return;
  }
  // Pairs (2k, 2k + 1) are the low and high byte of u16 lane k.
  const __m128i first = _mm_and_si128(bytes, _mm_set1_epi16(0x00FF));
  const __m128i second = _mm_srli_epi16(bytes, 8);
  const __m128i packed =
      order == NibbleOrder::kLowFirst
          ? _mm_or_si128(first, _mm_slli_epi16(second, 4))
          : _mm_or_si128(_mm_slli_epi16(first, 4), second);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + i / 2),
                   _mm_packus_epi16(packed, packed));
}

void StoreScalar(uint8_t code, int64_t i, int bits, NibbleOrder order,
                 uint8_t* dst) {
  if (bits == 8) {
    dst[i] = code;
    return;
  }
  const bool first = (i & 1) == 0;
  const int shift = (first == (order == NibbleOrder::kLowFirst)) ? 0 : 4;
  uint8_t& byte = dst[i >> 1];
  if (first) byte = 0;
  byte = static_cast<uint8_t>(byte | (code << shift));
}

void EncodeMiniFloatLoop(const float* src, int64_t n, int64_t group_size,
                         const float* divisors, const MiniFloatSpec& spec,
                         int bits, uint8_t* dst) {
  for (int64_t begin = 0, g = 0; begin < n; begin += group_size, ++g) {
    const float d = divisors[g];
    const int64_t end = begin + group_size;
    int64_t i = begin;
    if (d == 0.0f) {
      for (; i < end; ++i) StoreScalar(0, i, bits, NibbleOrder::kLowFirst, dst);
      continue;
    }
    const __m512 dv = _mm512_set1_ps(d);
    for (; i + kLanes <= end; i += kLanes) {
      const __m512 v = _mm512_div_ps(_mm512_loadu_ps(src + i), dv);
      Store16(Encode16(v, spec), i, bits, NibbleOrder::kLowFirst, dst);
    }
    for (; i < end; ++i) {
      StoreScalar(EncodeMiniFloat(src[i] / d, spec), i, bits,
                  NibbleOrder::kLowFirst, dst);
    }
  }
}

void EncodeNf4Loop(const float* src, int64_t n, int64_t group_size,
                   const float* inv_absmax, const float* midpoints,
                   uint8_t* dst) {
  __m512 mid[15];
  for (int k = 0; k < 15; ++k) mid[k] = _mm512_set1_ps(midpoints[k]);
  for (int64_t begin = 0, g = 0; begin < n; begin += group_size, ++g) {
    const float inv = inv_absmax[g];
    const __m512 iv = _mm512_set1_ps(inv);
    const int64_t end = begin + group_size;
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) {
      const __m512 s = _mm512_min_ps(
          _mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(src + i), iv),
                        _mm512_set1_ps(-1.0f)),
          _mm512_set1_ps(1.0f));
      __m512i count = _mm512_setzero_si512();
      for (int k = 0; k < 15; ++k) {
        const __mmask16 below = _mm512_cmp_ps_mask(mid[k], s, _CMP_LT_OQ);
        count = _mm512_mask_add_epi32(count, below, count, _mm512_set1_epi32(1));
      }
      Store16(count, i, 4, NibbleOrder::kHighFirst, dst);
    }
    for (; i < end; ++i) {
      const float s = std::min(std::max(src[i] * inv, -1.0f), 1.0f);
      uint8_t code = 0;
      for (int k = 0; k < 15; ++k) {
        code = static_cast<uint8_t>(code + (midpoints[k] < s ? 1 : 0));
      }
      StoreScalar(code, i, 4, NibbleOrder::kHighFirst, dst);
    }
  }
}

uint8_t LoadScalar(const uint8_t* src, int64_t i, int bits, NibbleOrder order) {
  if (bits == 8) return src[i];
  const bool first = (i & 1) == 0;
  const int shift = (first == (order == NibbleOrder::kLowFirst)) ? 0 : 4;
  return static_cast<uint8_t>((src[i >> 1] >> shift) & 0x0F);
}

// The 16 codes of elements i..i+15 in i32 lanes.
inline __m512i Load16(const uint8_t* src, int64_t i, int bits,
                      NibbleOrder order) {
  if (bits == 8) {
    return _mm512_cvtepu8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
  }
  const __m128i bytes =
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i / 2));
  const __m128i low = _mm_and_si128(bytes, _mm_set1_epi8(0x0F));
  const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0F));
  const __m128i ordered = order == NibbleOrder::kLowFirst
                              ? _mm_unpacklo_epi8(low, high)
                              : _mm_unpacklo_epi8(high, low);
  return _mm512_cvtepu8_epi32(ordered);
}

void DecodeLoop(const uint8_t* src, int64_t n, int64_t group_size,
                const float* scales, const float* table, int bits,
                NibbleOrder order, float* dst) {
  const __m512 table16 = bits == 4 ? _mm512_loadu_ps(table) : _mm512_setzero_ps();
  for (int64_t begin = 0, g = 0; begin < n; begin += group_size, ++g) {
    const float scale = scales[g];
    const __m512 sv = _mm512_set1_ps(scale);
    const int64_t end = begin + group_size;
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) {
      const __m512i codes = Load16(src, i, bits, order);
      const __m512 values = bits == 8 ? _mm512_i32gather_ps(codes, table, 4)
                                      : _mm512_permutexvar_ps(codes, table16);
      _mm512_storeu_ps(dst + i, _mm512_mul_ps(values, sv));
    }
    for (; i < end; ++i) dst[i] = table[LoadScalar(src, i, bits, order)] * scale;
  }
}

}  // namespace

const FloatKernels& FloatKernelsAvx512() {
  static constexpr FloatKernels kKernels = {GroupAmax, EncodeMiniFloatLoop,
                                            EncodeNf4Loop, DecodeLoop};
  return kKernels;
}

}  // namespace quantd::internal

// AVX2 element loops of the low-precision float formats (compiled with
// -mavx2 -mfma -mf16c -mbmi2; contract in internal/float_kernels.h). The
// same arithmetic as the AVX-512 file on 8 lanes: binade from the exponent
// field, an exact power-of-two scaling, vroundps half to even. Decoding
// gathers from the 256-entry table or selects from the 16-entry one with
// two vpermps and a blend on bit 3 of the code.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/internal/float_kernels.h"

namespace quantd::internal {
namespace {

constexpr int kLanes = 8;

inline __m256 Abs(__m256 v) {
  return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MAX)));
}

void GroupAmax(const float* src, int64_t num_groups, int64_t group_size,
               float* amax) {
  for (int64_t g = 0; g < num_groups; ++g) {
    const float* x = src + g * group_size;
    __m256 m = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + kLanes <= group_size; j += kLanes) {
      m = _mm256_max_ps(m, Abs(_mm256_loadu_ps(x + j)));
    }
    alignas(32) float lanes[kLanes];
    _mm256_store_ps(lanes, m);
    float r = 0.0f;
    for (float v : lanes) r = std::max(r, v);
    for (; j < group_size; ++j) r = std::max(r, std::fabs(x[j]));
    amax[g] = r;
  }
}

inline __m256i Encode8(__m256 v, const MiniFloatSpec& spec) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i sign = _mm256_srli_epi32(
      _mm256_and_si256(bits, _mm256_set1_epi32(INT32_MIN)),
      31 - spec.exp_bits - spec.man_bits);
  const __m256 a = _mm256_min_ps(Abs(v), _mm256_set1_ps(spec.max_value));
  const __m256i exponent = _mm256_sub_epi32(
      _mm256_srli_epi32(_mm256_castps_si256(a), 23), _mm256_set1_epi32(127));
  const __m256i binade = _mm256_max_epi32(exponent, _mm256_set1_epi32(spec.emin));
  const __m256 inv_quantum = _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_sub_epi32(_mm256_set1_epi32(spec.man_bits + 127), binade), 23));
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(a, inv_quantum),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256i magnitude = _mm256_add_epi32(
      _mm256_cvttps_epi32(k),
      _mm256_slli_epi32(_mm256_sub_epi32(binade, _mm256_set1_epi32(spec.emin)),
                        spec.man_bits));
  return _mm256_or_si256(magnitude, sign);
}

// 8 i32 lanes (< 256) to 8 bytes in the low half of an xmm.
inline __m128i Narrow8(__m256i codes) {
  const __m256i w = _mm256_packus_epi32(codes, codes);  // c0-3 c0-3 | c4-7 c4-7
  const __m256i b = _mm256_packus_epi16(w, w);
  return _mm_unpacklo_epi32(_mm256_castsi256_si128(b),
                            _mm256_extracti128_si256(b, 1));
}

inline void Store8(__m256i codes, int64_t i, int bits, NibbleOrder order,
                   uint8_t* dst) {
  const __m128i bytes = Narrow8(codes);
  if (bits == 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + i), bytes);
    return;
  }
  const __m128i first = _mm_and_si128(bytes, _mm_set1_epi16(0x00FF));
  const __m128i second = _mm_srli_epi16(bytes, 8);
  const __m128i packed =
      order == NibbleOrder::kLowFirst
          ? _mm_or_si128(first, _mm_slli_epi16(second, 4))
          : _mm_or_si128(_mm_slli_epi16(first, 4), second);
  const int32_t four = _mm_cvtsi128_si32(_mm_packus_epi16(packed, packed));
  std::memcpy(dst + i / 2, &four, 4);
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
    const __m256 dv = _mm256_set1_ps(d);
    for (; i + kLanes <= end; i += kLanes) {
      const __m256 v = _mm256_div_ps(_mm256_loadu_ps(src + i), dv);
      Store8(Encode8(v, spec), i, bits, NibbleOrder::kLowFirst, dst);
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
  for (int64_t begin = 0, g = 0; begin < n; begin += group_size, ++g) {
    const float inv = inv_absmax[g];
    const __m256 iv = _mm256_set1_ps(inv);
    const int64_t end = begin + group_size;
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) {
      const __m256 s = _mm256_min_ps(
          _mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(src + i), iv),
                        _mm256_set1_ps(-1.0f)),
          _mm256_set1_ps(1.0f));
      __m256i count = _mm256_setzero_si256();
      for (int k = 0; k < 15; ++k) {
        const __m256 below =
            _mm256_cmp_ps(_mm256_set1_ps(midpoints[k]), s, _CMP_LT_OQ);
        count = _mm256_sub_epi32(count, _mm256_castps_si256(below));
      }
      Store8(count, i, 4, NibbleOrder::kHighFirst, dst);
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

inline __m256i Load8(const uint8_t* src, int64_t i, int bits,
                     NibbleOrder order) {
  if (bits == 8) {
    return _mm256_cvtepu8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i)));
  }
  int32_t four = 0;
  std::memcpy(&four, src + i / 2, 4);
  const __m128i bytes = _mm_cvtsi32_si128(four);
  const __m128i low = _mm_and_si128(bytes, _mm_set1_epi8(0x0F));
  const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0F));
  const __m128i ordered = order == NibbleOrder::kLowFirst
                              ? _mm_unpacklo_epi8(low, high)
                              : _mm_unpacklo_epi8(high, low);
  return _mm256_cvtepu8_epi32(ordered);
}

void DecodeLoop(const uint8_t* src, int64_t n, int64_t group_size,
                const float* scales, const float* table, int bits,
                NibbleOrder order, float* dst) {
  const __m256 table_low = _mm256_loadu_ps(table);
  const __m256 table_high = bits == 4 ? _mm256_loadu_ps(table + 8) : table_low;
  for (int64_t begin = 0, g = 0; begin < n; begin += group_size, ++g) {
    const float scale = scales[g];
    const __m256 sv = _mm256_set1_ps(scale);
    const int64_t end = begin + group_size;
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) {
      const __m256i codes = Load8(src, i, bits, order);
      __m256 values;
      if (bits == 8) {
        values = _mm256_i32gather_ps(table, codes, 4);
      } else {
        // Bit 3 of the code moved to the sign bit selects the upper half.
        values = _mm256_blendv_ps(
            _mm256_permutevar8x32_ps(table_low, codes),
            _mm256_permutevar8x32_ps(table_high, codes),
            _mm256_castsi256_ps(_mm256_slli_epi32(codes, 28)));
      }
      _mm256_storeu_ps(dst + i, _mm256_mul_ps(values, sv));
    }
    for (; i < end; ++i) dst[i] = table[LoadScalar(src, i, bits, order)] * scale;
  }
}

}  // namespace

const FloatKernels& FloatKernelsAvx2() {
  static constexpr FloatKernels kKernels = {GroupAmax, EncodeMiniFloatLoop,
                                            EncodeNf4Loop, DecodeLoop};
  return kKernels;
}

}  // namespace quantd::internal

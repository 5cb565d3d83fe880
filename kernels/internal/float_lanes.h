// Internal: the vector element loops of the low-precision float formats
// (the FloatKernels table of internal/float_kernels.h), written once over a
// lane type of internal/simd_lanes.h. float_formats_avx2.cc instantiates
// them with simd::Avx2 (8 lanes), float_formats_avx512.cc with
// simd::Avx512 (16):
//
//   const FloatKernels& FloatKernelsAvx2() {
//     static constexpr FloatKernels kKernels = FloatKernelsFor<simd::Avx2>();
//     return kKernels;
//   }
//
// kLanes elements per step within a scale group; a group's last < kLanes
// elements go through the scalar element code. The encoder is the
// reference's arithmetic per lane: the binade comes from the f32 exponent
// field instead of frexp, the quantum 2^(binade - m) is built from bits,
// a / quantum is an exact power-of-two scaling, and the rounding is half to
// even as nearbyint's. Decoding looks the code up (a gather from the
// 256-entry table, a permute of the 16-entry one) and does the same single
// multiply.
//
// Internal linkage, as in simd_lanes.h.
#ifndef QUANTD_KERNELS_INTERNAL_FLOAT_LANES_H_
#define QUANTD_KERNELS_INTERNAL_FLOAT_LANES_H_

#include <algorithm>
#include <cstdint>

#include "kernels/internal/float_kernels.h"
#include "kernels/internal/simd_lanes.h"

namespace quantd::internal {
namespace {  // NOLINT: per-ISA copies on purpose, see above.

template <typename V>
void GroupAmax(const float* src, int64_t num_groups, int64_t group_size,
               float* amax) {
  for (int64_t g = 0; g < num_groups; ++g) {
    const float* x = src + g * group_size;
    typename V::F m = V::ZeroF();
    int64_t j = 0;
    for (; j + V::kLanes <= group_size; j += V::kLanes) {
      m = V::MaxF(m, V::AbsF(V::LoadF(x + j)));
    }
    if (j < group_size) {  // |0| changes no max
      m = V::MaxF(m, V::AbsF(V::LoadTailF(x + j, group_size - j)));
    }
    amax[g] = V::ReduceMaxF(m);
  }
}

// Codes (one per i32 lane) of kLanes finite values; EncodeMiniFloat per lane.
template <typename V>
typename V::I EncodeLanes(typename V::F v, const MiniFloatSpec& spec) {
  using F = typename V::F;
  using I = typename V::I;
  const I sign = V::Srli32(V::AndI(V::CastI(v), V::SetI(INT32_MIN)),
                           31 - spec.exp_bits - spec.man_bits);
  const F a = V::MinF(V::AbsF(v), V::SetF(spec.max_value));
  const I exponent = V::SubI(V::Srli32(V::CastI(a), 23), V::SetI(127));
  const I binade = V::MaxI(exponent, V::SetI(spec.emin));
  const F inv_quantum =
      V::CastF(V::Slli32(V::SubI(V::SetI(spec.man_bits + 127), binade), 23));
  const F k = V::RoundF(V::MulF(a, inv_quantum));
  const I magnitude = V::AddI(
      V::TruncToI(k), V::Slli32(V::SubI(binade, V::SetI(spec.emin)), spec.man_bits));
  return V::OrI(magnitude, sign);
}

// Stores kLanes codes (i32 lanes < 256, < 16 for 4 bits) of elements
// i..i+kLanes-1 (i even).
template <typename V>
void StoreLanes(typename V::I codes, int64_t i, int bits, NibbleOrder order,
                uint8_t* dst) {
  if (bits == 8) {
    V::StoreBytes(dst + i, codes);
    return;
  }
  // Pairs (2k, 2k + 1) are the low and high byte of u16 lane k.
  const __m128i bytes = V::NarrowBytes(codes);
  const __m128i first = _mm_and_si128(bytes, _mm_set1_epi16(0x00FF));
  const __m128i second = _mm_srli_epi16(bytes, 8);
  const __m128i packed =
      order == NibbleOrder::kLowFirst
          ? _mm_or_si128(first, _mm_slli_epi16(second, 4))
          : _mm_or_si128(_mm_slli_epi16(first, 4), second);
  V::StoreNibbleBytes(dst + i / 2, _mm_packus_epi16(packed, packed));
}

inline void StoreScalar(uint8_t code, int64_t i, int bits, NibbleOrder order,
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

template <typename V>
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
    const typename V::F dv = V::SetF(d);
    for (; i + V::kLanes <= end; i += V::kLanes) {
      const typename V::F v = V::DivF(V::LoadF(src + i), dv);
      StoreLanes<V>(EncodeLanes<V>(v, spec), i, bits, NibbleOrder::kLowFirst, dst);
    }
    for (; i < end; ++i) {
      StoreScalar(EncodeMiniFloat(src[i] / d, spec), i, bits,
                  NibbleOrder::kLowFirst, dst);
    }
  }
}

template <typename V>
void EncodeNf4Loop(const float* src, int64_t n, int64_t group_size,
                   const float* inv_absmax, const float* midpoints,
                   uint8_t* dst) {
  using F = typename V::F;
  F mid[15];
  for (int k = 0; k < 15; ++k) mid[k] = V::SetF(midpoints[k]);
  const F minus_one = V::SetF(-1.0f);
  const F one = V::SetF(1.0f);
  for (int64_t begin = 0, g = 0; begin < n; begin += group_size, ++g) {
    const float inv = inv_absmax[g];
    const F iv = V::SetF(inv);
    const int64_t end = begin + group_size;
    int64_t i = begin;
    for (; i + V::kLanes <= end; i += V::kLanes) {
      const F s = V::MinF(V::MaxF(V::MulF(V::LoadF(src + i), iv), minus_one), one);
      typename V::I count = V::ZeroI();
      for (int k = 0; k < 15; ++k) count = V::CountLt(count, mid[k], s);
      StoreLanes<V>(count, i, 4, NibbleOrder::kHighFirst, dst);
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

inline uint8_t LoadScalar(const uint8_t* src, int64_t i, int bits,
                          NibbleOrder order) {
  if (bits == 8) return src[i];
  const bool first = (i & 1) == 0;
  const int shift = (first == (order == NibbleOrder::kLowFirst)) ? 0 : 4;
  return static_cast<uint8_t>((src[i >> 1] >> shift) & 0x0F);
}

// The kLanes codes of elements i..i+kLanes-1 (i even) in i32 lanes.
template <typename V>
typename V::I LoadLanes(const uint8_t* src, int64_t i, int bits,
                        NibbleOrder order) {
  if (bits == 8) return V::WidenBytes(V::LoadBytes(src + i));
  const __m128i bytes = V::LoadNibbleBytes(src + i / 2);
  const __m128i low = _mm_and_si128(bytes, _mm_set1_epi8(0x0F));
  const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0F));
  const __m128i ordered = order == NibbleOrder::kLowFirst
                              ? _mm_unpacklo_epi8(low, high)
                              : _mm_unpacklo_epi8(high, low);
  return V::WidenBytes(ordered);
}

template <typename V>
void DecodeLoop(const uint8_t* src, int64_t n, int64_t group_size,
                const float* scales, const float* table, int bits,
                NibbleOrder order, float* dst) {
  using F = typename V::F;
  // The 16-entry table in one register (16 lanes) or two (8).
  constexpr bool kOneRegister = V::kLanes >= 16;
  const F table_low = V::LoadF(table);
  const F table_high = kOneRegister ? table_low : V::LoadF(table + V::kLanes);
  for (int64_t begin = 0, g = 0; begin < n; begin += group_size, ++g) {
    const float scale = scales[g];
    const F sv = V::SetF(scale);
    const int64_t end = begin + group_size;
    int64_t i = begin;
    for (; i + V::kLanes <= end; i += V::kLanes) {
      const typename V::I codes = LoadLanes<V>(src, i, bits, order);
      F values;
      if (bits == 8) {
        values = V::Gather(table, codes);
      } else if constexpr (kOneRegister) {
        values = V::Lookup1(table_low, codes);
      } else {
        values = V::Lookup2(table_low, table_high, codes);
      }
      V::StoreF(dst + i, V::MulF(values, sv));
    }
    for (; i < end; ++i) dst[i] = table[LoadScalar(src, i, bits, order)] * scale;
  }
}

template <typename V>
constexpr FloatKernels FloatKernelsFor() {
  return {GroupAmax<V>, EncodeMiniFloatLoop<V>, EncodeNf4Loop<V>, DecodeLoop<V>};
}

}  // namespace
}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_FLOAT_LANES_H_

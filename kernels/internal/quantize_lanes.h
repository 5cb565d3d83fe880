// Internal: the vector paths of the int2..int8 quantizer, dequantizer, fused
// error metrics and dtype conversion (isa_kernels.h), written once over a
// lane type of internal/simd_lanes.h. quantize_avx2.cc instantiates them with
// simd::Avx2, quantize_avx512.cc with simd::Avx512:
//
//   int64_t QuantizeIntAvx2(const float* src, QuantizedTensor& dst) {
//     return QuantizeIntDriver<QuantizeOps<simd::Avx2>>(src, dst);
//   }
//
// Every result equals the scalar reference in quantize.cc bit for bit:
// codes are cvtps (nearest even, as nearbyint) of the same f32 product or
// quotient, clamped; values are one int->float conversion and one f32
// multiply (-ffp-contract=off); the metric sums add per-element double
// terms in a fixed order. A group's last elements (fewer than a vector) go
// through the masked tail operations with zero padding, which changes no
// max, min (of x and 0) or code.
//
// Internal linkage, as in simd_lanes.h.
#ifndef QUANTD_KERNELS_INTERNAL_QUANTIZE_LANES_H_
#define QUANTD_KERNELS_INTERNAL_QUANTIZE_LANES_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/internal/dequantize_driver.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/metrics_internal.h"
#include "kernels/internal/quantize_driver.h"
#include "kernels/internal/simd_lanes.h"

namespace quantd::internal {
namespace {  // NOLINT: per-ISA copies on purpose, see above.

// Sign-cleared bit patterns at or above this are Inf or NaN.
constexpr uint32_t kNonFiniteBits = 0x7F800000u;

// The Ops of QuantizeIntDriver (internal/quantize_driver.h).
template <typename V>
struct QuantizeOps {
  using F = typename V::F;
  using I = typename V::I;
  static constexpr int64_t kLanes = V::kLanes;

  // max |x| as the max of the sign-cleared bit patterns: for non-negative
  // floats integer order is float order, and Inf/NaN (>= 0x7F800000) are
  // above every finite value, so one pass yields amax and finiteness.
  static bool AbsMax(const float* x, int64_t n, float* amax) {
    const I abs_mask = V::SetI(0x7FFFFFFF);
    auto load = [&](int64_t k) { return V::AndI(V::LoadI(x + k), abs_mask); };
    I m0 = V::ZeroI(), m1 = m0, m2 = m0, m3 = m0;
    int64_t i = 0;
    for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
      m0 = V::MaxI(m0, load(i));
      m1 = V::MaxI(m1, load(i + kLanes));
      m2 = V::MaxI(m2, load(i + 2 * kLanes));
      m3 = V::MaxI(m3, load(i + 3 * kLanes));
    }
    for (; i + kLanes <= n; i += kLanes) m0 = V::MaxI(m0, load(i));
    if (i < n) m1 = V::MaxI(m1, V::AndI(V::LoadTailI(x + i, n - i), abs_mask));
    m0 = V::MaxI(V::MaxI(m0, m1), V::MaxI(m2, m3));
    const auto bits = static_cast<uint32_t>(V::ReduceMaxI(m0));
    if (bits >= kNonFiniteBits) return false;
    std::memcpy(amax, &bits, sizeof(float));
    return true;
  }

  // min(x, 0) and max(x, 0), and finiteness as in AbsMax.
  static bool MinMax(const float* x, int64_t n, float* lo, float* hi) {
    const I abs_mask = V::SetI(0x7FFFFFFF);
    F vlo = V::ZeroF(), vhi = vlo;
    I vabs = V::ZeroI();
    auto add = [&](F v) {
      vlo = V::MinF(vlo, v);
      vhi = V::MaxF(vhi, v);
      vabs = V::MaxI(vabs, V::AndI(V::CastI(v), abs_mask));
    };
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) add(V::LoadF(x + i));
    if (i < n) add(V::LoadTailF(x + i, n - i));  // pads 0
    if (static_cast<uint32_t>(V::ReduceMaxI(vabs)) >= kNonFiniteBits) return false;
    *lo = V::ReduceMinF(vlo);
    *hi = V::ReduceMaxF(vhi);
    return true;
  }

  // Codes of x[0, n), one byte each: code(v) maps a vector of x to i32
  // lanes in [0, 255]; four vectors per step, then one, then the tail.
  template <typename Code>
  static void Codes(const float* x, int64_t n, Code code, uint8_t* codes) {
    int64_t i = 0;
    for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
      V::StoreBytes4(codes + i, code(V::LoadF(x + i)),
                     code(V::LoadF(x + i + kLanes)),
                     code(V::LoadF(x + i + 2 * kLanes)),
                     code(V::LoadF(x + i + 3 * kLanes)));
    }
    for (; i + kLanes <= n; i += kLanes) {
      V::StoreBytes(codes + i, code(V::LoadF(x + i)));
    }
    if (i < n) V::StoreTailBytes(codes + i, code(V::LoadTailF(x + i, n - i)), n - i);
  }

  // kDivide: x / inv (full range: `inv` is the scale) instead of x * inv.
  template <bool kDivide = false>
  static void CodesSym(const float* x, int64_t n, float inv, int bits,
                       uint8_t* codes) {
    const int qmax = (1 << (bits - 1)) - 1;
    const F vinv = V::SetF(inv);
    const I vmin = V::SetI(-(qmax + 1));
    const I vmax = V::SetI(qmax);
    const I vmask = V::SetI((1 << bits) - 1);
    Codes(x, n, [&](F v) {
      const I q = V::RoundToI(kDivide ? V::DivF(v, vinv) : V::MulF(v, vinv));
      return V::AndI(V::MinI(V::MaxI(q, vmin), vmax), vmask);  // two's complement field
    }, codes);
  }

  static void CodesAsym(const float* x, int64_t n, float inv, int zp, int bits,
                        uint8_t* codes) {
    const F vinv = V::SetF(inv);
    const I vzp = V::SetI(zp);
    const I vzero = V::ZeroI();
    const I vmax = V::SetI((1 << bits) - 1);
    Codes(x, n, [&](F v) {
      const I q = V::AddI(V::RoundToI(V::MulF(v, vinv)), vzp);
      return V::MinI(V::MaxI(q, vzero), vmax);
    }, codes);
  }

  // Packs 4- and 2-bit codes with byte vectors, the rest (and what is left
  // of those) with BMI2.
  static void Pack(const uint8_t* codes, int64_t n, int bits, uint8_t* dst) {
    constexpr int64_t kBytes = V::kBytes;
    int64_t i = 0;
    if (bits == 4) {
      // u16 lane = a | b<<8 (a, b < 16); (w | w>>4) & 0xFF = a | b<<4.
      const I lo_byte = V::Set16(0x00FF);
      auto pair = [&](int64_t k) {
        const I w = V::LoadI(codes + k);
        return V::AndI(V::OrI(w, V::Srli16(w, 4)), lo_byte);
      };
      for (; i + 2 * kBytes <= n; i += 2 * kBytes) {
        V::StoreI(dst + i / 2, V::NarrowU16Pair(pair(i), pair(i + kBytes)));
      }
      for (; i + kBytes <= n; i += kBytes) V::StoreNarrowU16(dst + i / 2, pair(i));
    } else if (bits == 2) {
      // u32 lane = a | b<<8 | c<<16 | d<<24 (each < 4):
      // t = w | w>>6 puts b at bit 2 (and d at bit 18); t | t>>12 puts c at
      // bit 4 and d at bit 6. The low byte is a | b<<2 | c<<4 | d<<6.
      const I low_byte = V::SetI(0xFF);
      auto quad = [&](int64_t k) {
        const I w = V::LoadI(codes + k);
        I t = V::OrI(w, V::Srli32(w, 6));
        t = V::OrI(t, V::Srli32(t, 12));
        return V::AndI(t, low_byte);
      };
      for (; i + 4 * kBytes <= n; i += 4 * kBytes) {
        V::StoreBytes4(dst + i / 4, quad(i), quad(i + kBytes),
                       quad(i + 2 * kBytes), quad(i + 3 * kBytes));
      }
      for (; i + kBytes <= n; i += kBytes) V::StoreBytes(dst + i / 4, quad(i));
    }
    PackCodesBmi2(codes + i, n - i, bits, dst + i / 8 * bits);
  }
};

// ---- dtype conversion to f32 (isa_kernels.h). `load(i)` and
// `load_tail(i, r)` give the f32 bit patterns of src[i, i + kLanes) as I.
template <typename V, typename Load, typename LoadTail>
int64_t ConvertLanes(size_t n, float* dst, Load load, LoadTail load_tail) {
  const auto lanes = static_cast<size_t>(V::kLanes);
  const auto abs_mask = V::SetI(0x7FFFFFFF);
  auto vabs = V::ZeroI();
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto v = load(i);
    V::StoreI(dst + i, v);
    vabs = V::MaxI(vabs, V::AndI(v, abs_mask));
  }
  if (i < n) {
    const auto r = static_cast<int64_t>(n - i);
    const auto v = load_tail(i, r);
    V::StoreTailI(dst + i, v, r);
    vabs = V::MaxI(vabs, V::AndI(v, abs_mask));
  }
  // One pass, then a scalar scan only if something is non-finite.
  if (static_cast<uint32_t>(V::ReduceMaxI(vabs)) < kNonFiniteBits) return -1;
  return FirstNonFinite(dst, static_cast<int64_t>(n));
}

template <typename V>
int64_t ConvertF16(const uint16_t* src, size_t n, float* dst) {
  return ConvertLanes<V>(
      n, dst, [&](size_t i) { return V::CastI(V::LoadHalves(src + i)); },
      [&](size_t i, int64_t r) { return V::CastI(V::LoadTailHalves(src + i, r)); });
}

template <typename V>
int64_t ConvertBF16(const uint16_t* src, size_t n, float* dst) {
  return ConvertLanes<V>(
      n, dst, [&](size_t i) { return V::Slli32(V::LoadWidenU16(src + i), 16); },
      [&](size_t i, int64_t r) {
        return V::Slli32(V::LoadTailWidenU16(src + i, r), 16);
      });
}

template <typename V>
int64_t ConvertF32(const float* src, size_t n, float* dst) {
  return ConvertLanes<V>(
      n, dst, [&](size_t i) { return V::LoadI(src + i); },
      [&](size_t i, int64_t r) { return V::LoadTailI(src + i, r); });
}

// ---- Dequantization: the Ops of DequantizeIntDriver
// (internal/dequantize_driver.h).
template <typename V>
struct DequantizeOps {
  using F = typename V::F;
  using I = typename V::I;
  static constexpr int64_t kLanes = V::kLanes;

  static void Unpack(const uint8_t* packed, int64_t n, int bits,
                     uint8_t* codes) {
    constexpr int64_t kBytes = V::kBytes;
    int64_t i = 0;
    if (bits == 4) {
      // u16 lane = byte b; (b | b<<4) & 0x0F0F puts the low nibble in the
      // low byte and the high nibble in the high byte: codes 2k, 2k+1.
      const I nibbles = V::Set16(0x0F0F);
      for (; i + kBytes <= n; i += kBytes) {
        const I w = V::LoadWidenU8ToU16(packed + i / 2);
        V::StoreI(codes + i, V::AndI(V::OrI(w, V::Slli16(w, 4)), nibbles));
      }
    }
    UnpackCodesBmi2(packed + i / 8 * bits, n - i, bits, codes + i);
  }

  // scale * (float)(q - zero_point) of kLanes code bytes; symmetric fields
  // are sign-extended from `bits` by a shift pair (count in `shift`).
  template <bool kSymmetric>
  static F Values(__m128i bytes, __m128i shift, I zero_point, F scale) {
    I q = V::WidenBytes(bytes);
    if (kSymmetric) q = V::Sra32(V::Sll32(q, shift), shift);
    q = V::SubI(q, zero_point);
    return V::MulF(scale, V::ToF(q));
  }

  template <bool kSymmetric, typename Sink>
  static void Run(const uint8_t* codes, int64_t begin, int64_t end,
                  float scale, int zero_point, int bits, Sink& sink) {
    const __m128i shift = _mm_cvtsi32_si128(32 - bits);
    const F vscale = V::SetF(scale);
    const I vzp = V::SetI(zero_point);
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) {
      sink.Put(i, Values<kSymmetric>(V::LoadBytes(codes + i), shift, vzp, vscale));
    }
    if (i < end) {
      sink.PutTail(i,
                   Values<kSymmetric>(V::LoadTailBytes(codes + i, end - i),
                                      shift, vzp, vscale),
                   end - i);
    }
  }

  template <bool kSymmetric, typename Sink>
  static void RunPerElement(const uint8_t* codes, int64_t n,
                            const float* scales, const int32_t* zero_points,
                            int bits, Sink& sink) {
    const __m128i shift = _mm_cvtsi32_si128(32 - bits);
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      sink.Put(i, Values<kSymmetric>(V::LoadBytes(codes + i), shift,
                                     V::LoadI(zero_points + i),
                                     V::LoadF(scales + i)));
    }
    if (i < n) {
      const int64_t r = n - i;
      sink.PutTail(i,
                   Values<kSymmetric>(V::LoadTailBytes(codes + i, r), shift,
                                      V::LoadTailI(zero_points + i, r),
                                      V::LoadTailF(scales + i, r)),
                   r);
    }
  }
};

template <typename V>
class StoreSink {
 public:
  explicit StoreSink(float* dst) : dst_(dst) {}
  void BeginChunk(int64_t first) { out_ = dst_ + first; }
  void Put(int64_t i, typename V::F v) { V::StoreF(out_ + i, v); }
  void PutTail(int64_t i, typename V::F v, int64_t r) {
    V::StoreTailF(out_ + i, v, r);
  }
  void EndChunk(int64_t) {}

 private:
  float* dst_;
  float* out_ = nullptr;
};

// Adds the metric sums of one chunk, x[0, n) against y[0, n) (n <=
// kMetricsBlock), to `sums`: per-element double terms as in the reference,
// accumulated in two sets of kLanes / 2 double lanes (low and high half of
// each f32 vector), reduced in a fixed order at the end of the chunk.
//
// w^2, w_hat^2 and w*w_hat use FMA: the product of two floats is exact in
// double, so fma(x, y, acc) == acc + x*y bit for bit. (w - w_hat)^2 keeps a
// separate multiply: the double difference may have more than 26 bits.
template <typename V>
void AccumulateChunk(const float* x_ptr, const float* y_ptr, int64_t n,
                     MetricSums& sums) {
  using D = typename V::D;
  using F = typename V::F;
  const D zero = V::ZeroD();
  D err2[2] = {zero, zero}, w2[2] = {zero, zero};
  D what2[2] = {zero, zero}, dot[2] = {zero, zero};
  D max_abs[2] = {zero, zero};
  auto half = [&](int k, D x, D y) {
    const D d = V::SubD(x, y);
    err2[k] = V::AddD(err2[k], V::MulD(d, d));
    w2[k] = V::FmaddD(x, x, w2[k]);
    what2[k] = V::FmaddD(y, y, what2[k]);
    dot[k] = V::FmaddD(x, y, dot[k]);
    max_abs[k] = V::MaxD(max_abs[k], V::AbsD(d));
  };
  auto accumulate = [&](F x, F y) {
    half(0, V::ToDLow(x), V::ToDLow(y));
    half(1, V::ToDHigh(x), V::ToDHigh(y));
  };
  int64_t i = 0;
  for (; i + V::kLanes <= n; i += V::kLanes) {
    accumulate(V::LoadF(x_ptr + i), V::LoadF(y_ptr + i));
  }
  if (i < n) {  // lanes past the end count as 0 - 0
    accumulate(V::LoadTailF(x_ptr + i, n - i), V::LoadTailF(y_ptr + i, n - i));
  }
  sums.err2 += V::ReduceAddD(V::AddD(err2[0], err2[1]));
  sums.w2 += V::ReduceAddD(V::AddD(w2[0], w2[1]));
  sums.what2 += V::ReduceAddD(V::AddD(what2[0], what2[1]));
  sums.dot += V::ReduceAddD(V::AddD(dot[0], dot[1]));
  sums.max_abs =
      std::max(sums.max_abs, V::ReduceMaxD(V::MaxD(max_abs[0], max_abs[1])));
}

// Dequantizes each chunk into w_hat (if given) or an L1 buffer, then
// accumulates the chunk while it is still in cache.
template <typename V>
class MeasureSink {
 public:
  MeasureSink(const float* src, float* w_hat) : src_(src), w_hat_(w_hat) {}

  void BeginChunk(int64_t first) {
    first_ = first;
    out_ = w_hat_ != nullptr ? w_hat_ + first : buffer_;
  }
  void Put(int64_t i, typename V::F v) { V::StoreF(out_ + i, v); }
  void PutTail(int64_t i, typename V::F v, int64_t r) {
    V::StoreTailF(out_ + i, v, r);
  }
  void EndChunk(int64_t n) { AccumulateChunk<V>(src_ + first_, out_, n, sums_); }
  const MetricSums& sums() const { return sums_; }

 private:
  const float* src_;
  float* w_hat_;
  int64_t first_ = 0;
  float* out_ = nullptr;
  MetricSums sums_;
  alignas(64) float buffer_[kDequantizeChunk];
};

template <typename V>
void DequantizeInt(const QuantizedTensor& src, float* dst) {
  StoreSink<V> sink(dst);
  DequantizeIntDriver<DequantizeOps<V>>(src, sink);
}

template <typename V>
ErrorMetrics DequantizeAndMeasure(const QuantizedTensor& q, const float* src,
                                  float* w_hat) {
  MeasureSink<V> sink(src, w_hat);
  DequantizeIntDriver<DequantizeOps<V>>(q, sink);
  ErrorMetrics m =
      FinishMetrics(sink.sums(), static_cast<size_t>(q.layout.num_elements));
  m.bits_per_weight = q.layout.BitsPerWeight();
  return m;
}

}  // namespace
}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_QUANTIZE_LANES_H_

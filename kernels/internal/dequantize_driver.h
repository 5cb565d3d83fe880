// Internal: the chunk and group loop shared by the vector dequantizers (plain
// and fused with the error metrics). Each ISA file instantiates
// DequantizeIntDriver<Ops, Sink> with its own Ops (unpacker, value pass) and
// Sink (what to do with each vector of values). Internal linkage for the same
// reason as quantize_driver.h: no -mavx512f code may leak into other callers.
//
// Values must equal the reference (DequantizeReference in quantize.cc) bit for
// bit: x = scale * (float)(q - zero_point), one int->float conversion (exact,
// |q - zp| < 2^8) and one f32 multiply, never fused (-ffp-contract=off).
#ifndef QUANTD_KERNELS_INTERNAL_DEQUANTIZE_DRIVER_H_
#define QUANTD_KERNELS_INTERNAL_DEQUANTIZE_DRIVER_H_

#include <algorithm>
#include <cstdint>

#include "kernels/internal/metrics_internal.h"
#include "kernels/quantize.h"

namespace quantd::internal {
namespace {  // NOLINT: per-ISA copies on purpose, see above.

// Elements per chunk: the codes of one chunk are unpacked to bytes in an L1
// staging buffer. Equal to the metrics block, so a fused sink can close one
// reference block per chunk; a multiple of 8, so every chunk starts on a byte
// of the packed stream.
constexpr int64_t kDequantizeChunk = static_cast<int64_t>(kMetricsBlock);
static_assert(kDequantizeChunk % 8 == 0);

// Ops must provide:
//   static constexpr int64_t kLanes;   // f32 lanes per vector
//   static void Unpack(const uint8_t* packed, int64_t n, int bits,
//                      uint8_t* codes);
//       n a multiple of 8; one byte per code, raw field (no sign extension)
//   template <bool kSymmetric, typename Sink>
//   static void Run(const uint8_t* codes, int64_t begin, int64_t end,
//                   float scale, int zero_point, int bits, Sink& sink);
//       values of codes[begin, end) of one group
//   template <bool kSymmetric, typename Sink>
//   static void RunPerElement(const uint8_t* codes, int64_t n,
//                             const float* scales, const int32_t* zero_points,
//                             int bits, Sink& sink);
//       values of codes[0, n) with one scale and zero point per element
// Sink must provide:
//   void BeginChunk(int64_t first_element);
//   void Put(int64_t i, Vec values);                 // elements i..i+kLanes-1
//   void PutTail(int64_t i, Vec values, int64_t r);  // elements i..i+r-1
//   void EndChunk(int64_t num_elements);
//       i is relative to the chunk; Put/PutTail come in increasing i and
//       cover the chunk exactly once.
template <bool kSymmetric, typename Ops, typename Sink>
void DequantizeIntDriverImpl(const QuantizedTensor& src, Sink& sink) {
  const Layout& layout = src.layout;
  const int bits = layout.bits;
  const int64_t group_size = layout.group_size;
  const int64_t n = layout.num_elements;
  const float* scales = src.scales.data();
  const uint8_t* zero_points = src.zero_points.data();

  alignas(64) uint8_t stage[kDequantizeChunk];
  // Per-element scales and zero points, only for groups narrower than a
  // vector (e.g. g1, g3, g8 with AVX-512).
  alignas(64) float element_scales[kDequantizeChunk];
  alignas(64) int32_t element_zero_points[kDequantizeChunk];

  for (int64_t e0 = 0; e0 < n; e0 += kDequantizeChunk) {
    const int64_t m = std::min(kDequantizeChunk, n - e0);
    const uint8_t* codes = stage;
    if (bits == 8) {
      codes = src.codes.data() + e0;
    } else {
      const uint8_t* packed = src.codes.data() + e0 / 8 * bits;
      const int64_t full = m & ~int64_t{7};
      Ops::Unpack(packed, full, bits, stage);
      if (full < m) {
        UnpackCodes(packed + full / 8 * bits, m - full, bits, stage + full);
      }
    }
    sink.BeginChunk(e0);
    if (group_size < Ops::kLanes) {
      for (int64_t i = 0; i < m;) {
        const int64_t g = (e0 + i) / group_size;
        const int64_t end = std::min(m, (g + 1) * group_size - e0);
        const float scale = scales[g];
        const int32_t zero_point = kSymmetric ? 0 : zero_points[g];
        for (; i < end; ++i) {
          element_scales[i] = scale;
          element_zero_points[i] = zero_point;
        }
      }
      Ops::template RunPerElement<kSymmetric>(codes, m, element_scales,
                                              element_zero_points, bits, sink);
    } else {
      for (int64_t i = 0; i < m;) {
        const int64_t g = (e0 + i) / group_size;
        const int64_t end = std::min(m, (g + 1) * group_size - e0);
        Ops::template Run<kSymmetric>(codes, i, end, scales[g],
                                      kSymmetric ? 0 : zero_points[g], bits,
                                      sink);
        i = end;
      }
    }
    sink.EndChunk(m);
  }
}

template <typename Ops, typename Sink>
void DequantizeIntDriver(const QuantizedTensor& src, Sink& sink) {
  if (src.layout.scheme.symmetric) {
    DequantizeIntDriverImpl<true, Ops>(src, sink);
  } else {
    DequantizeIntDriverImpl<false, Ops>(src, sink);
  }
}

}  // namespace
}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_DEQUANTIZE_DRIVER_H_

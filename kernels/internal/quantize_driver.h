// Internal: the group loop shared by the vector quantizers. Each ISA file
// instantiates QuantizeIntDriver<Ops> with its own Ops (vector range pass,
// vector code pass, packer); everything here has internal linkage so that
// code compiled with -mavx512f never leaks into a caller built without it
// (an inline function with external linkage would be merged by the linker).
//
// The arithmetic below must match the reference in quantize.cc bit for bit;
// quantize_test.cc checks that for every format, granularity and ISA.
#ifndef QUANTD_KERNELS_INTERNAL_QUANTIZE_DRIVER_H_
#define QUANTD_KERNELS_INTERNAL_QUANTIZE_DRIVER_H_

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/internal/isa_kernels.h"
#include "kernels/quantize.h"

namespace quantd::internal {
namespace {  // NOLINT: per-ISA copies on purpose, see above.

struct GroupParams {
  float scale;
  float inv;
  int zero_point;  // 0 when symmetric
};

inline GroupParams SymParams(float amax, int bits) {
  const int qmax = (1 << (bits - 1)) - 1;
  float scale = amax / static_cast<float>(qmax);
  if (scale < FLT_MIN) scale = FLT_MIN;
  return {scale, 1.0f / scale, 0};
}

// Full range (compressed-tensors): scale = amax / ((2^b - 1) / 2), 0 raised
// to FLT_EPSILON; `inv` holds the scale itself, the divisor of the codes.
inline GroupParams FullRangeParams(float amax, int bits) {
  const float half_range = static_cast<float>((1 << bits) - 1) / 2.0f;
  float scale = amax / half_range;
  if (scale == 0.0f) scale = FLT_EPSILON;
  return {scale, scale, 0};
}

inline GroupParams AsymParams(float min_x, float max_x, int bits) {
  const int qmax = (1 << bits) - 1;
  const float lo = std::min(min_x, 0.0f);
  const float hi = std::max(max_x, 0.0f);
  float scale = (hi - lo) / static_cast<float>(qmax);
  if (scale < FLT_MIN) scale = FLT_MIN;
  const float inv = 1.0f / scale;
  const int zp = std::clamp(static_cast<int>(std::nearbyint(-lo * inv)), 0,
                            qmax);
  return {scale, inv, zp};
}

// Ops must provide (n >= 1 everywhere):
//   static bool AbsMax(const float* x, int64_t n, float* amax);
//   static bool MinMax(const float* x, int64_t n, float* lo, float* hi);
//       both return false if x holds a non-finite value
//   template <bool kDivide> static void CodesSym(const float* x, int64_t n,
//                        float inv, int bits, uint8_t* codes);
//       kDivide: codes of x / inv (full range) instead of x * inv
//   static void CodesAsym(const float* x, int64_t n, float inv, int zp,
//                         int bits, uint8_t* codes);
//       one byte per code, already masked to `bits`
//   static void Pack(const uint8_t* codes, int64_t n, int bits, uint8_t* dst);
//       n a multiple of 8; writes exactly n*bits/8 bytes
template <typename Ops>
int64_t QuantizeIntDriver(const float* src, QuantizedTensor& dst) {
  const Layout& layout = dst.layout;
  const int bits = layout.bits;
  const bool symmetric = layout.scheme.symmetric;
  const bool full_range = layout.scheme.full_range;
  const int64_t group_size = layout.group_size;
  const int64_t num_groups = layout.num_groups;
  uint8_t* out = dst.codes.data();

  // Codes go through a small staging buffer (in L1) and are packed eight at
  // a time, so the packed stream stays byte aligned whatever the group size.
  // int8 codes need no packing and are written in place.
  constexpr int64_t kStage = 4096;
  alignas(64) uint8_t stage[kStage + 8];
  int64_t pending = 0;

  for (int64_t g = 0; g < num_groups; ++g) {
    const float* x = src + g * group_size;
    GroupParams params;
    if (symmetric) {
      float amax = 0;
      if (!Ops::AbsMax(x, group_size, &amax)) {
        return g * group_size + FirstNonFinite(x, group_size);
      }
      params = full_range ? FullRangeParams(amax, bits) : SymParams(amax, bits);
    } else {
      float lo = 0, hi = 0;
      if (!Ops::MinMax(x, group_size, &lo, &hi)) {
        return g * group_size + FirstNonFinite(x, group_size);
      }
      params = AsymParams(lo, hi, bits);
      dst.zero_points[g] = static_cast<uint8_t>(params.zero_point);
    }
    dst.scales[g] = params.scale;

    if (bits == 8) {
      uint8_t* codes = out + g * group_size;
      if (full_range) {
        Ops::template CodesSym<true>(x, group_size, params.inv, bits, codes);
      } else if (symmetric) {
        Ops::CodesSym(x, group_size, params.inv, bits, codes);
      } else {
        Ops::CodesAsym(x, group_size, params.inv, params.zero_point, bits,
                       codes);
      }
      continue;
    }
    for (int64_t done = 0; done < group_size;) {
      const int64_t m = std::min(group_size - done, kStage - pending);
      if (full_range) {
        Ops::template CodesSym<true>(x + done, m, params.inv, bits,
                                     stage + pending);
      } else if (symmetric) {
        Ops::CodesSym(x + done, m, params.inv, bits, stage + pending);
      } else {
        Ops::CodesAsym(x + done, m, params.inv, params.zero_point, bits,
                       stage + pending);
      }
      done += m;
      pending += m;
      const int64_t full = pending & ~int64_t{7};
      if (full > 0) {
        Ops::Pack(stage, full, bits, out);
        out += full / 8 * bits;
        std::memmove(stage, stage + full, static_cast<size_t>(pending - full));
        pending -= full;
      }
    }
  }
  if (pending > 0) PackCodes(stage, pending, bits, out);
  return -1;
}

}  // namespace
}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_QUANTIZE_DRIVER_H_

// Internal: the vector inner loops of the codebook formats
// (internal/nonuniform_kernels.h), written once over a lane type of
// internal/simd_lanes.h. nonuniform_avx2.cc instantiates them with
// simd::Avx2, nonuniform_avx512.cc with simd::Avx512:
//
//   void LookupAvx2(const uint8_t* codes, int64_t n, const float* table,
//                   int bits, float* dst) {
//     CodebookLookup<simd::Avx2>(codes, n, table, bits, dst);
//   }
//
// A table of up to kLanes floats sits in one register, up to 2 * kLanes in
// two (AVX2: 8 and 16 entries; AVX-512: 16 and 32), larger ones are
// gathered. Results equal the scalar paths exactly: the search compares the
// same f32 midpoints, and a lookup is a copy. The last n % kLanes elements
// take the scalar path.
//
// Internal linkage, as in simd_lanes.h.
#ifndef QUANTD_KERNELS_INTERNAL_NONUNIFORM_LANES_H_
#define QUANTD_KERNELS_INTERNAL_NONUNIFORM_LANES_H_

#include <algorithm>
#include <cstdint>

#include "kernels/internal/nonuniform_kernels.h"
#include "kernels/internal/simd_lanes.h"

namespace quantd::internal {
namespace {  // NOLINT: per-ISA copies on purpose, see above.

// table[0, 2 * kLanes) as far as it exists (`entries`), zero beyond.
template <typename V>
struct CodebookTable {
  typename V::F lo;
  typename V::F hi;

  CodebookTable(const float* table, int entries) {
    const int in_lo = std::min(entries, V::kLanes);
    const int in_hi = std::clamp(entries - V::kLanes, 0, V::kLanes);
    lo = in_lo == V::kLanes ? V::LoadF(table) : V::LoadTailF(table, in_lo);
    hi = in_hi == V::kLanes  ? V::LoadF(table + V::kLanes)
         : in_hi == 0        ? V::ZeroF()
                             : V::LoadTailF(table + V::kLanes, in_hi);
  }

  // table[index] per lane; `table` (the whole of it) for the gather.
  typename V::F Lookup(typename V::I index, const float* table, int bits) const {
    if ((1 << bits) <= V::kLanes) return V::Lookup1(lo, index);
    if ((1 << bits) <= 2 * V::kLanes) return V::Lookup2(lo, hi, index);
    return V::Gather(table, index);
  }
};

// AssignCodesFn: the branchless binary search of AssignCodesScalar on
// kLanes elements at a time.
template <typename V>
void CodebookAssign(const float* x, int64_t n, const float* midpoints,
                    int bits, uint8_t* codes) {
  using I = typename V::I;
  const CodebookTable<V> table(midpoints, std::min(kMaxMidpoints, 2 * V::kLanes));
  int64_t i = 0;
  for (; i + V::kLanes <= n; i += V::kLanes) {
    const typename V::F v = V::LoadF(x + i);
    I index = V::ZeroI();
    for (int step = 1 << (bits - 1); step > 0; step >>= 1) {
      const I probe = V::AddI(index, V::SetI(step - 1));
      index = V::AddIfLt(index, table.Lookup(probe, midpoints, bits), v,
                         V::SetI(step));
    }
    V::StoreBytes(codes + i, index);
  }
  AssignCodesScalar(x + i, n - i, midpoints, bits, codes + i);
}

// LookupFn: dst[i] = table[codes[i]].
template <typename V>
void CodebookLookup(const uint8_t* codes, int64_t n, const float* table,
                    int bits, float* dst) {
  const CodebookTable<V> registers(table, 1 << bits);
  int64_t i = 0;
  for (; i + V::kLanes <= n; i += V::kLanes) {
    const typename V::I index = V::WidenBytes(V::LoadBytes(codes + i));
    V::StoreF(dst + i, registers.Lookup(index, table, bits));
  }
  LookupScalar(codes + i, n - i, table, bits, dst + i);
}

}  // namespace
}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_NONUNIFORM_LANES_H_

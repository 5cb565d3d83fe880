// AVX2 inner loops of the codebook formats (internal/nonuniform_kernels.h):
// internal/nonuniform_lanes.h on eight lanes; a table of up to 8 floats in
// one register (vpermps), 16 in two blended on bit 3 of the index, larger
// ones gathered.
#include <cstdint>

#include "kernels/internal/nonuniform_kernels.h"
#include "kernels/internal/nonuniform_lanes.h"
#include "kernels/internal/simd_lanes.h"

namespace quantd::internal {

void AssignCodesAvx2(const float* x, int64_t n, const float* midpoints,
                     int bits, uint8_t* codes) {
  CodebookAssign<simd::Avx2>(x, n, midpoints, bits, codes);
}

void LookupAvx2(const uint8_t* codes, int64_t n, const float* table, int bits,
                float* dst) {
  CodebookLookup<simd::Avx2>(codes, n, table, bits, dst);
}

}  // namespace quantd::internal

// AVX-512 inner loops of the codebook formats (internal/nonuniform_kernels.h):
// internal/nonuniform_lanes.h on sixteen lanes; a table of up to 16 floats
// in one register (vpermps), 32 in two (vpermt2ps), larger ones gathered.
#include <cstdint>

#include "kernels/internal/nonuniform_kernels.h"
#include "kernels/internal/nonuniform_lanes.h"
#include "kernels/internal/simd_lanes.h"

namespace quantd::internal {

void AssignCodesAvx512(const float* x, int64_t n, const float* midpoints,
                       int bits, uint8_t* codes) {
  CodebookAssign<simd::Avx512>(x, n, midpoints, bits, codes);
}

void LookupAvx512(const uint8_t* codes, int64_t n, const float* table,
                  int bits, float* dst) {
  CodebookLookup<simd::Avx512>(codes, n, table, bits, dst);
}

}  // namespace quantd::internal

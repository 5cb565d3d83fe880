// Internal: the per-ISA inner loops of the codebook formats (nonuniform.h):
// nearest-centroid assignment over sorted midpoints and table lookup. The
// *Avx2 functions live in nonuniform_avx2.cc (compiled with -mavx2 -mbmi2),
// the *Avx512 ones in nonuniform_avx512.cc. REQUIRES: CpuIsa() is at least
// the function's ISA.
//
// Tests and benchmarks call these directly to check every path against the
// reference whatever QUANTD_ISA says; production code goes through the
// Selected* dispatchers, which consult DetectedIsa() once.
#ifndef QUANTD_KERNELS_INTERNAL_NONUNIFORM_KERNELS_H_
#define QUANTD_KERNELS_INTERNAL_NONUNIFORM_KERNELS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/nonuniform.h"

namespace quantd::internal {

// Midpoint tables are padded to this many floats, so vector paths may load
// or gather any index below it; entries from k - 1 on are never read by the
// search but must be readable.
inline constexpr int kMaxMidpoints = 256;

// codes[i] = number of j in [0, 2^bits - 1) with midpoints[j] < x[i], for
// i in [0, n). REQUIRES: 1 <= bits <= 8; midpoints sorted ascending (f32
// midpoints of sorted centroids are), kMaxMidpoints readable floats; x finite.
using AssignCodesFn = void (*)(const float* x, int64_t n,
                               const float* midpoints, int bits,
                               uint8_t* codes);
// The specification: a linear count.
void AssignCodesReference(const float* x, int64_t n, const float* midpoints,
                          int bits, uint8_t* codes);
// A branchless binary search (bits steps), equal to the count on sorted
// midpoints; the vector paths run the same search 8 or 16 lanes at a time.
void AssignCodesScalar(const float* x, int64_t n, const float* midpoints,
                       int bits, uint8_t* codes);
void AssignCodesAvx2(const float* x, int64_t n, const float* midpoints,
                     int bits, uint8_t* codes);
void AssignCodesAvx512(const float* x, int64_t n, const float* midpoints,
                       int bits, uint8_t* codes);
AssignCodesFn SelectedAssignCodes();

// dst[i] = table[codes[i]] for i in [0, n). REQUIRES: codes[i] < 2^bits;
// table holds 2^bits floats.
using LookupFn = void (*)(const uint8_t* codes, int64_t n, const float* table,
                          int bits, float* dst);
void LookupScalar(const uint8_t* codes, int64_t n, const float* table,
                  int bits, float* dst);
void LookupAvx2(const uint8_t* codes, int64_t n, const float* table, int bits,
                float* dst);
void LookupAvx512(const uint8_t* codes, int64_t n, const float* table,
                  int bits, float* dst);
LookupFn SelectedLookup();

// The public entry points with a given inner loop, so tests can run every
// path through the whole quantizer and dequantizer.
absl::StatusOr<CodebookTensor> KMeansQuantizeWith(
    const float* src, int64_t rows, int64_t row_length,
    const CodebookOptions& options, AssignCodesFn assign);
absl::Status CodebookDequantizeWith(const CodebookTensor& src,
                                    LookupFn lookup, float* dst);

}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_NONUNIFORM_KERNELS_H_

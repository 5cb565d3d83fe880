// Non-uniform quantization: a codebook (lookup table) of 2^bits f32 values
// per group, codes that index it, and one dequantizer for every such format.
// Two quantizers fill the tables:
//   - k-means (weight sharing): the 2^bits centroids of a 1-D k-means of the
//     group's values (k-means++ seeding with a fixed seed, Lloyd iterations);
//   - power of two (logarithmic): a sign and an exponent relative to the
//     group's largest magnitude, x ~ +-scale * 2^-k, plus a zero code.
//
//   CodebookOptions options;
//   options.bits = 4;
//   options.granularity = Granularity::kPerGroup;
//   options.group_size = 128;
//   QUANTD_ASSIGN_OR_RETURN(CodebookTensor q,
//                           KMeansQuantize(w.data(), rows, row_length, options));
//   std::vector<float> w_hat(rows * row_length);
//   CodebookDequantize(q, w_hat.data());   // w_hat[i] = table(group(i))[code(i)]
//
// Groups. A group is the unit that owns one table: the whole tensor
// (kPerTensor), one row (kPerChannel) or group_size consecutive elements of a
// row (kPerGroup; group_size divides row_length). Group g covers elements
// [g * group_size, (g + 1) * group_size) of the row-major tensor.
//
// Determinism: every function is a pure function of its inputs; the same
// input and options give the same bytes on every run and every ISA (the
// vector paths are tested equal to the scalar reference byte for byte).
// Thread-safety: all functions are reentrant; they share no mutable state.
#ifndef QUANTD_KERNELS_NONUNIFORM_H_
#define QUANTD_KERNELS_NONUNIFORM_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/scheme.h"

namespace quantd {

// The output of a codebook quantizer.
//
// Byte layout:
//   codes      num_elements codes of `bits` bits each, packed LSB first over
//              the whole tensor exactly like PackCodes (quantize.h):
//              ceil(num_elements * bits / 8) bytes.
//   codebooks  num_groups tables of 2^bits f32 values; group g's table is
//              codebooks[g << bits, (g + 1) << bits). The value of element i
//              is codebooks[(group(i) << bits) + code(i)].
//   scales     power of two only: the group's scale (num_groups f32), from
//              which its table is rebuilt by PowerOfTwoCodebook (so a
//              container may store just the scales); empty for k-means.
struct CodebookTensor {
  int64_t rows = 0;
  int64_t row_length = 0;
  int bits = 0;
  int64_t group_size = 0;   // elements per table
  int64_t num_groups = 0;   // rows * row_length / group_size
  std::vector<uint8_t> codes;
  std::vector<float> codebooks;
  std::vector<float> scales;

  int64_t num_elements() const { return rows * row_length; }
  // Stored bits per weight: codes + f32 tables (k-means) or + f32 scales
  // (power of two, whose tables are implied).
  double BitsPerWeight() const;
};

// Options of both quantizers.
struct CodebookOptions {
  // Code width: 1..8 for k-means (2^bits centroids), 2..8 for power of two
  // (1 sign bit + bits-1 bits of exponent code). Default: 4.
  int bits = 4;
  // Default: one table per row.
  Granularity granularity = Granularity::kPerChannel;
  // Elements per group for kPerGroup; must divide row_length.
  int64_t group_size = 0;

  // k-means only. Lloyd iterations after seeding; it stops earlier when an
  // assignment step changes no code. 0 keeps the k-means++ seeds.
  // Default: 100.
  int max_iterations = 100;
  // k-means only: seed of the k-means++ sampling. Default: 0.
  uint64_t seed = 0;
};

// k-means codebooks (weight sharing). Per group of n values, with k = 2^bits:
//
// PRNG. splitmix64 (Steele, Lea, Flood 2014): state += 0x9E3779B97F4A7C15;
// z = state; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9; z = (z ^ z >> 27) *
// 0x94D049BB133111EB; return z ^ z >> 31. Group g starts from state
// seed ^ (g * 0xD1B54A32D192ED03). A uniform u in [0, 1) is
// (next() >> 11) * 2^-53; a uniform index below n is next() % n.
//
// Seeding (k-means++, Arthur & Vassilvitskii 2007). The first centroid is
// x[next() % n]. Each further one: D[i] = min over chosen centroids c of
// (double(x[i]) - c)^2, T = sum of D in index order (double); if T == 0 (the
// group has fewer distinct values than centroids) every remaining centroid
// is a copy of the largest one chosen; else with t = u * T the centroid is
// x[i] for the first i whose running sum of D exceeds t (the last i with
// D[i] > 0 if rounding leaves none). The seeds are then sorted ascending.
//
// Assignment. Centroids are kept sorted ascending. With the f32 midpoints
// m[j] = c[j] * 0.5f + c[j + 1] * 0.5f (j < k - 1), the code of x is the
// number of j with m[j] < x: the nearest centroid, a value exactly on a
// midpoint going to the lower index. (The midpoint is rounded to f32; this
// rule is the definition, so every path gives the same codes.)
//
// Update (Lloyd). Each centroid becomes the mean of its values, summed in
// index order in double and rounded to f32. Empty clusters, in index order,
// each take the value of the element farthest from its own cluster's new
// centroid (largest squared distance, lowest index on ties; that element's
// distance then counts as 0 for later empty clusters); if every distance is
// 0 an empty cluster keeps its centroid. The centroids are then sorted
// ascending again. Iteration stops when an assignment equals the previous one
// or after max_iterations updates; the returned codes are always the
// assignment to the returned tables, so each code names its nearest centroid.
//
// Errors: InvalidArgument naming the problem when rows or row_length < 1,
// bits is outside 1..8, group_size does not divide row_length (kPerGroup),
// max_iterations < 0, or an element is NaN or infinite (naming its index).
absl::StatusOr<CodebookTensor> KMeansQuantize(const float* src, int64_t rows,
                                              int64_t row_length,
                                              const CodebookOptions& options);
// Same contract, scalar reference assignment (the specification).
absl::StatusOr<CodebookTensor> KMeansQuantizeReference(
    const float* src, int64_t rows, int64_t row_length,
    const CodebookOptions& options);

// Power-of-two (logarithmic) quantization. With K = 2^(bits-1) - 1 levels,
// a code is (sign << (bits - 1)) | m: m = 0 is zero (the quantizer writes it
// with sign 0), m in 1..K is magnitude scale * 2^-(m-1), i.e. exponents k in
// 0..K-1. The group's scale is its largest |x| (0 for an all-zero group).
//
// Rounding is in the linear domain: |x| goes to the nearest of the exact
// levels {scale * 2^-k} and 0, compared exactly (in double, where every
// level and midpoint is exact); a value exactly halfway between two levels
// goes to the smaller magnitude (e.g. 0.75 * scale -> scale / 2, and
// scale * 2^-K -> 0). The table holds the levels rounded to f32 (ldexpf:
// exact unless they fall below FLT_MIN).
//
// Errors: as KMeansQuantize, with bits in 2..8 (and no iteration count).
absl::StatusOr<CodebookTensor> PowerOfTwoQuantize(
    const float* src, int64_t rows, int64_t row_length,
    const CodebookOptions& options);

// Writes the 2^bits table of a power-of-two group with `scale` to
// table[0, 2^bits): table[(s << (bits-1)) | m] = 0 for m == 0, else
// (s ? -1 : 1) * ldexpf(scale, -(m - 1)). REQUIRES: 2 <= bits <= 8.
void PowerOfTwoCodebook(float scale, int bits, float* table);

// dst[i] = codebooks[(group(i) << bits) + code(i)] for the src.num_elements()
// elements: the lookup is a copy, so every path is bit-identical to
// CodebookDequantizeReference. Vector paths: AVX-512 permutexvar (bits <= 4)
// or permutex2var (5), AVX2 permutevar8x32 (bits <= 3) or two of them
// blended (4), gathers above. InvalidArgument if `src`'s sizes are
// inconsistent (bits, group_size, codes or codebooks sized wrongly).
absl::Status CodebookDequantize(const CodebookTensor& src, float* dst);
// Same contract, scalar path (the specification).
absl::Status CodebookDequantizeReference(const CodebookTensor& src,
                                         float* dst);

// Bytes a codebook quantization's result holds beside the preallocated
// codes and scales (QuantizedWorkingSetBytes) and the dequantized values:
// its codes and scales, one byte per element of unpacked codes and the
// codebooks. Part of WorkingSetBytes (quantize_tensor.h). REQUIRES:
// layout.kind is kCodebook.
int64_t CodebookWorkingSetBytes(const Layout& layout);

}  // namespace quantd

#endif  // QUANTD_KERNELS_NONUNIFORM_H_

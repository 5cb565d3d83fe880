// Internal: the element loops of kernels/float_formats.h, one set per ISA.
// float_formats.cc computes every scale (one f32 operation sequence per
// group, shared by all paths) and hands the per-element work to a
// FloatKernels table: the scalar one (float_formats.cc, the specification),
// FloatKernelsAvx2 (float_formats_avx2.cc) and FloatKernelsAvx512
// (float_formats_avx512.cc). Every table gives identical bytes and floats.
//
// REQUIRES for the vector tables: CpuIsa() is at least their ISA. Tests take
// each table directly; production goes through SelectedFloatKernels().
#ifndef QUANTD_KERNELS_INTERNAL_FLOAT_KERNELS_H_
#define QUANTD_KERNELS_INTERNAL_FLOAT_KERNELS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/float_formats.h"

namespace quantd::internal {

// A small IEEE-like binary float: `exp_bits` exponent bits, `man_bits`
// mantissa bits, smallest normal exponent emin (= 1 - bias), largest finite
// magnitude max_value. Codes are sign << (exp_bits + man_bits) | magnitude.
struct MiniFloatSpec {
  int exp_bits;
  int man_bits;
  int emin;
  float max_value;
};

inline constexpr MiniFloatSpec kE4m3Spec = {4, 3, -6, 448.0f};
inline constexpr MiniFloatSpec kE5m2Spec = {5, 2, -14, 57344.0f};
inline constexpr MiniFloatSpec kE2m1Spec = {2, 1, 0, 6.0f};

// The scalar element encoder (the specification): round to nearest even,
// saturating at +-max_value, sign kept. REQUIRES: v is not NaN.
uint8_t EncodeMiniFloat(float v, const MiniFloatSpec& spec);
// The value of a code (E4M3: 0x7f/0xff NaN; E5M2: exponent 31 Inf/NaN).
float DecodeMiniFloat(uint32_t code, const MiniFloatSpec& spec);

// How codes of 4 bits share a byte: element 2i and 2i + 1 of the tensor.
enum class NibbleOrder { kLowFirst, kHighFirst };

struct FloatKernels {
  // amax[g] = max |src[g * group_size + j]| over j < group_size, for
  // num_groups groups (max is exact, so any order gives the same bits).
  // REQUIRES: the values are finite.
  void (*group_amax)(const float* src, int64_t num_groups, int64_t group_size,
                     float* amax);
  // For each of the n elements (n a multiple of group_size): the code of
  // src[i] / divisors[i / group_size] (f32 division), or 0 when that
  // divisor is 0. bits 8: one byte per element; bits 4: two per byte,
  // element 2i in the low nibble (group_size even).
  void (*encode_minifloat)(const float* src, int64_t n, int64_t group_size,
                           const float* divisors, const MiniFloatSpec& spec,
                           int bits, uint8_t* dst);
  // NF4: s = min(max(src[i] * inv_absmax[i / group_size], -1), 1) (f32),
  // code = #{k : midpoints[k] < s} for the 15 midpoints; element 2i in the
  // high nibble (group_size even).
  void (*encode_nf4)(const float* src, int64_t n, int64_t group_size,
                     const float* inv_absmax, const float* midpoints,
                     uint8_t* dst);
  // dst[i] = table[code_i] * scales[i / group_size] (one f32 multiply).
  // bits 8: 256-entry table, one byte per code; bits 4: 16-entry table, two
  // codes per byte in `order`.
  void (*decode)(const uint8_t* src, int64_t n, int64_t group_size,
                 const float* scales, const float* table, int bits,
                 NibbleOrder order, float* dst);
};

const FloatKernels& FloatKernelsScalar();
const FloatKernels& FloatKernelsAvx2();
const FloatKernels& FloatKernelsAvx512();
// The table DetectedIsa() selects (chosen once).
const FloatKernels& SelectedFloatKernels();

// FloatQuantize / FloatDequantize (float_formats.h) with a given table, for
// tests and benchmarks that run every path whatever QUANTD_ISA says.
absl::StatusOr<FloatQuantized> FloatQuantizeWith(
    const FloatKernels& kernels, const float* src, int64_t rows,
    int64_t row_length, const FloatFormatOptions& options);
absl::Status FloatDequantizeWith(const FloatKernels& kernels,
                                 const FloatQuantized& q, float* dst);

}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_FLOAT_KERNELS_H_

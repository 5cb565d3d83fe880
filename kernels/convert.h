// Exact IEEE conversions between the wire dtypes and f32, and the finiteness
// check every quantizer input passes.
//
//   std::vector<float> w(n);
//   absl::Status s = ConvertToF32(DType::kF16, bytes.data(), n, w.data());
//   // InvalidArgument "element 17 is NaN" if the input holds a NaN.
#ifndef QUANTD_KERNELS_CONVERT_H_
#define QUANTD_KERNELS_CONVERT_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace quantd {

// Scalar conversions (the reference). F16/BF16 -> F32 is exact, subnormals
// included; F32 -> F16/BF16 rounds to nearest, ties to even, NaN stays NaN.
float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToHalf(float f);
uint16_t FloatToBFloat16(float f);

// Converts `n` elements of `dtype` at `src` (little-endian, any alignment) to
// f32 in `dst`. Uses the widest vector path the CPU has (F16C / AVX-512),
// bit-identical to the scalar functions above. Returns InvalidArgument naming
// the first non-finite element's index (dst is then unspecified).
absl::Status ConvertToF32(DType dtype, const void* src, size_t n, float* dst);

// Scalar-only version of ConvertToF32: the reference its fast path is
// tested against.
absl::Status ConvertToF32Reference(DType dtype, const void* src, size_t n,
                                   float* dst);

}  // namespace quantd

#endif  // QUANTD_KERNELS_CONVERT_H_

// Internal: the per-format, per-ISA block quantizers behind the ggml format
// table (ggml_formats.h), for the table itself, tests and benchmarks.
// Each *Avx2 function lives in ggml_formats_avx2.cc (compiled with -mavx2
// -mfma -mf16c), each *Avx512 one in ggml_formats_avx512.cc.
// REQUIRES: CpuIsa() is at least the function's ISA.
//
// All have the GgmlQuantizeFn contract and are bit-identical to the scalar
// reference of their format.
#ifndef QUANTD_KERNELS_INTERNAL_GGML_KERNELS_H_
#define QUANTD_KERNELS_INTERNAL_GGML_KERNELS_H_

#include <cstdint>

namespace quantd::internal {

// What a C cast from float to an 8-bit integer gives on x86-64 (ggml's
// quantizers are C casts): cvttss2si's truncation toward zero, or the
// "integer indefinite" 0x80000000 for NaN and values outside int32, then
// the low byte. Defined for every input, unlike the C cast.
inline uint8_t X86TruncToByte(float v) {
  int32_t i = INT32_MIN;
  if (v >= -2147483648.0f && v < 2147483648.0f) i = static_cast<int32_t>(v);
  return static_cast<uint8_t>(static_cast<uint32_t>(i));
}

// Scalar references (ggml_formats.cc), the specification.
void GgmlQuantizeQ4_0Reference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_1Reference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_0Reference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_1Reference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst);
void GgmlQuantizeQ8_0Reference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst);
void GgmlQuantizeIq4NlReference(const float* src, int64_t num_blocks,
                                const float* importance, uint8_t* dst);
void GgmlQuantizeMxfp4Reference(const float* src, int64_t num_blocks,
                                const float* importance, uint8_t* dst);

// Vector paths. A block whose 1/scale is not finite (max|x| below ~2^-121)
// is handed to the reference, which defines that case.
void GgmlQuantizeQ8_0Avx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_0Avx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_1Avx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_0Avx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst);
void GgmlQuantizeQ8_0Avx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_0Avx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_1Avx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_0Avx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst);

}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_GGML_KERNELS_H_

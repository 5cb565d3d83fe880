// Internal: the per-format, per-ISA block quantizers behind the ggml format
// table (ggml_formats.h), for the table itself, tests and benchmarks.
// Each *Avx2 function lives in ggml_formats_avx2.cc (compiled with -mavx2
// -mfma -mf16c), each *Avx512 one in ggml_formats_avx512.cc.
// REQUIRES: CpuIsa() is at least the function's ISA.
//
// All have the GgmlQuantizeFn contract and are bit-identical to the scalar
// reference of their format (the *NoImportance* kernels to its result
// without importance).
#ifndef QUANTD_KERNELS_INTERNAL_GGML_KERNELS_H_
#define QUANTD_KERNELS_INTERNAL_GGML_KERNELS_H_

#include <cstdint>

#include "kernels/ggml_formats.h"

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
void GgmlQuantizeIq4XsReference(const float* src, int64_t num_blocks,
                                const float* importance, uint8_t* dst);
void GgmlQuantizeMxfp4Reference(const float* src, int64_t num_blocks,
                                const float* importance, uint8_t* dst);

// Pieces of the IQ4_NL / IQ4_XS references (ggml's
// quantize_row_iq4_nl_impl) that the vector paths share.
// best_index_int8 on kGgmlIq4NlValues: the nearest value's index, ties to
// the upper one, decided exactly on doubled values (2x >= sum of
// neighbours); 0 for NaN.
int GgmlIq4NlIndex(float x);
// The weighted scale search of one 32-element sub-block (ntry 7): the scale,
// or 0 when max |x| < 1e-15.
float GgmlIq4SubBlockScale(const float* x, const float* weight);
// The n weights of x: x^2 without importance (qw == nullptr), else
// qw[j] * sqrt(sigma2 + x^2).
void GgmlIq4Weights(const float* x, int n, const float* qw, float sigma2,
                    float* weight);
// 2 * mean(x^2) over n elements, summed in order.
float GgmlIq4Sigma2(const float* x, int n);
// IQ4_XS's second stage: given the super-block x (256), its 8 sub-block
// scales and the signed one of largest magnitude, writes the 136-byte block.
void GgmlFinishIq4Xs(const float* x, const float* scales, float max_scale,
                     uint8_t* dst);

// Vector paths. A block whose 1/scale is not finite (max|x| below ~2^-121)
// is handed to the reference, which defines that case. IQ4_NL and IQ4_XS
// vectorize both the plain and the importance path; Q8_0 and MXFP4 have no
// importance path.
void GgmlQuantizeQ8_0Avx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst);
void GgmlQuantizeIq4NlAvx2(const float* src, int64_t num_blocks,
                           const float* importance, uint8_t* dst);
void GgmlQuantizeIq4XsAvx2(const float* src, int64_t num_blocks,
                           const float* importance, uint8_t* dst);
void GgmlQuantizeMxfp4Avx2(const float* src, int64_t num_blocks,
                           const float* importance, uint8_t* dst);
void GgmlQuantizeQ8_0Avx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst);
void GgmlQuantizeIq4NlAvx512(const float* src, int64_t num_blocks,
                             const float* importance, uint8_t* dst);
void GgmlQuantizeIq4XsAvx512(const float* src, int64_t num_blocks,
                             const float* importance, uint8_t* dst);
void GgmlQuantizeMxfp4Avx512(const float* src, int64_t num_blocks,
                             const float* importance, uint8_t* dst);

// Q4_0, Q4_1, Q5_0, Q5_1 without importance: `importance` is ignored.
void GgmlQuantizeQ4_0NoImportanceAvx2(const float* src, int64_t num_blocks,
                                      const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_1NoImportanceAvx2(const float* src, int64_t num_blocks,
                                      const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_0NoImportanceAvx2(const float* src, int64_t num_blocks,
                                      const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_1NoImportanceAvx2(const float* src, int64_t num_blocks,
                                      const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_0NoImportanceAvx512(const float* src, int64_t num_blocks,
                                        const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_1NoImportanceAvx512(const float* src, int64_t num_blocks,
                                        const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_0NoImportanceAvx512(const float* src, int64_t num_blocks,
                                        const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_1NoImportanceAvx512(const float* src, int64_t num_blocks,
                                        const float* importance, uint8_t* dst);

// A fast path whose vector kernel has no importance search: the kernel
// without importance, the reference with it. ggml's imatrix search of
// Q4_0..Q5_1 (make_qx_quants / make_qkx3_quants) runs per block with
// data-dependent early exits and is not vectorized here. The choice is made
// once, here, for every ISA; the format table picks among the entries below.
template <GgmlQuantizeFn kNoImportance, GgmlQuantizeFn kReference>
void NoImportanceOrReference(const float* src, int64_t num_blocks,
                             const float* importance, uint8_t* dst) {
  if (importance != nullptr) {
    kReference(src, num_blocks, importance, dst);
  } else {
    kNoImportance(src, num_blocks, nullptr, dst);
  }
}

// The GgmlQuantizeFn entries of Q4_0..Q5_1 per ISA (for the table, tests and
// benchmarks).
inline constexpr GgmlQuantizeFn GgmlQuantizeQ4_0Avx2 =
    NoImportanceOrReference<GgmlQuantizeQ4_0NoImportanceAvx2,
                            GgmlQuantizeQ4_0Reference>;
inline constexpr GgmlQuantizeFn GgmlQuantizeQ4_1Avx2 =
    NoImportanceOrReference<GgmlQuantizeQ4_1NoImportanceAvx2,
                            GgmlQuantizeQ4_1Reference>;
inline constexpr GgmlQuantizeFn GgmlQuantizeQ5_0Avx2 =
    NoImportanceOrReference<GgmlQuantizeQ5_0NoImportanceAvx2,
                            GgmlQuantizeQ5_0Reference>;
inline constexpr GgmlQuantizeFn GgmlQuantizeQ5_1Avx2 =
    NoImportanceOrReference<GgmlQuantizeQ5_1NoImportanceAvx2,
                            GgmlQuantizeQ5_1Reference>;
inline constexpr GgmlQuantizeFn GgmlQuantizeQ4_0Avx512 =
    NoImportanceOrReference<GgmlQuantizeQ4_0NoImportanceAvx512,
                            GgmlQuantizeQ4_0Reference>;
inline constexpr GgmlQuantizeFn GgmlQuantizeQ4_1Avx512 =
    NoImportanceOrReference<GgmlQuantizeQ4_1NoImportanceAvx512,
                            GgmlQuantizeQ4_1Reference>;
inline constexpr GgmlQuantizeFn GgmlQuantizeQ5_0Avx512 =
    NoImportanceOrReference<GgmlQuantizeQ5_0NoImportanceAvx512,
                            GgmlQuantizeQ5_0Reference>;
inline constexpr GgmlQuantizeFn GgmlQuantizeQ5_1Avx512 =
    NoImportanceOrReference<GgmlQuantizeQ5_1NoImportanceAvx512,
                            GgmlQuantizeQ5_1Reference>;

// Whether x[0, n) holds no NaN or infinity: one vector pass (the fast
// paths' input check; the index of a bad element comes from the scalar
// FirstNonFinite).
bool GgmlAllFiniteAvx2(const float* x, int64_t n);
bool GgmlAllFiniteAvx512(const float* x, int64_t n);

}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_GGML_KERNELS_H_

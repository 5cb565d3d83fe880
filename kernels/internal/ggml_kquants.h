// Internal: ggml's K-quants (Q2_K..Q6_K, super-blocks of 256 elements)
// behind the ggml format table (ggml_formats.h), for the table, tests and
// benchmarks.
//
// A K-quant quantizer runs in two stages per super-block:
//   1. a search per sub-block (16 or 32 elements) for its scale, minimum and
//      codes (make_qkx2_quants, make_qx_quants, ...; ggml_search.h);
//   2. a finishing step that quantizes the sub-block scales against the
//      super-block's d (and dmin), stores those as f16, recomputes the codes
//      from the stored scales and packs the block.
// The scalar references (ggml_kquants.cc) run both stages in scalar code.
// The vector paths (ggml_kquants_avx2.cc with 8 lanes,
// ggml_kquants_avx512.cc with 16; both from internal/ggml_kquants_lanes.h)
// run stage 1 with one sub-block per vector lane, each lane doing its
// sub-block's sums in ggml's order, so the results are the same bits;
// stage 2 computes the scale fields with the shared scalar GgmlScales*
// below and requantizes and packs the 256 codes in vector code (the same
// f32 division and nearest_int per element). Tests check every vector path
// against the reference byte for byte.
#ifndef QUANTD_KERNELS_INTERNAL_GGML_KQUANTS_H_
#define QUANTD_KERNELS_INTERNAL_GGML_KQUANTS_H_

#include <cstdint>

#include "absl/types/span.h"
#include "kernels/ggml_formats.h"

namespace quantd::internal {

// The K-quants' rows for the ggml format table, in ggml type order (Q2_K,
// Q3_K, Q4_K, Q5_K, Q6_K): block size 256, `fast` chosen once from
// DetectedIsa(), importance used.
absl::Span<const GgmlFormatTraits> GgmlKQuantFormats();

// Scalar references (ggml_kquants.cc), the specification; GgmlQuantizeFn
// contract. Without importance each follows ggml's quantize_row_qX_K_ref,
// with importance quantize_row_qX_K_impl (what ggml's quantize_qX_K calls
// for a row with and without an imatrix).
void GgmlQuantizeQ2_KReference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst);
void GgmlQuantizeQ3_KReference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_KReference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_KReference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst);
void GgmlQuantizeQ6_KReference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst);

// ggml's dequantize_row_qX_K, bit for bit (GgmlDequantizeFn contract).
void GgmlDequantizeQ2_K(const uint8_t* src, int64_t num_blocks, float* dst);
void GgmlDequantizeQ3_K(const uint8_t* src, int64_t num_blocks, float* dst);
void GgmlDequantizeQ4_K(const uint8_t* src, int64_t num_blocks, float* dst);
void GgmlDequantizeQ5_K(const uint8_t* src, int64_t num_blocks, float* dst);
void GgmlDequantizeQ6_K(const uint8_t* src, int64_t num_blocks, float* dst);

// Stage 2, shared by the reference and the vector paths. `x` is the
// super-block's 256 inputs, `scales` / `mins` the sub-block results of
// stage 1, `L` its codes (updated in place), `sw` nullptr on the
// quantize_row_*_ref path or the per-sub-block weight sums on the _impl
// path. Writes one block to `dst` (unaligned).
void GgmlFinishQ2_K(const float* x, const float* scales, const float* mins,
                    const float* sw, uint8_t* L, uint8_t* dst);
void GgmlFinishQ3_K(const float* x, const float* scales, const float* sw,
                    int8_t* L, uint8_t* dst);
void GgmlFinishQ4_K(const float* x, const float* scales, const float* mins,
                    const float* sw, uint8_t* L, uint8_t* dst);
void GgmlFinishQ5_K(const float* x, const float* scales, const float* mins,
                    const float* sw, uint8_t* L, uint8_t* dst);
void GgmlFinishQ6_K(const float* x, const float* scales, int8_t* L,
                    uint8_t* dst);

// Stage 2 in two parts, for the vector paths: GgmlScales* computes the
// block's scale fields into `y` (d, dmin and the packed sub-block scales;
// the code arrays are left alone) and, per sub-block, the f32 `sub_d` and
// `sub_dm` (16 for Q2_K, Q3_K, Q6_K, 8 for Q4_K, Q5_K) that its codes are
// recomputed from: nearest_int((x + sub_dm) / sub_d) clamped (asymmetric)
// or nearest_int(x / sub_d) clamped plus the offset (symmetric); a
// sub-block with sub_d == 0 keeps its stage-1 codes. GgmlFinish* is
// GgmlScales* followed by that requantization in scalar code and the
// packing. GgmlScalesQ6_K returns false for a block whose scales are all
// below kGgmlGroupMaxEps: `y` is then the finished (all-zero) block.
void GgmlScalesQ2_K(const float* scales, const float* mins, const float* sw,
                    GgmlBlockQ2_K& y, float* sub_d, float* sub_dm);
void GgmlScalesQ3_K(const float* scales, const float* sw, GgmlBlockQ3_K& y,
                    float* sub_d);
void GgmlScalesQ4_K(const float* scales, const float* mins, const float* sw,
                    GgmlBlockQ4_K& y, float* sub_d, float* sub_dm);
void GgmlScalesQ5_K(const float* scales, const float* mins, const float* sw,
                    GgmlBlockQ5_K& y, float* sub_d, float* sub_dm);
bool GgmlScalesQ6_K(const float* scales, GgmlBlockQ6_K& y, float* sub_d);

// AVX2 paths (ggml_kquants_avx2.cc, compiled with -mavx2 -mfma -mf16c).
// REQUIRES: CpuIsa() >= Isa::kAvx2. Bit-identical to the references.
void GgmlQuantizeQ2_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst);
void GgmlQuantizeQ3_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst);
void GgmlQuantizeQ6_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst);

// AVX-512 paths (ggml_kquants_avx512.cc): sixteen sub-blocks per pass.
// REQUIRES: CpuIsa() >= Isa::kAvx512. Bit-identical to the references.
void GgmlQuantizeQ2_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst);
void GgmlQuantizeQ3_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst);
void GgmlQuantizeQ4_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst);
void GgmlQuantizeQ5_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst);
void GgmlQuantizeQ6_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst);

}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_GGML_KQUANTS_H_

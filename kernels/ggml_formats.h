// ggml's block quantization formats (llama.cpp's GGUF tensor types), byte
// for byte: one struct per block with its exact layout, a scalar reference
// quantizer per format that reproduces ggml's own quantizer (the one
// llama-quantize calls) bit for bit, vector fast paths tested against it,
// and the dequantizers.
//
//   const GgmlFormatTraits* q4_0 = FindGgmlFormat("Q4_0");
//   QUANTD_ASSIGN_OR_RETURN(int64_t row_bytes,
//                           GgmlRowBytes(*q4_0, row_length));
//   std::vector<uint8_t> bytes(rows * row_bytes);
//   QUANTD_RETURN_IF_ERROR(GgmlQuantize(*q4_0, w.data(), rows, row_length,
//                                       /*importance=*/nullptr, bytes.data()));
//   std::vector<float> w_hat(rows * row_length);
//   QUANTD_RETURN_IF_ERROR(GgmlDequantize(*q4_0, bytes.data(), rows,
//                                         row_length, w_hat.data()));
//
// The bytes are what ggml writes into a GGUF tensor of that type: the blocks
// of each row in order, rows in order, no padding. A row's length must be a
// multiple of the format's block size.
//
// What "bit-exact with ggml" means here, format by format (the scalar
// reference in ggml_formats.cc is the specification; each function there
// says which ggml routine it follows):
//   - Arithmetic is f32 in ggml's order of operations, never contracted into
//     FMA (ggml's reference quantizers live in ggml-base, which is built
//     without FMA code generation; this library uses -ffp-contract=off).
//   - Scales are computed and used in f32; only the stored copy is f16
//     (round to nearest even, overflow to +-Inf, as ggml's FP32_TO_FP16).
//     A block whose f16 scale overflows (e.g. Q8_0 with max|x| > ~8.3e6) is
//     stored with an infinite scale, as ggml does; its codes are still the
//     f32 ones.
//   - Rounding per format: Q8_0 rounds half away from zero (roundf);
//     Q4_0/Q4_1/Q5_0/Q5_1 add 8.5 / 0.5 / 16.5 / 0.5 and truncate toward zero;
//     IQ4_NL and MXFP4 pick the nearest table value (IQ4_NL: a tie goes to the
//     upper value, compared exactly on doubled values; MXFP4: the first of
//     equally near entries in table order).
//   - ggml converts float to an integer code with a C cast; where that cast
//     is out of range (only when a block's maximum is so small, below about
//     2^-121, that 1/scale overflows f32 to Inf) ggml on x86-64 gets the low
//     byte of the CPU's "integer indefinite" 0x80000000, i.e. code 0. The
//     reference defines exactly that, without undefined behaviour.
//
// IQ4_XS follows quantize_iq4_xs: the IQ4_NL search per 32-element
// sub-block (ntry 7), then 6-bit sub-block scales l = nearest_int(scale / d)
// (ggml's nearest_int, round half to even) clamped to [-32, 31] with
// d = -(the sub-block scale of largest magnitude, the first on ties) / 32,
// and the codes recomputed from the f32 d * l.
//
// The K-quants Q2_K..Q6_K (256-element super-blocks) follow
// quantize_row_qX_K_ref without and quantize_row_qX_K_impl with an
// importance matrix (internal/ggml_kquants.h describes their two stages);
// their weights are computed per super-block, as ggml does for each type.
//
// Importance matrices (llama.cpp's --imatrix): IQ4_NL, IQ4_XS, Q4_0, Q4_1,
// Q5_0 and Q5_1 follow ggml's quant_weights paths (quantize_iq4_nl,
// quantize_iq4_xs, quantize_row_q4_0_impl ... quantize_row_q5_1_impl):
// Q4_0/Q5_0 search with make_qx_quants, Q4_1/Q5_1 with make_qkx3_quants
// (internal/ggml_search.h), weighting element j by
// importance[j] * sqrt(sigma2 + x[j]^2) where sigma2 is the mean square of
// the row (of the block for IQ4_NL, twice the mean square of the super-block
// for IQ4_XS). Q8_0 and MXFP4 ignore an importance matrix in ggml, and so do
// they here. The vector paths of Q4_0..Q5_1 run the scalar search when given
// importance; IQ4_NL and IQ4_XS vectorize it.
//
// Thread-safety: all functions are reentrant; they share no mutable state.
#ifndef QUANTD_KERNELS_GGML_FORMATS_H_
#define QUANTD_KERNELS_GGML_FORMATS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/metrics.h"

namespace quantd {

struct Layout;  // scheme.h

// Elements per block of the 32-element formats.
inline constexpr int kGgmlBlock32 = 32;

// ggml's enum ggml_type values (as stored in GGUF tensor infos).
enum class GgmlType : int {
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kIq4Nl = 20,
  kIq4Xs = 23,
  kMxfp4 = 39,
};

// Block layouts (little-endian; `uint16_t` scale fields hold IEEE f16 bits).
// Element j of a block is code j; for the nibble formats byte qs[j] holds
// element j in its low nibble and element j + 16 in its high nibble.

// x = d * q, q in [-127, 127].
struct GgmlBlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
static_assert(sizeof(GgmlBlockQ8_0) == 34, "block_q8_0 is 34 bytes");

// x = d * (q - 8), q in [0, 15].
struct GgmlBlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(GgmlBlockQ4_0) == 18, "block_q4_0 is 18 bytes");

// x = d * q + m, q in [0, 15].
struct GgmlBlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
static_assert(sizeof(GgmlBlockQ4_1) == 20, "block_q4_1 is 20 bytes");

// x = d * (q - 16), q in [0, 31]; bit 4 of q for element j is bit j of the
// little-endian uint32 qh.
struct GgmlBlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(GgmlBlockQ5_0) == 22, "block_q5_0 is 22 bytes");

// x = d * q + m, q in [0, 31]; qh as in Q5_0.
struct GgmlBlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(GgmlBlockQ5_1) == 24, "block_q5_1 is 24 bytes");

// x = d * kGgmlIq4NlValues[q], q in [0, 15].
struct GgmlBlockIq4Nl {
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(GgmlBlockIq4Nl) == 18, "block_iq4_nl is 18 bytes");

// A super-block of 256 elements in 8 sub-blocks of 32:
// x = d * (s - 32) * kGgmlIq4NlValues[q], q in [0, 15], with the 6-bit
// scale s of sub-block k split into a low nibble (scales_l[k / 2], low
// nibble for even k) and 2 high bits (bits 2k, 2k + 1 of scales_h); qs holds
// each sub-block's codes as in IQ4_NL, 16 bytes per sub-block.
struct GgmlBlockIq4Xs {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[4];
  uint8_t qs[128];
};
static_assert(sizeof(GgmlBlockIq4Xs) == 136, "block_iq4_xs is 136 bytes");

// x = GgmlE8m0ToFloatHalf(e) * kGgmlMxfp4Values[q]: OCP MX FP4 (E2M1) with a
// shared E8M0 exponent; the table holds the E2M1 values doubled, hence the
// "half" scale.
struct GgmlBlockMxfp4 {
  uint8_t e;
  uint8_t qs[16];
};
static_assert(sizeof(GgmlBlockMxfp4) == 17, "block_mxfp4 is 17 bytes");

// K-quants: super-blocks of kGgmlBlock256 elements in sub-blocks of 16 or
// 32, each sub-block with its own 4-, 6- or 8-bit scale (and minimum) that
// multiplies the super-block's f16 d (and dmin). Codes of one 128-element
// half are packed across its 32-element quarters: in a 2-bit array, byte l
// of the half holds elements l, l + 32, l + 64, l + 96 in bits 0-1, 2-3,
// 4-5, 6-7; a 4-bit array pairs l (low nibble) with l + 32 (high nibble).
inline constexpr int kGgmlBlock256 = 256;

// x = d * (scales[s] & 0xF) * q - dmin * (scales[s] >> 4), q in [0, 3], for
// element e in sub-block s = e / 16.
struct GgmlBlockQ2_K {
  uint8_t scales[16];
  uint8_t qs[64];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(GgmlBlockQ2_K) == 84, "block_q2_K is 84 bytes");

// x = d * (s6 - 32) * (q - 4), q in [0, 7]: 2 low bits in qs, bit 2 in
// hmask (element e: bit e / 32 of hmask[e % 32]); the 6-bit scale of
// sub-block s (16 elements) has its low nibble in scales[s % 8] (low nibble
// for s < 8, high nibble after) and its 2 high bits in bits 2 * (s / 4) of
// scales[8 + s % 4].
struct GgmlBlockQ3_K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(GgmlBlockQ3_K) == 110, "block_q3_K is 110 bytes");

// x = d * sc * q - dmin * m, q in [0, 15], with 6-bit sc and m per
// 32-element sub-block packed in 12 bytes (ggml's get_scale_min_k4): for
// s < 4, sc = scales[s] & 63 and m = scales[s + 4] & 63; for s >= 4 the low
// nibbles sit in scales[s + 4] and the high 2 bits in the top bits of
// scales[s - 4] (sc) and scales[s] (m).
struct GgmlBlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
static_assert(sizeof(GgmlBlockQ4_K) == 144, "block_q4_K is 144 bytes");

// As Q4_K with q in [0, 31]: bit 4 of element e is bit e / 32 of qh[e % 32].
struct GgmlBlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
static_assert(sizeof(GgmlBlockQ5_K) == 176, "block_q5_K is 176 bytes");

// x = d * scales[s] * (q - 32), q in [0, 63], signed 8-bit scale per
// 16-element sub-block: low nibbles in ql (4-bit packing per 128-element
// half, pairing l with l + 64 within the half), high 2 bits in qh (2-bit
// packing).
struct GgmlBlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
static_assert(sizeof(GgmlBlockQ6_K) == 210, "block_q6_K is 210 bytes");

// ggml's kvalues_iq4nl and kvalues_mxfp4.
inline constexpr int8_t kGgmlIq4NlValues[16] = {
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
inline constexpr int8_t kGgmlMxfp4Values[16] = {0,  1,  2,  3,  4,  6,  8,  12,
                                                0, -1, -2, -3, -4, -6, -8, -12};

// 2^(e - 128) as f32 (exact for every e, subnormal for e < 2): ggml's
// GGML_E8M0_TO_FP32_HALF.
float GgmlE8m0ToFloatHalf(uint8_t e);

// Quantizes `num_blocks` consecutive blocks of `src` into `dst`
// (num_blocks * block_bytes bytes). `importance` is nullptr or one weight per
// element of src (the imatrix entries of those columns); formats without an
// importance path ignore it. With importance, src is exactly one row (Q4_0
// to Q5_1 weight by the row's mean square). Inputs are finite (callers
// check).
using GgmlQuantizeFn = void (*)(const float* src, int64_t num_blocks,
                                const float* importance, uint8_t* dst);
// Writes num_blocks * block_size floats.
using GgmlDequantizeFn = void (*)(const uint8_t* src, int64_t num_blocks,
                                  float* dst);

// One entry of the ggml format table (like ggml's type_traits).
struct GgmlFormatTraits {
  GgmlType type;
  const char* name;  // ggml's type name, upper case: "Q4_0", "IQ4_NL"
  int block_size;    // elements per block
  int block_bytes;   // sizeof the block struct
  GgmlQuantizeFn reference;  // scalar, the specification
  GgmlQuantizeFn fast;       // chosen once from DetectedIsa(); bit-identical
  GgmlDequantizeFn dequantize;  // ggml's dequantize_row_*, bit for bit
  // Whether `importance` changes the result (ggml's quant_weights path).
  bool uses_importance;
  const char* description;
};

// All formats, in ggml type order: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K,
// Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, MXFP4. This is a table of its own, apart from
// FormatTable() in quantize.h: a block format carries its scales inside the
// block bytes, which the int formats' QuantizedTensor (codes + f32 scales +
// zero points per Layout group) does not describe.
absl::Span<const GgmlFormatTraits> GgmlFormatTable();
// By name, case-insensitive ("q8_0", "IQ4_NL"); nullptr if unknown.
const GgmlFormatTraits* FindGgmlFormat(absl::string_view name);
// By ggml type; nullptr if not in the table.
const GgmlFormatTraits* FindGgmlFormat(GgmlType type);

// Bytes of one row of `row_length` elements. InvalidArgument naming the row
// length and the block size if row_length < 1 or not a multiple of it.
absl::StatusOr<int64_t> GgmlRowBytes(const GgmlFormatTraits& format,
                                     int64_t row_length);

// Quantizes a row-major f32 tensor of `rows` x `row_length` into ggml's
// byte layout at `dst` (rows * GgmlRowBytes bytes) with the format's fast
// path. `importance` is nullptr or `row_length` weights shared by all rows
// (an imatrix entry for the tensor).
// InvalidArgument: row_length not a multiple of the block size (the message
// names both) or < 1, rows < 0, or an element NaN / infinite (the message
// names its index; dst is then unspecified: the tensor is checked and
// quantized a chunk at a time).
absl::Status GgmlQuantize(const GgmlFormatTraits& format, const float* src,
                          int64_t rows, int64_t row_length,
                          const float* importance, uint8_t* dst);
// Same contract, scalar reference path.
absl::Status GgmlQuantizeReference(const GgmlFormatTraits& format,
                                   const float* src, int64_t rows,
                                   int64_t row_length, const float* importance,
                                   uint8_t* dst);

// Dequantizes rows * row_length elements from ggml's byte layout `src` into
// `dst`, bit-identical to ggml's dequantize_row_* (one f32 multiply, plus
// one f32 add of the minimum for Q4_1/Q5_1). InvalidArgument as for
// GgmlRowBytes, or rows < 0.
absl::Status GgmlDequantize(const GgmlFormatTraits& format,
                            const uint8_t* src, int64_t rows,
                            int64_t row_length, float* dst);

// Dequantizes like GgmlDequantize and measures the error against `w` (the
// rows * row_length values that were quantized) in one pass: 4096 elements
// at a time are dequantized into L1 and accumulated at once, so with
// `w_hat` nullptr no n-float buffer exists at all. If `w_hat` is not null
// it receives exactly GgmlDequantize's values. The sums are added as
// DequantizeAndMeasure adds them (quantize.h): identical on every run for a
// given DetectedIsa(), equal to ComputeErrorMetrics(w, w_hat, n) on the
// scalar path and within DequantizeAndMeasure's relative bound on the
// vector paths. bits_per_weight is 8 * block_bytes / block_size (0 for
// an empty tensor), as Layout::BitsPerWeight.
// InvalidArgument as for GgmlDequantize.
absl::StatusOr<ErrorMetrics> GgmlDequantizeAndMeasure(
    const GgmlFormatTraits& format, const uint8_t* src, int64_t rows,
    int64_t row_length, const float* w, float* w_hat);

// Bytes a block format's quantization holds beside the tensor, its ggml
// bytes and its dequantized values: row_length importance weights. Part of
// WorkingSetBytes (quantize_tensor.h). REQUIRES: layout.IsBlockFormat().
int64_t GgmlWorkingSetBytes(const Layout& layout);

}  // namespace quantd

#endif  // QUANTD_KERNELS_GGML_FORMATS_H_

// Low-precision floating-point formats: FP8 (E4M3, E5M2) and FP4 (E2M1) with
// f32 scales, bitsandbytes' NF4 (optionally with double-quantized block
// scales), the OCP Microscaling formats MXFP8 / MXFP4 and NVIDIA's NVFP4.
// One scalar reference per format (the specification), vector fast paths
// chosen once from DetectedIsa() and tested byte for byte against it, and a
// dequantizer.
//
//   QUANTD_ASSIGN_OR_RETURN(FloatFormatOptions options,
//                           ParseFloatFormatOptions("fp8_e4m3", "channel", 0));
//   QUANTD_ASSIGN_OR_RETURN(FloatQuantized q,
//                           FloatQuantize(w.data(), rows, row_length, options));
//   std::vector<float> w_hat(rows * row_length);
//   QUANTD_RETURN_IF_ERROR(FloatDequantize(q, w_hat.data()));
//   ErrorMetrics m = ComputeErrorMetrics(w.data(), w_hat.data(), w.size());
//   m.bits_per_weight = FloatBitsPerWeight(q);
//
// Element encoding (FP8 E4M3 "fn", FP8 E5M2, FP4 E2M1, all elements of MX
// and NVFP4): a finite f32 value v becomes the nearest representable value,
// ties to the even code (IEEE round to nearest even on v itself, including
// the format's subnormals), with the sign of v kept (so -0 and negative
// values that round to zero give the negative-zero code), saturating: a |v|
// beyond the largest finite value fmax encodes as +-fmax. This is exactly
// what ml_dtypes' casts (float8_e4m3fn, float8_e5m2, float4_e2m1fn) do to
// v, except beyond fmax, where ml_dtypes gives NaN (E4M3, from 464 on) or
// Inf (E5M2, from 61440 on); E2M1 saturates in ml_dtypes too.
//   E4M3 fn: bias 7, fmax 448 (0x7e), no infinity, NaN 0x7f/0xff (never
//            written). E5M2: bias 15, fmax 57344 (0x7b), +-Inf 0x7c/0xfc
//            (never written). E2M1: bias 1, values +-{0, 0.5, 1, 1.5, 2, 3,
//            4, 6}, code = sign << 3 | magnitude index.
//
// Formats (the name is what ParseFloatFormat takes; none collides with a
// ggml type name, compared case-insensitively: ggml's own "MXFP4" and
// "NVFP4" are different layouts, see below):
//
//   fp8_e4m3, fp8_e5m2, fp4_e2m1 -- symmetric with one f32 scale per group;
//     granularity per tensor, per channel (a row) or per block (block_size
//     consecutive elements of a row; default 128 for FP8, 32 for FP4).
//     scale = amax / fmax (f32 division; amax = max |x| of the group); a
//     group whose quotient is 0 (all zero, or amax so small that the
//     division underflows) gets scale 1. Codes: encode(x / scale) (f32
//     division). Dequantized: decode(code) * scale (f32 multiply). Like
//     llm-compressor / compressed-tensors, except that they clamp the scale
//     from below at FLT_EPSILON where this uses 1 for a zero quotient only.
//
//   nf4 -- bitsandbytes' NormalFloat4 (QLoRA): 16 table values
//     (kNf4Values), one f32 absmax per block (default 64) along the row.
//     Codes follow bitsandbytes' quantize_4bit (default backend):
//     s = clamp(x * (1 / max(absmax, 1e-38)), -1, 1) in f32, code = the
//     number of midpoints (t[i] + t[i+1]) / 2 (f32) below s, i.e. the
//     nearest table value with a tie going to the lower code. Two codes per
//     byte, the FIRST element in the HIGH nibble (bitsandbytes' packing).
//     Dequantized: t[code] * absmax.
//     Double quantization (bitsandbytes' compress_statistics): the codes are
//     made with the f32 absmax as above; then offset = mean(absmax) (summed
//     in double in block order, rounded to f32), c = absmax - offset (f32),
//     and c is quantized in blocks of 256 (the last block may be partial)
//     with bitsandbytes' quantize_blockwise: a2 = max |c| per block (stored
//     f32), s = clamp(c * (1 / max(a2, 1e-38)), -1, 1), 8-bit code = number
//     of midpoints of the signed dynamic map (create_dynamic_map(True, 7, 8),
//     kept sorted, built in f32; NfDynamicMap()) below s. Dequantized
//     absmax = map[code] * a2 + offset, and x = t[code] * that absmax.
//
//   ocp_mxfp8, ocp_mxfp4 -- OCP Microscaling Formats v1.0: blocks of 32
//     along the row, elements E4M3 / E2M1, one shared E8M0 scale per block:
//     e = clamp(floor(log2(amax)) - emax_elem, -127, 127) with emax_elem 8
//     (E4M3) / 2 (E2M1), floor(log2) exact from the f32 bits (amax = 0 gives
//     -127); scale byte = e + 127 (255, NaN, never written); elements
//     encode(x / 2^e). Dequantized: decode(code) * 2^e (f32 multiply).
//     Relation to ggml's MXFP4 (GgmlFormatTable "MXFP4"): the same scale
//     byte wherever ggml's floorf(log2f(amax)) is exact and amax >= 2^-125
//     (just below a power of two log2f may round up, giving ggml one more;
//     below 2^-125 ggml's byte cast wraps; amax = 0 gives 0 in both), and the
//     same element values except (a) ties: OCP rounds half to even, ggml
//     takes the first of the equally near table entries, which differs at
//     |x| / 2^e = 0.75, 1.75, 3.5 (ggml picks 0.5, 1.5, 3); (b) signed zero:
//     ggml codes every zero as +0; (c) layout: ggml keeps the scale byte in
//     a 17-byte block and pairs element j with j + 16 in a byte; here codes
//     are dense (element 2i low nibble, 2i+1 high) and scales a separate
//     array, as OCP and compressed-tensors lay them out.
//
//   modelopt_nvfp4 -- NVFP4 as NVIDIA ModelOpt's NVFP4QTensor quantizes
//     weights: blocks of 16 along the row, E2M1 elements, an E4M3 block
//     scale and an f32 per-tensor scale (ModelOpt's weights_scaling_factor_2):
//       g = amax_tensor / 2688 (= 6 * 448), f32; g = 1 if that is 0;
//       s = amax_block / (6 * g) (6 * g rounded to f32 first); s = 1 if 0;
//       block scale byte = encode_E4M3(s) (round to nearest even);
//       d = decode_E4M3(byte) * g (f32); codes encode_E2M1(x / d), or 0 for
//       the whole block if d is 0 (the E4M3 scale underflowed: block amax
//       below ~2^-10 * 6 * g, where ModelOpt would divide by zero).
//     Dequantized: e2m1(code) * (decode_E4M3(byte) * g). ModelOpt's
//     _cast_fp4 equals the E2M1 encoding above except that it codes -0.0
//     as +0 (its sign bit is x < 0). compressed-tensors stores the
//     reciprocal global scale (2688 / amax) and forms block scales as
//     global * (amax_block / 6), which may round differently in the last
//     bit. ggml's "NVFP4" type has no per-tensor scale and a different
//     block layout. Codes are packed like fp4_e2m1 (ModelOpt's
//     `q[1::2] << 4 | q[0::2]`).
//
// Layout of the outputs (all row-major over the rows x row_length tensor):
// codes one byte per element (FP8, MXFP8) or two per byte (4-bit formats;
// row_length must then be even, and block sizes even). Per-group scales in
// group order: rows first, then groups within a row.
//
// Inputs must be finite: NaN or +-Inf anywhere is InvalidArgument naming
// the element index, for every format (E5M2 could store Inf, but a scale
// from an infinite amax cannot).
//
// Thread-safety: all functions are reentrant; they share no mutable state.
#ifndef QUANTD_KERNELS_FLOAT_FORMATS_H_
#define QUANTD_KERNELS_FLOAT_FORMATS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace quantd {

struct Layout;  // scheme.h

enum class FloatFormat {
  kFp8E4m3,
  kFp8E5m2,
  kFp4E2m1,
  kNf4,
  kOcpMxfp8,
  kOcpMxfp4,
  kNvfp4,
};

// Where one f32 scale applies (FP8 and FP4 E2M1 choose; NF4, MX and NVFP4
// are always kBlock). kDefault: kTensor for FP8, kBlock for the others.
enum class FloatGranularity { kDefault, kTensor, kChannel, kBlock };

struct FloatFormatOptions {
  FloatFormat format = FloatFormat::kFp8E4m3;
  FloatGranularity granularity = FloatGranularity::kDefault;
  // Elements per block along a row with kBlock. 0 = the format's default:
  // FP8 128, FP4 E2M1 32, NF4 64; MX is always 32 and NVFP4 always 16.
  int block_size = 0;
  // NF4 only: double-quantize the absmax values (see above). Default: false.
  bool double_quant = false;
};

// The result of a quantizer. Which fields are used depends on the format:
//   FP8 / FP4 E2M1 / NF4: codes + scales (one per group; NF4: absmax);
//   NF4 with double_quant: codes + block_scales (8-bit absmax codes, one per
//     block) + second_scales (a2, one per 256 blocks) + scale_offset;
//   MX: codes + block_scales (E8M0, one per 32 elements);
//   NVFP4: codes + block_scales (E4M3, one per 16) + tensor_scale (g).
struct FloatQuantized {
  FloatFormatOptions options;  // block_size and granularity resolved
  int64_t rows = 0;
  int64_t row_length = 0;
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  std::vector<uint8_t> block_scales;
  std::vector<float> second_scales;
  float scale_offset = 0.0f;
  float tensor_scale = 1.0f;
};

// "fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "nf4", "ocp_mxfp8", "ocp_mxfp4",
// "modelopt_nvfp4".
absl::string_view FloatFormatName(FloatFormat format);
// Case-insensitive; InvalidArgument naming the text if unknown.
absl::StatusOr<FloatFormat> ParseFloatFormat(absl::string_view name);
// Bits per element code: 8 or 4.
int FloatFormatCodeBits(FloatFormat format);

// Options for `format` with its defaults; `granularity` "" (default),
// "tensor", "channel" or "block"; `block_size` 0 for the default. Checks as
// ValidateFloatOptions with no tensor.
absl::StatusOr<FloatFormatOptions> ParseFloatFormatOptions(
    absl::string_view format, absl::string_view granularity, int block_size,
    bool double_quant = false);

// Resolves defaults and checks the options against a rows x row_length
// tensor (the result has no kDefault and no block_size 0). InvalidArgument
// (the message names the problem) if: rows < 0, row_length < 1, more than
// 2^62 elements; block_size < 0; a granularity other than kBlock, or a
// block size other than 32 / 16, for MX / NVFP4; a granularity other than
// kBlock for NF4; row_length not a multiple of the block size with kBlock;
// an odd row_length or block size for a 4-bit format; double_quant for a
// format other than NF4.
absl::StatusOr<FloatFormatOptions> ResolveFloatOptions(
    const FloatFormatOptions& options, int64_t rows, int64_t row_length);

// Quantizes a row-major f32 tensor of rows x row_length with the fast path
// DetectedIsa() selects; byte-identical to FloatQuantizeReference.
// InvalidArgument as ResolveFloatOptions, or for a NaN / Inf element (the
// message names its index).
absl::StatusOr<FloatQuantized> FloatQuantize(const float* src, int64_t rows,
                                             int64_t row_length,
                                             const FloatFormatOptions& options);
// Same contract, scalar reference path (the specification).
absl::StatusOr<FloatQuantized> FloatQuantizeReference(
    const float* src, int64_t rows, int64_t row_length,
    const FloatFormatOptions& options);

// Writes rows * row_length floats to dst; fast path, bit-identical to the
// reference. InvalidArgument if `q`'s options do not resolve or its arrays
// are not sized for them.
absl::Status FloatDequantize(const FloatQuantized& q, float* dst);
absl::Status FloatDequantizeReference(const FloatQuantized& q, float* dst);

// Storage bits per element: codes, every scale array, and the per-tensor
// scale / offset, divided by the element count (0 for an empty tensor).
double FloatBitsPerWeight(const FloatQuantized& q);

// Element codecs (exposed for tests and for readers of these formats).
// Encoding as described above: saturating, round to nearest even. The
// value must not be NaN.
uint8_t FloatToE4m3(float v);
uint8_t FloatToE5m2(float v);
uint8_t FloatToE2m1(float v);  // 4-bit code in the low nibble
float E4m3ToFloat(uint8_t code);  // NaN for 0x7f / 0xff
float E5m2ToFloat(uint8_t code);  // Inf / NaN as IEEE-like
float E2m1ToFloat(uint8_t code);  // low nibble
// 2^(code - 127); NaN for 255.
float E8m0ToFloat(uint8_t code);

// bitsandbytes' NF4 table (functional.py get_4bit_type("nf4")).
inline constexpr float kNf4Values[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f};

// bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True,
// max_exponent_bits=7, total_bits=8)), sorted ascending, 256 entries. Built
// as that function computes it in f32: for i in 0..6, torch.linspace(0.1, 1,
// 2^i + 1) (start + step * k below the halfway index, end - step *
// (steps - 1 - k) from it, step = (end - start) / (steps - 1)), the means of
// neighbours (a + b) / 2, times f32(10^(i - 6)), and the negatives; plus 0
// and 1.
absl::Span<const float> NfDynamicMap();

// Bytes FloatQuantize's result holds beside the preallocated codes and
// scales (QuantizedWorkingSetBytes) and the dequantized values: its codes
// and scales, one byte per element of unpacked codes, the block scales and
// second-level scales; NF4 double quantization also holds the f32 absmax
// and its centred copy (8 bytes per block) while it runs. Part of
// WorkingSetBytes (quantize_tensor.h). REQUIRES: layout.kind is kFloat.
int64_t FloatWorkingSetBytes(const Layout& layout);

}  // namespace quantd

#endif  // QUANTD_KERNELS_FLOAT_FORMATS_H_

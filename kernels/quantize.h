// Quantization entry points over the format table: quantize an f32 tensor
// with a Layout, dequantize it back, and the error metrics of the round trip.
//
//   QUANTD_ASSIGN_OR_RETURN(Layout layout, MakeLayout(scheme, shape));
//   QuantizedTensor q = AllocateQuantized(layout);
//   QUANTD_RETURN_IF_ERROR(Quantize(weights.data(), layout, q));
//   std::vector<float> w_hat(layout.num_elements);
//   Dequantize(q, w_hat.data());
//   // Or, without materializing w_hat, the round trip's error in one pass:
//   ErrorMetrics m = DequantizeAndMeasure(q, weights.data(), nullptr);
//
// Thread-safety: all functions are reentrant; they share no mutable state.
#ifndef QUANTD_KERNELS_QUANTIZE_H_
#define QUANTD_KERNELS_QUANTIZE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/layout.h"
#include "kernels/metrics.h"

namespace quantd {

// The output of a quantizer: packed codes, f32 scales, uint8 zero points
// (empty when symmetric). Byte layout: see message Layout in the proto.
struct QuantizedTensor {
  Layout layout;
  std::vector<uint8_t> codes;        // layout.packed_bytes
  std::vector<float> scales;         // layout.num_groups
  std::vector<uint8_t> zero_points;  // layout.num_groups if asymmetric
  // layout.row_length entries if layout.group_index, else empty: column c
  // of row r uses group r * (row_length / group_size) + group_index[c].
  std::vector<int32_t> group_index;
};

// Sizes the buffers of a QuantizedTensor for `layout`. A group index starts
// as the identity mapping (column c in group c / group_size), which is what
// Quantize's consecutive groups mean.
QuantizedTensor AllocateQuantized(const Layout& layout);
// Bytes of AllocateQuantized(layout)'s buffers while a tensor is
// quantized: codes, f32 scales and uint8 zero points (counted for every
// group, symmetric or not), and the group index when the layout has one.
// Part of WorkingSetBytes (quantize_tensor.h).
int64_t QuantizedWorkingSetBytes(const Layout& layout);

// OK iff `group_index` fits `layout`: row_length entries each in
// [0, row_length / group_size) when layout.group_index, none otherwise.
// Dequantize requires it (a received index is checked with this first).
absl::Status CheckGroupIndex(const Layout& layout,
                             absl::Span<const int32_t> group_index);
// The same for an index the layout says it has, given the row length and
// group size alone (a client checking what a server sent).
absl::Status CheckGroupIndex(int64_t row_length, int64_t group_size,
                             absl::Span<const int32_t> group_index);

// A quantizer writes codes, scales and zero points of `src`
// (layout.num_elements finite f32 values) into `dst`, whose buffers are
// sized by AllocateQuantized. Deterministic and bit-identical between the
// reference and every fast path.
using QuantizeFn = void (*)(const float* src, QuantizedTensor& dst);
using DequantizeFn = void (*)(const QuantizedTensor& src, float* dst);

// One entry of the format table (like ggml's type traits).
struct FormatTraits {
  const char* name;       // "int4"
  int bits;               // code width
  bool symmetric_ok;
  bool asymmetric_ok;
  QuantizeFn reference;   // scalar, the specification
  QuantizeFn fast;        // chosen once from DetectedIsa(); may equal reference
  DequantizeFn dequantize;  // fast path; bit-identical to DequantizeReference
  const char* description;
};

// All formats, in a stable order.
absl::Span<const FormatTraits> FormatTable();
// nullptr if unknown.
const FormatTraits* FindFormat(absl::string_view name);

// Quantizes with the format's fast path. `src` must hold
// dst.layout.num_elements values. InvalidArgument if a value is NaN or
// infinite (the message names the element index), or if the layout's format
// is unknown or `dst` is not sized for it.
absl::Status Quantize(const float* src, QuantizedTensor& dst);
// Same contract, scalar reference path.
absl::Status QuantizeReference(const float* src, QuantizedTensor& dst);

// x = scale * (float)(q - zero_point) into `dst` (layout.num_elements
// floats), q the sign-extended field when symmetric (zero_point 0), the raw
// field when asymmetric: one exact int->float conversion and one f32
// multiply per element. Uses the fast path DetectedIsa() selects; the result
// is bit-identical to DequantizeReference on every ISA.
// A layout with a group index (GPTQ act-order groups) takes the scalar
// path, which looks each column's group up.
// REQUIRES: `src` is sized for its layout (AllocateQuantized) and its group
// index passes CheckGroupIndex; does nothing if the format is unknown.
void Dequantize(const QuantizedTensor& src, float* dst);
// Same contract, scalar reference path (the specification).
void DequantizeReference(const QuantizedTensor& src, float* dst);

// Dequantizes `q` and measures the error against `src` (the
// q.layout.num_elements values that were quantized) in one pass: chunks of
// 4096 elements are dequantized into L1 and accumulated at once, so memory
// is read once and, when `w_hat` is nullptr, no n-float buffer exists at all.
// If `w_hat` is not null it receives exactly what Dequantize writes.
// Returns the metrics as defined in metrics.h with bits_per_weight =
// q.layout.BitsPerWeight().
//
// Determinism: single-threaded and a fixed summation order per ISA, so the
// result is identical on every run for a given DetectedIsa(). The scalar
// path equals ComputeErrorMetrics(src, w_hat, n) exactly. The vector paths
// compute the same per-element double terms (w - w_hat)^2, w^2, w_hat^2,
// w*w_hat and |w - w_hat|, but add them in double lanes (per 4096-element
// block, then block sums in order), so:
//   - max_abs_error and bits_per_weight are identical on every ISA;
//   - each sum differs from the reference's by at most a relative
//     (4700 + n/2048) * 2^-53 (worst-case rounding of both orders; for n up
//     to 2^24 that is < 1.5e-12, in practice ~1e-15), hence mse by that
//     relative bound, rmse by half of it, sqnr_db by at most 9x it in dB
//     absolute, and cosine_similarity by at most 3x it absolute.
// tests/kernels/dequantize_test.cc checks relative 1e-12 on every path.
// REQUIRES: `q` is a valid int layout sized by AllocateQuantized (as
// Quantize checks); `src` and `w_hat` hold q.layout.num_elements floats.
ErrorMetrics DequantizeAndMeasure(const QuantizedTensor& q, const float* src,
                                  float* w_hat);

// QAT import: quantizes `src` with given scales (and zero points) instead
// of computing them: for group g, q = clamp(round_half_even(x / scales[g])
// + zero_points[g]) into the layout's code range ([-2^(b-1), 2^(b-1) - 1]
// symmetric, [0, 2^b - 1] asymmetric; an f32 division, clamped in f32
// before rounding so a tiny scale cannot overflow), packed like Quantize;
// dst.scales / dst.zero_points receive the given values. Scalar only: this
// is the reference and the path. InvalidArgument if `dst` is not sized for
// its layout, scales.size() != num_groups, a scale is not finite or <= 0,
// zero_points is not empty for a symmetric layout or not num_groups values
// for an asymmetric one, or an element is NaN or infinite (naming its
// index). Messages name the group.
absl::Status QuantizeWithScales(const float* src, absl::Span<const float> scales,
                                absl::Span<const uint8_t> zero_points,
                                QuantizedTensor& dst);

// Packs `n` codes (each already in [0, 2^bits), i.e. two's complement
// truncated to `bits`) densely, LSB first, starting at bit 0 of `dst`.
// `dst` must hold ceil(n*bits/8) bytes. Exposed for tests and formats.
void PackCodes(const uint8_t* codes, int64_t n, int bits, uint8_t* dst);
// Inverse of PackCodes; returns raw fields (no sign extension).
void UnpackCodes(const uint8_t* src, int64_t n, int bits, uint8_t* codes);

}  // namespace quantd

#endif  // QUANTD_KERNELS_QUANTIZE_H_

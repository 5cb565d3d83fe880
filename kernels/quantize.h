// Quantization entry points over the format table: quantize an f32 tensor
// with a Layout, dequantize it back, and the error metrics of the round trip.
//
//   QUANTD_ASSIGN_OR_RETURN(Layout layout, MakeLayout(scheme, shape));
//   QuantizedTensor q = AllocateQuantized(layout);
//   QUANTD_RETURN_IF_ERROR(Quantize(weights.data(), layout, q));
//   std::vector<float> w_hat(layout.num_elements);
//   Dequantize(q, w_hat.data());
//
// Thread-safety: all functions are reentrant; they share no mutable state.
#ifndef QUANTD_KERNELS_QUANTIZE_H_
#define QUANTD_KERNELS_QUANTIZE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/metrics.h"
#include "kernels/scheme.h"

namespace quantd {

// The output of a quantizer: packed codes, f32 scales, uint8 zero points
// (empty when symmetric). Byte layout: see message Layout in the proto.
struct QuantizedTensor {
  Layout layout;
  std::vector<uint8_t> codes;        // layout.packed_bytes
  std::vector<float> scales;         // layout.num_groups
  std::vector<uint8_t> zero_points;  // layout.num_groups if asymmetric
};

// Sizes the buffers of a QuantizedTensor for `layout`.
QuantizedTensor AllocateQuantized(const Layout& layout);

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
  DequantizeFn dequantize;
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

// x = scale * (q - zero_point) into `dst` (layout.num_elements floats).
void Dequantize(const QuantizedTensor& src, float* dst);

// Packs `n` codes (each already in [0, 2^bits), i.e. two's complement
// truncated to `bits`) densely, LSB first, starting at bit 0 of `dst`.
// `dst` must hold ceil(n*bits/8) bytes. Exposed for tests and formats.
void PackCodes(const uint8_t* codes, int64_t n, int bits, uint8_t* dst);
// Inverse of PackCodes; returns raw fields (no sign extension).
void UnpackCodes(const uint8_t* src, int64_t n, int bits, uint8_t* codes);

}  // namespace quantd

#endif  // QUANTD_KERNELS_QUANTIZE_H_

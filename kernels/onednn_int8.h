// int8 symmetric per-channel quantization through oneDNN's reorder
// primitive (f32 -> s8 with per-row output scales). Primitives are created
// once per shape and cached; dnnl::error is turned into absl::Status here and
// nowhere else.
//
// Bit-identical to the int8 symmetric per-channel reference: each code is
// round_half_even(x * (1/scale)) saturated to s8, scale = max|x| / 127.
#ifndef QUANTD_KERNELS_ONEDNN_INT8_H_
#define QUANTD_KERNELS_ONEDNN_INT8_H_

#include "absl/status/status.h"
#include "kernels/quantize.h"

namespace quantd {

// REQUIRES: dst.layout is int8, symmetric, per channel.
// Returns Internal if oneDNN fails, InvalidArgument for non-finite input.
absl::Status QuantizeInt8PerChannelOneDnn(const float* src,
                                          QuantizedTensor& dst);

}  // namespace quantd

#endif  // QUANTD_KERNELS_ONEDNN_INT8_H_

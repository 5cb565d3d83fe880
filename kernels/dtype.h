// DType: the element type of input tensor bytes, with its size and its
// name as the wire and the model files spell it.
//
//   absl::StatusOr<DType> dtype = ParseDType("bf16");  // DType::kBF16
//   // DTypeSize(*dtype) == 2, DTypeName(*dtype) == "BF16"
#ifndef QUANTD_KERNELS_DTYPE_H_
#define QUANTD_KERNELS_DTYPE_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantd {

// Element type of input bytes (little-endian IEEE 754).
enum class DType { kF32, kF16, kBF16 };

// Bytes per element of `dtype`.
int DTypeSize(DType dtype);
absl::string_view DTypeName(DType dtype);  // "F32", "F16", "BF16"
absl::StatusOr<DType> ParseDType(absl::string_view name);

}  // namespace quantd

#endif  // QUANTD_KERNELS_DTYPE_H_

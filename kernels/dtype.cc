#include "kernels/dtype.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace quantd {

int DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "UNKNOWN";
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  if (upper == "F32") return DType::kF32;
  if (upper == "F16") return DType::kF16;
  if (upper == "BF16") return DType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", name, "\" (expected F32, F16 or BF16)"));
}

}  // namespace quantd

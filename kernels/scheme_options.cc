#include "kernels/scheme_options.h"

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace quantd {

absl::StatusOr<FloatFormatOptions> FloatOptionsOf(const Scheme& scheme) {
  if (LayoutKindOf(scheme) != LayoutKind::kFloat) {
    return absl::InvalidArgumentError(absl::StrCat(
        "format \"", scheme.format, "\" is not a float format"));
  }
  FloatFormatOptions options;
  QUANTD_ASSIGN_OR_RETURN(options.format, ParseFloatFormat(scheme.format));
  switch (scheme.granularity) {
    case Granularity::kPerTensor:
      options.granularity = FloatGranularity::kTensor;
      break;
    case Granularity::kPerChannel:
      options.granularity = FloatGranularity::kChannel;
      break;
    case Granularity::kPerGroup:
      options.granularity = FloatGranularity::kBlock;
      if (scheme.group_size < 1 ||
          scheme.group_size > std::numeric_limits<int>::max()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "group_size ", scheme.group_size, " of format ", scheme.format,
            " must be in [1, 2^31)"));
      }
      options.block_size = static_cast<int>(scheme.group_size);
      break;
  }
  options.double_quant = scheme.double_quant;
  return options;
}

absl::StatusOr<HqqOptions> HqqOptionsOf(const Scheme& scheme) {
  const int bits = HqqBits(scheme);
  if (bits == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "format \"", scheme.format, "\" is not hqq<b>"));
  }
  HqqOptions options;
  options.bits = bits;
  switch (scheme.granularity) {
    case Granularity::kPerChannel:
      options.group_size = 0;
      break;
    case Granularity::kPerGroup:
      options.group_size = scheme.group_size;
      break;
    case Granularity::kPerTensor:
      return absl::InvalidArgumentError(absl::StrCat(
          "format ", scheme.format,
          " takes groups or one group per row, not per-tensor scales"));
  }
  return options;
}

}  // namespace quantd

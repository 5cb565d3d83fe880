// The kernel options a Scheme names, for the families whose kernels take
// an options struct of their own: FloatFormatOptions (float_formats.h) and
// HqqOptions (hqq.h).
//
//   QUANTD_ASSIGN_OR_RETURN(Scheme scheme, ParseScheme("nf4_dq"));
//   QUANTD_ASSIGN_OR_RETURN(FloatFormatOptions options,
//                           FloatOptionsOf(scheme));  // kNf4, block 64
#ifndef QUANTD_KERNELS_SCHEME_OPTIONS_H_
#define QUANTD_KERNELS_SCHEME_OPTIONS_H_

#include "absl/status/statusor.h"
#include "kernels/float_formats.h"
#include "kernels/hqq.h"
#include "kernels/scheme.h"

namespace quantd {

// The float format `scheme` names, as FloatQuantize takes it (granularity
// and block size from the scheme). InvalidArgument if it names none.
absl::StatusOr<FloatFormatOptions> FloatOptionsOf(const Scheme& scheme);

// HqqOptions (the defaults of hqq.h) with the scheme's bits and group
// size (0 per channel). InvalidArgument if it names no hqq<b> format.
absl::StatusOr<HqqOptions> HqqOptionsOf(const Scheme& scheme);

}  // namespace quantd

#endif  // QUANTD_KERNELS_SCHEME_OPTIONS_H_

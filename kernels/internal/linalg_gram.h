// Helpers shared by the calibrated methods (gptq.cc, awq.cc,
// smoothquant.cc) over a GramView.
#ifndef QUANTD_KERNELS_INTERNAL_LINALG_GRAM_H_
#define QUANTD_KERNELS_INTERNAL_LINALG_GRAM_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kernels/gptq.h"

namespace quantd {
namespace internal {

// G as a dense f32 features x features matrix (each entry rounded once).
std::vector<float> DenseGramF32(const GramView& gram);

// InvalidArgument "<what> has a non-finite value <v> at index <i>" for the
// first NaN or infinity of x[0, n).
absl::Status CheckFinite(const float* x, int64_t n, absl::string_view what);

// tr(D G D^T) for a dense rows x n `d` and the dense f32 n x n `g`, in row
// chunks (bounded scratch), accumulated in double.
absl::StatusOr<double> TraceQuadraticChunked(const float* d, int64_t rows,
                                             int64_t n, const float* g);

// sqrt(num / den) with the conventions of OutputRelativeError: 0 when both
// are 0, +infinity when only den is.
double RelativeFromTraces(double num, double den);

}  // namespace internal
}  // namespace quantd

#endif  // QUANTD_KERNELS_INTERNAL_LINALG_GRAM_H_

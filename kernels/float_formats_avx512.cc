// AVX-512 element loops of the low-precision float formats (compiled with
// -mavx512f -mavx512bw -mavx512vl -mavx512dq; contract in
// internal/float_kernels.h): the lane-generic loops of
// internal/float_lanes.h on sixteen lanes. vrndscaleps rounds half to even;
// the 16-entry decode table sits in one register (vpermps).
#include "kernels/internal/float_kernels.h"
#include "kernels/internal/float_lanes.h"
#include "kernels/internal/simd_lanes.h"

namespace quantd::internal {

const FloatKernels& FloatKernelsAvx512() {
  static constexpr FloatKernels kKernels = FloatKernelsFor<simd::Avx512>();
  return kKernels;
}

}  // namespace quantd::internal

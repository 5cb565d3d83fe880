// AVX2 element loops of the low-precision float formats (compiled with
// -mavx2 -mfma -mf16c -mbmi2; contract in internal/float_kernels.h): the
// lane-generic loops of internal/float_lanes.h on eight lanes. vroundps
// rounds half to even; the 16-entry decode table sits in two registers
// (two vpermps and a blend on bit 3 of the code).
#include "kernels/internal/float_kernels.h"
#include "kernels/internal/float_lanes.h"
#include "kernels/internal/simd_lanes.h"

namespace quantd::internal {

const FloatKernels& FloatKernelsAvx2() {
  static constexpr FloatKernels kKernels = FloatKernelsFor<simd::Avx2>();
  return kKernels;
}

}  // namespace quantd::internal

// CPU feature detection, done once per process. Kernels choose their fast
// path from Isa(); callers never test features or use #ifdef.
#ifndef QUANTD_KERNELS_CPU_H_
#define QUANTD_KERNELS_CPU_H_

#include "absl/strings/string_view.h"

namespace quantd {

enum class Isa { kScalar, kAvx2, kAvx512 };

// The best instruction set this CPU and OS support (AVX-512 means F, BW, VL,
// DQ with OS support for the zmm state; AVX2 includes FMA, F16C and BMI2). The
// environment variable QUANTD_ISA=scalar|avx2|avx512 caps it (for tests and
// benchmarks); it can never raise it above what the CPU has.
Isa DetectedIsa();
absl::string_view IsaName(Isa isa);  // "scalar", "avx2", "avx512"

}  // namespace quantd

#endif  // QUANTD_KERNELS_CPU_H_

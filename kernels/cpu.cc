#include "kernels/cpu.h"

#include "kernels/internal/isa_kernels.h"

#include <cpuid.h>

#include <cstdlib>
#include <cstring>

namespace quantd {
namespace {

// CPUID leaf 1, ECX bit 29. (clang's __builtin_cpu_supports has no "f16c";
// F16C needs the same OS ymm support that "avx2" already checks.)
bool HasF16c() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (ecx & (1u << 29)) != 0;
}

Isa ProbeCpu() {
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the OS saves the ymm/zmm state
  // (XGETBV), so a "true" here means the instructions are usable.
  const bool avx2 = __builtin_cpu_supports("avx2") &&
                    __builtin_cpu_supports("fma") &&
                    HasF16c() &&
                    __builtin_cpu_supports("bmi2");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  if (avx512) return Isa::kAvx512;
  if (avx2) return Isa::kAvx2;
  return Isa::kScalar;
}

Isa ApplyEnvCap(Isa isa) {
  const char* env = std::getenv("QUANTD_ISA");
  if (env == nullptr) return isa;
  Isa cap = isa;
  if (std::strcmp(env, "scalar") == 0) {
    cap = Isa::kScalar;
  } else if (std::strcmp(env, "avx2") == 0) {
    cap = Isa::kAvx2;
  } else if (std::strcmp(env, "avx512") == 0) {
    cap = Isa::kAvx512;
  }
  // The cap can lower the ISA, never raise it above what the CPU has.
  return static_cast<int>(cap) < static_cast<int>(isa) ? cap : isa;
}

}  // namespace

namespace internal {
Isa CpuIsa() {
  static const Isa isa = ProbeCpu();
  return isa;
}
}  // namespace internal

Isa DetectedIsa() {
  static const Isa isa = ApplyEnvCap(internal::CpuIsa());
  return isa;
}

absl::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

}  // namespace quantd

#include "kernels/convert.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu.h"
#include "kernels/internal/isa_kernels.h"

namespace quantd {
namespace {

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

uint16_t LoadU16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

}  // namespace

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) {  // Inf or NaN: keep the payload, NaN stays NaN
    return BitsFloat(sign | 0x7F800000u | (mantissa << 13));
  }
  if (exponent != 0) {  // normal
    return BitsFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
  }
  if (mantissa == 0) return BitsFloat(sign);  // +-0
  // Subnormal: mantissa * 2^-24, renormalised for f32.
  uint32_t e = 113;  // exponent of 2^-14 in f32, minus the shifts below
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --e;
  }
  mantissa &= 0x3FFu;
  return BitsFloat(sign | (e << 23) | (mantissa << 13));
}

float BFloat16ToFloat(uint16_t b) {
  return BitsFloat(static_cast<uint32_t>(b) << 16);
}

uint16_t FloatToHalf(float f) {
  // Round to nearest even (after F. Giesen's float_to_half_fast3_rtne).
  uint32_t u = FloatBits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7FFFFFFFu;
  uint32_t out;
  if (u >= 0x47800000u) {  // >= 2^16: overflows to Inf, or Inf/NaN
    if (u > 0x7F800000u) {
      out = 0x7E00u | ((u >> 13) & 0x3FFu);  // quiet NaN, payload kept
    } else {
      out = 0x7C00u;
    }
  } else if (u < 0x38800000u) {  // < 2^-14: f16 subnormal or zero
    // Adding 0.5 aligns the mantissa so the FPU rounds (RNE) at 2^-24.
    const float magic = BitsFloat(126u << 23);  // 0.5
    out = FloatBits(BitsFloat(u) + magic) - (126u << 23);
  } else {
    const uint32_t mantissa_odd = (u >> 13) & 1u;
    u += 0xC8000FFFu;  // rebias exponent (15 - 127) << 23, plus 0xFFF
    u += mantissa_odd;
    out = u >> 13;
  }
  return static_cast<uint16_t>(out | sign);
}

uint16_t FloatToBFloat16(float f) {
  const uint32_t u = FloatBits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  }
  const uint32_t rounding_bias = 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding_bias) >> 16);
}

namespace internal {

absl::Status NonFiniteError(int64_t index, float value) {
  const char* what = std::isnan(value) ? "NaN" : (value > 0 ? "+Inf" : "-Inf");
  return absl::InvalidArgumentError(
      absl::StrCat("element ", index, " is ", what));
}

}  // namespace internal

absl::Status ConvertToF32Reference(DType dtype, const void* src, size_t n,
                                   float* dst) {
  const uint8_t* bytes = static_cast<const uint8_t*>(src);
  for (size_t i = 0; i < n; ++i) {
    float v = 0;
    switch (dtype) {
      case DType::kF32:
        std::memcpy(&v, bytes + 4 * i, 4);
        break;
      case DType::kF16:
        v = HalfToFloat(LoadU16(bytes + 2 * i));
        break;
      case DType::kBF16:
        v = BFloat16ToFloat(LoadU16(bytes + 2 * i));
        break;
    }
    if (!std::isfinite(v)) {
      return internal::NonFiniteError(static_cast<int64_t>(i), v);
    }
    dst[i] = v;
  }
  return absl::OkStatus();
}

absl::Status ConvertToF32(DType dtype, const void* src, size_t n, float* dst) {
  // The vector paths load with unaligned loads (any alignment is fine;
  // x86 is little-endian like the wire).
  const Isa isa = DetectedIsa();
  if (isa == Isa::kScalar) return ConvertToF32Reference(dtype, src, n, dst);
  const bool avx512 = isa == Isa::kAvx512;
  int64_t bad = -1;
  switch (dtype) {
    case DType::kF32:
      bad = avx512 ? internal::ConvertF32Avx512(static_cast<const float*>(src),
                                                n, dst)
                   : internal::ConvertF32Avx2(static_cast<const float*>(src),
                                              n, dst);
      break;
    case DType::kF16:
      bad = avx512
                ? internal::ConvertF16Avx512(static_cast<const uint16_t*>(src),
                                             n, dst)
                : internal::ConvertF16Avx2(static_cast<const uint16_t*>(src),
                                           n, dst);
      break;
    case DType::kBF16:
      bad = avx512 ? internal::ConvertBF16Avx512(
                         static_cast<const uint16_t*>(src), n, dst)
                   : internal::ConvertBF16Avx2(
                         static_cast<const uint16_t*>(src), n, dst);
      break;
  }
  if (bad >= 0) return internal::NonFiniteError(bad, dst[bad]);
  return absl::OkStatus();
}

}  // namespace quantd

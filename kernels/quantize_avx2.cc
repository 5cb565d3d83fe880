// AVX2 (+FMA, F16C, BMI2) kernels. Compiled with -mavx2 -mfma -mf16c -mbmi2;
// only called when internal::CpuIsa() is at least kAvx2 (see isa_kernels.h).
// The vector code is internal/quantize_lanes.h on eight lanes (simd::Avx2);
// the BMI2 packers below serve both vector levels.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/quantize_lanes.h"
#include "kernels/internal/simd_lanes.h"

namespace quantd::internal {
namespace {

template <int kBits>
void PackBmi2Fixed(const uint8_t* codes, int64_t n, uint8_t* dst) {
  // pext gathers the low kBits of each of 8 bytes into 8*kBits contiguous
  // bits, LSB first: exactly the stream layout of 8 codes.
  constexpr uint64_t kMask = 0x0101010101010101ull * ((1u << kBits) - 1);
  for (int64_t i = 0; i < n; i += 8) {
    uint64_t word;
    std::memcpy(&word, codes + i, 8);
    const uint64_t packed = _pext_u64(word, kMask);
    std::memcpy(dst + i / 8 * kBits, &packed, kBits);
  }
}

template <int kBits>
void UnpackBmi2Fixed(const uint8_t* packed, int64_t n, uint8_t* codes) {
  // pdep spreads 8*kBits contiguous bits, LSB first, over the low kBits of
  // each of 8 bytes: the inverse of PackBmi2Fixed.
  constexpr uint64_t kMask = 0x0101010101010101ull * ((1u << kBits) - 1);
  for (int64_t i = 0; i < n; i += 8) {
    uint64_t word = 0;
    std::memcpy(&word, packed + i / 8 * kBits, kBits);
    const uint64_t spread = _pdep_u64(word, kMask);
    std::memcpy(codes + i, &spread, 8);
  }
}

using V = simd::Avx2;

}  // namespace

void PackCodesBmi2(const uint8_t* codes, int64_t n, int bits, uint8_t* dst) {
  switch (bits) {
    case 2: PackBmi2Fixed<2>(codes, n, dst); break;
    case 3: PackBmi2Fixed<3>(codes, n, dst); break;
    case 4: PackBmi2Fixed<4>(codes, n, dst); break;
    case 5: PackBmi2Fixed<5>(codes, n, dst); break;
    case 6: PackBmi2Fixed<6>(codes, n, dst); break;
    case 7: PackBmi2Fixed<7>(codes, n, dst); break;
    default:
      if (n > 0) std::memcpy(dst, codes, static_cast<size_t>(n));
      break;
  }
}

void UnpackCodesBmi2(const uint8_t* src, int64_t n, int bits, uint8_t* codes) {
  switch (bits) {
    case 2: UnpackBmi2Fixed<2>(src, n, codes); break;
    case 3: UnpackBmi2Fixed<3>(src, n, codes); break;
    case 4: UnpackBmi2Fixed<4>(src, n, codes); break;
    case 5: UnpackBmi2Fixed<5>(src, n, codes); break;
    case 6: UnpackBmi2Fixed<6>(src, n, codes); break;
    case 7: UnpackBmi2Fixed<7>(src, n, codes); break;
    default:
      if (n > 0) std::memcpy(codes, src, static_cast<size_t>(n));
      break;
  }
}

int64_t QuantizeIntAvx2(const float* src, QuantizedTensor& dst) {
  return QuantizeIntDriver<QuantizeOps<V>>(src, dst);
}

int64_t ConvertF16Avx2(const uint16_t* src, size_t n, float* dst) {
  return ConvertF16<V>(src, n, dst);
}

int64_t ConvertBF16Avx2(const uint16_t* src, size_t n, float* dst) {
  return ConvertBF16<V>(src, n, dst);
}

int64_t ConvertF32Avx2(const float* src, size_t n, float* dst) {
  return ConvertF32<V>(src, n, dst);
}

void DequantizeIntAvx2(const QuantizedTensor& src, float* dst) {
  DequantizeInt<V>(src, dst);
}

ErrorMetrics DequantizeAndMeasureAvx2(const QuantizedTensor& q,
                                      const float* src, float* w_hat) {
  return DequantizeAndMeasure<V>(q, src, w_hat);
}

void AccumulateMetricsAvx2(const float* w, const float* w_hat, int64_t n,
                           MetricSums& sums) {
  AccumulateChunk<V>(w, w_hat, n, sums);
}

}  // namespace quantd::internal

// AVX-512 (F, BW, VL, DQ) kernels. Compiled with -mavx512*; only called when
// internal::CpuIsa() is kAvx512 (see isa_kernels.h). The vector code is
// internal/quantize_lanes.h on sixteen lanes (simd::Avx512); code packing
// falls back to the BMI2 packers of quantize_avx2.cc.
#include <cstddef>
#include <cstdint>

#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/quantize_lanes.h"
#include "kernels/internal/simd_lanes.h"

namespace quantd::internal {
namespace {
using V = simd::Avx512;
}  // namespace

int64_t QuantizeIntAvx512(const float* src, QuantizedTensor& dst) {
  return QuantizeIntDriver<QuantizeOps<V>>(src, dst);
}

int64_t RowScalesSymInt8(const float* src, int64_t rows, int64_t row_length,
                         float* scales, float* inv_scales) {
  // Only the AVX-512 build has this helper; the oneDNN path needs AVX-512
  // anyway for its own fast reorder, and callers check CpuIsa().
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * row_length;
    float amax = 0;
    if (!QuantizeOps<V>::AbsMax(x, row_length, &amax)) {
      return r * row_length + FirstNonFinite(x, row_length);
    }
    const GroupParams p = SymParams(amax, 8);
    scales[r] = p.scale;
    inv_scales[r] = p.inv;
  }
  return -1;
}

int64_t ConvertF16Avx512(const uint16_t* src, size_t n, float* dst) {
  return ConvertF16<V>(src, n, dst);
}

int64_t ConvertBF16Avx512(const uint16_t* src, size_t n, float* dst) {
  return ConvertBF16<V>(src, n, dst);
}

int64_t ConvertF32Avx512(const float* src, size_t n, float* dst) {
  return ConvertF32<V>(src, n, dst);
}

void DequantizeIntAvx512(const QuantizedTensor& src, float* dst) {
  DequantizeInt<V>(src, dst);
}

ErrorMetrics DequantizeAndMeasureAvx512(const QuantizedTensor& q,
                                        const float* src, float* w_hat) {
  return DequantizeAndMeasure<V>(q, src, w_hat);
}

void AccumulateMetricsAvx512(const float* w, const float* w_hat, int64_t n,
                             MetricSums& sums) {
  AccumulateChunk<V>(w, w_hat, n, sums);
}

}  // namespace quantd::internal

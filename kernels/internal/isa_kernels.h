// Internal: per-ISA kernel entry points behind the public dispatchers in
// convert.h and quantize.h. Each *Avx2 function lives in quantize_avx2.cc
// (compiled with -mavx2 -mfma -mf16c -mbmi2), each *Avx512 one in
// quantize_avx512.cc. REQUIRES: CpuIsa() is at least the function's ISA;
// calling one on a CPU without it is an illegal instruction.
//
// Tests call these directly to check every path against the reference
// whatever QUANTD_ISA says; production code goes through the dispatchers.
#ifndef QUANTD_KERNELS_INTERNAL_ISA_KERNELS_H_
#define QUANTD_KERNELS_INTERNAL_ISA_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cpu.h"
#include "kernels/internal/metrics_internal.h"
#include "kernels/quantize.h"

namespace quantd::internal {

// What the CPU supports, ignoring the QUANTD_ISA cap. Cached.
Isa CpuIsa();

// InvalidArgument "element <index> is NaN" / "is +Inf" / "is -Inf".
absl::Status NonFiniteError(int64_t index, float value);

// Returns the index of the first non-finite element of x[0, n), or -1.
int64_t FirstNonFinite(const float* x, int64_t n);

// Quantizer signature that also reports bad input: writes dst like a
// QuantizeFn and returns -1, or returns the index of the first non-finite
// element of src (dst is then unspecified). Any int2..int8 layout.
using CheckedQuantizeFn = int64_t (*)(const float* src, QuantizedTensor& dst);

// The scalar reference wrapped as a CheckedQuantizeFn (quantize.cc).
int64_t QuantizeIntScalar(const float* src, QuantizedTensor& dst);
int64_t QuantizeIntAvx2(const float* src, QuantizedTensor& dst);
int64_t QuantizeIntAvx512(const float* src, QuantizedTensor& dst);
// The fast path DetectedIsa() selects (one of the three above).
CheckedQuantizeFn SelectedQuantizeInt();

// Dequantizers, any int2..int8 layout; all bit-identical to
// DequantizeReference. The scalar one is the reference itself.
void DequantizeIntScalar(const QuantizedTensor& src, float* dst);
void DequantizeIntAvx2(const QuantizedTensor& src, float* dst);
void DequantizeIntAvx512(const QuantizedTensor& src, float* dst);
// The fast path DetectedIsa() selects (one of the three above).
DequantizeFn SelectedDequantizeInt();

// DequantizeAndMeasure per ISA (contract in quantize.h). The scalar one sums
// in ComputeErrorMetrics' order, so it equals it exactly.
using DequantizeAndMeasureFn = ErrorMetrics (*)(const QuantizedTensor& q,
                                                const float* src, float* w_hat);
ErrorMetrics DequantizeAndMeasureScalar(const QuantizedTensor& q,
                                        const float* src, float* w_hat);
ErrorMetrics DequantizeAndMeasureAvx2(const QuantizedTensor& q,
                                      const float* src, float* w_hat);
ErrorMetrics DequantizeAndMeasureAvx512(const QuantizedTensor& q,
                                        const float* src, float* w_hat);
DequantizeAndMeasureFn SelectedDequantizeAndMeasure();

// The accumulation step of DequantizeAndMeasure per ISA, for the other
// fused dequantize-and-measure paths (GgmlDequantizeAndMeasure): adds the
// metric sums of w[0, n) against w_hat[0, n), n <= kMetricsBlock, to
// `sums`. The scalar one is AccumulateBlockReference.
using AccumulateMetricsFn = void (*)(const float* w, const float* w_hat,
                                     int64_t n, MetricSums& sums);
void AccumulateMetricsScalar(const float* w, const float* w_hat, int64_t n,
                             MetricSums& sums);
void AccumulateMetricsAvx2(const float* w, const float* w_hat, int64_t n,
                           MetricSums& sums);
void AccumulateMetricsAvx512(const float* w, const float* w_hat, int64_t n,
                             MetricSums& sums);
AccumulateMetricsFn SelectedAccumulateMetrics();

// Vector range pass for int8 symmetric per channel: scales[r] of each of
// `rows` rows of `row_length` values, plus inv_scales[r] = 1 / scales[r].
// Returns -1 or the index of the first non-finite element. (Used by the
// oneDNN path.)
int64_t RowScalesSymInt8(const float* src, int64_t rows, int64_t row_length,
                         float* scales, float* inv_scales);

// dtype conversion to f32; return -1 or the first non-finite index.
int64_t ConvertF16Avx2(const uint16_t* src, size_t n, float* dst);
int64_t ConvertBF16Avx2(const uint16_t* src, size_t n, float* dst);
int64_t ConvertF32Avx2(const float* src, size_t n, float* dst);
int64_t ConvertF16Avx512(const uint16_t* src, size_t n, float* dst);
int64_t ConvertBF16Avx512(const uint16_t* src, size_t n, float* dst);
int64_t ConvertF32Avx512(const float* src, size_t n, float* dst);

// Packs n codes (n a multiple of 8) with BMI2 pext / vector shifts.
// REQUIRES: CpuIsa() >= kAvx2.
void PackCodesBmi2(const uint8_t* codes, int64_t n, int bits, uint8_t* dst);
// Inverse: unpacks n codes (n a multiple of 8) with BMI2 pdep, one byte per
// code (raw fields). REQUIRES: CpuIsa() >= kAvx2.
void UnpackCodesBmi2(const uint8_t* src, int64_t n, int bits, uint8_t* codes);

}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_ISA_KERNELS_H_

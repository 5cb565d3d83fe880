// Throughput of the quantization kernels in GB/s of f32 input, next to a
// memcpy of the same bytes (the memory-bandwidth anchor). Single thread.
//
//   quantd_kernels_bench --benchmark_min_time=0.2
//   QUANTD_ISA=avx2 quantd_kernels_bench   # cap the dispatched ISA
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/convert.h"
#include "kernels/cpu.h"
#include "kernels/ggml_formats.h"
#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/metrics.h"
#include "kernels/onednn_int8.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

constexpr int64_t kRows = 4096;
constexpr int64_t kCols = 4096;

const std::vector<float>& Weights() {
  static const std::vector<float>* w = [] {
    auto* v = new std::vector<float>(static_cast<size_t>(kRows * kCols));
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 0.02f);
    for (float& x : *v) x = d(rng);
    return v;
  }();
  return *w;
}

void SetBytes(benchmark::State& state, int64_t bytes) {
  state.SetBytesProcessed(state.iterations() * bytes);
}

void BM_Memcpy(benchmark::State& state) {
  const std::vector<float>& w = Weights();
  std::vector<float> dst(w.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), w.data(), w.size() * sizeof(float));
    benchmark::ClobberMemory();
  }
  SetBytes(state, static_cast<int64_t>(w.size() * sizeof(float)));
}
BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond);

enum Path { kReference, kFast, kAvx2, kOneDnn };

void BM_Quantize(benchmark::State& state, const char* scheme_text, Path path) {
  const std::vector<float>& w = Weights();
  auto layout = MakeLayout(*ParseScheme(scheme_text), {kRows, kCols});
  QuantizedTensor q = AllocateQuantized(*layout);
  if (path == kAvx2 && internal::CpuIsa() < Isa::kAvx2) {
    state.SkipWithError("no AVX2");
    return;
  }
  for (auto _ : state) {
    absl::Status s;
    switch (path) {
      case kReference:
        s = QuantizeReference(w.data(), q);
        break;
      case kFast:
        s = Quantize(w.data(), q);
        break;
      case kAvx2:
        internal::QuantizeIntAvx2(w.data(), q);
        break;
      case kOneDnn:
        s = QuantizeInt8PerChannelOneDnn(w.data(), q);
        break;
    }
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(q.codes.data());
  }
  SetBytes(state, static_cast<int64_t>(w.size() * sizeof(float)));
}

#define QUANTD_BENCH(name, scheme, path)                      \
  BENCHMARK_CAPTURE(BM_Quantize, name, scheme, path)         \
      ->Unit(benchmark::kMillisecond)

QUANTD_BENCH(int8_sym_channel/reference, "int8", kReference);
QUANTD_BENCH(int8_sym_channel/fast, "int8", kFast);
QUANTD_BENCH(int8_sym_channel/avx2, "int8", kAvx2);
QUANTD_BENCH(int8_sym_channel/onednn, "int8", kOneDnn);
QUANTD_BENCH(int4_sym_g128/reference, "int4_g128", kReference);
QUANTD_BENCH(int4_sym_g128/fast, "int4_g128", kFast);
QUANTD_BENCH(int4_sym_g128/avx2, "int4_g128", kAvx2);
QUANTD_BENCH(int4_asym_g128/reference, "int4_asym_g128", kReference);
QUANTD_BENCH(int4_asym_g128/fast, "int4_asym_g128", kFast);
QUANTD_BENCH(int4_asym_g128/avx2, "int4_asym_g128", kAvx2);
QUANTD_BENCH(int3_asym_g64/reference, "int3_asym_g64", kReference);
QUANTD_BENCH(int3_asym_g64/fast, "int3_asym_g64", kFast);
QUANTD_BENCH(int3_asym_g64/avx2, "int3_asym_g64", kAvx2);

// ggml block formats (GgmlQuantize over the whole 4096 x 4096 tensor,
// including the finiteness check), GB/s of f32 input: the scalar reference
// against the dispatched fast path (equal to the reference where a format
// has no vector path yet).
void BM_GgmlQuantize(benchmark::State& state, const char* type, bool reference) {
  const std::vector<float>& w = Weights();
  const GgmlFormatTraits* f = FindGgmlFormat(type);
  std::vector<uint8_t> dst(static_cast<size_t>(kRows * *GgmlRowBytes(*f, kCols)));
  for (auto _ : state) {
    absl::Status s =
        reference ? GgmlQuantizeReference(*f, w.data(), kRows, kCols, nullptr, dst.data())
                  : GgmlQuantize(*f, w.data(), kRows, kCols, nullptr, dst.data());
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(dst.data());
  }
  SetBytes(state, static_cast<int64_t>(w.size() * sizeof(float)));
}

#define QUANTD_GGML_BENCH(type)                                          \
  BENCHMARK_CAPTURE(BM_GgmlQuantize, type/reference, #type, true)        \
      ->Unit(benchmark::kMillisecond);                                   \
  BENCHMARK_CAPTURE(BM_GgmlQuantize, type/fast, #type, false)            \
      ->Unit(benchmark::kMillisecond)

QUANTD_GGML_BENCH(Q8_0);
QUANTD_GGML_BENCH(Q4_0);
QUANTD_GGML_BENCH(Q4_1);
QUANTD_GGML_BENCH(Q5_0);
QUANTD_GGML_BENCH(Q5_1);
QUANTD_GGML_BENCH(IQ4_NL);
QUANTD_GGML_BENCH(MXFP4);

// ggml K-quants, block quantizers called directly on the first 256 rows of
// the tensor (4 MiB of f32; the references take ~0.1 s per pass), with and
// without an importance matrix: the scalar reference against the AVX2 path.
void BM_GgmlKQuant(benchmark::State& state, GgmlQuantizeFn fn, int block_bytes,
                   bool importance) {
  if (internal::CpuIsa() < Isa::kAvx2) {
    state.SkipWithError("no AVX2");
    return;
  }
  constexpr int64_t kKRows = 256;
  const std::vector<float>& w = Weights();
  std::vector<float> imatrix(static_cast<size_t>(kCols));
  for (size_t j = 0; j < imatrix.size(); ++j) {
    imatrix[j] = 0.5f + static_cast<float>(j % 13);
  }
  const int64_t blocks_per_row = kCols / kGgmlBlock256;
  std::vector<uint8_t> dst(static_cast<size_t>(kKRows * blocks_per_row * block_bytes));
  for (auto _ : state) {
    for (int64_t r = 0; r < kKRows; ++r) {
      fn(w.data() + r * kCols, blocks_per_row, importance ? imatrix.data() : nullptr,
         dst.data() + r * blocks_per_row * block_bytes);
    }
    benchmark::DoNotOptimize(dst.data());
  }
  SetBytes(state, kKRows * kCols * static_cast<int64_t>(sizeof(float)));
}

#define QUANTD_KQUANT_BENCH(type, bytes)                                       \
  BENCHMARK_CAPTURE(BM_GgmlKQuant, type/reference, internal::GgmlQuantize##type##Reference, \
                    bytes, false)                                              \
      ->Unit(benchmark::kMillisecond);                                         \
  BENCHMARK_CAPTURE(BM_GgmlKQuant, type/avx2, internal::GgmlQuantize##type##Avx2, bytes, \
                    false)                                                     \
      ->Unit(benchmark::kMillisecond);                                         \
  BENCHMARK_CAPTURE(BM_GgmlKQuant, type/imatrix/reference,                     \
                    internal::GgmlQuantize##type##Reference, bytes, true)      \
      ->Unit(benchmark::kMillisecond);                                         \
  BENCHMARK_CAPTURE(BM_GgmlKQuant, type/imatrix/avx2, internal::GgmlQuantize##type##Avx2, \
                    bytes, true)                                               \
      ->Unit(benchmark::kMillisecond)

QUANTD_KQUANT_BENCH(Q2_K, 84);
QUANTD_KQUANT_BENCH(Q3_K, 110);
QUANTD_KQUANT_BENCH(Q4_K, 144);
QUANTD_KQUANT_BENCH(Q5_K, 176);
QUANTD_KQUANT_BENCH(Q6_K, 210);

void BM_ConvertF16(benchmark::State& state, bool reference) {
  const size_t n = static_cast<size_t>(kRows * kCols);
  std::vector<uint16_t> src(n);
  const std::vector<float>& w = Weights();
  for (size_t i = 0; i < n; ++i) src[i] = FloatToHalf(w[i]);
  std::vector<float> dst(n);
  for (auto _ : state) {
    absl::Status s = reference
                         ? ConvertToF32Reference(DType::kF16, src.data(), n, dst.data())
                         : ConvertToF32(DType::kF16, src.data(), n, dst.data());
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(dst.data());
  }
  // Bytes of f32 produced, comparable with the rows above.
  SetBytes(state, static_cast<int64_t>(n * sizeof(float)));
}
BENCHMARK_CAPTURE(BM_ConvertF16, reference, true)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ConvertF16, fast, false)->Unit(benchmark::kMillisecond);

// Dequantization and the round trip's error, GB/s of f32 produced (the same
// bytes as the input of the rows above). Reference: scalar Dequantize into a
// full buffer (+ ComputeErrorMetrics for the metrics rows); fast: the
// dispatched vector path (DequantizeAndMeasure with w_hat == nullptr).
enum DeqPath { kDeqReference, kDeqFast, kMeasureReference, kMeasureFused };

void BM_Dequantize(benchmark::State& state, const char* scheme_text,
                   DeqPath path) {
  const std::vector<float>& w = Weights();
  auto layout = MakeLayout(*ParseScheme(scheme_text), {kRows, kCols});
  QuantizedTensor q = AllocateQuantized(*layout);
  if (absl::Status s = Quantize(w.data(), q); !s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  std::vector<float> w_hat(path == kMeasureFused ? 0 : w.size());
  ErrorMetrics m;
  for (auto _ : state) {
    switch (path) {
      case kDeqReference:
        DequantizeReference(q, w_hat.data());
        break;
      case kDeqFast:
        Dequantize(q, w_hat.data());
        break;
      case kMeasureReference:
        DequantizeReference(q, w_hat.data());
        m = ComputeErrorMetrics(w.data(), w_hat.data(), w.size());
        break;
      case kMeasureFused:
        m = DequantizeAndMeasure(q, w.data(), nullptr);
        break;
    }
    benchmark::DoNotOptimize(w_hat.data());
    benchmark::DoNotOptimize(m);
    benchmark::ClobberMemory();
  }
  SetBytes(state, static_cast<int64_t>(w.size() * sizeof(float)));
}

#define QUANTD_DEQ_BENCH(name, scheme, path)                  \
  BENCHMARK_CAPTURE(BM_Dequantize, name, scheme, path)       \
      ->Unit(benchmark::kMillisecond)

QUANTD_DEQ_BENCH(int8_sym_channel/reference, "int8", kDeqReference);
QUANTD_DEQ_BENCH(int8_sym_channel/fast, "int8", kDeqFast);
QUANTD_DEQ_BENCH(int4_asym_g128/reference, "int4_asym_g128", kDeqReference);
QUANTD_DEQ_BENCH(int4_asym_g128/fast, "int4_asym_g128", kDeqFast);
QUANTD_DEQ_BENCH(int8_sym_channel/measure_reference, "int8", kMeasureReference);
QUANTD_DEQ_BENCH(int8_sym_channel/measure_fused, "int8", kMeasureFused);
QUANTD_DEQ_BENCH(int4_asym_g128/measure_reference, "int4_asym_g128",
                 kMeasureReference);
QUANTD_DEQ_BENCH(int4_asym_g128/measure_fused, "int4_asym_g128", kMeasureFused);

}  // namespace
}  // namespace quantd

BENCHMARK_MAIN();

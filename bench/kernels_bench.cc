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
#include "kernels/dtype.h"
#include "kernels/ggml_formats.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/layout.h"
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

// ggml block formats through the format table (GgmlQuantize, including the
// finiteness check), GB/s of f32 input: the scalar reference against the
// dispatched fast path (QUANTD_ISA caps it). The 32-element formats run over
// the whole 4096 x 4096 tensor; the 256-element ones (K-quants, IQ4_XS,
// whose references take ~0.1 s per 4 MiB) over its first 256 rows, with and
// without an importance matrix shared by the rows.
void BM_GgmlQuantize(benchmark::State& state, const char* type, bool reference,
                     bool importance) {
  const std::vector<float>& w = Weights();
  const GgmlFormatTraits* f = FindGgmlFormat(type);
  if (f == nullptr) {
    state.SkipWithError("unknown ggml type");
    return;
  }
  const int64_t rows = f->block_size == kGgmlBlock256 ? 256 : kRows;
  std::vector<float> imatrix(static_cast<size_t>(kCols));
  for (size_t j = 0; j < imatrix.size(); ++j) {
    imatrix[j] = 0.5f + static_cast<float>(j % 13);
  }
  const float* qw = importance ? imatrix.data() : nullptr;
  std::vector<uint8_t> dst(static_cast<size_t>(rows * *GgmlRowBytes(*f, kCols)));
  for (auto _ : state) {
    absl::Status s =
        reference ? GgmlQuantizeReference(*f, w.data(), rows, kCols, qw, dst.data())
                  : GgmlQuantize(*f, w.data(), rows, kCols, qw, dst.data());
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(dst.data());
  }
  SetBytes(state, rows * kCols * static_cast<int64_t>(sizeof(float)));
}

#define QUANTD_GGML_BENCH(type)                                          \
  BENCHMARK_CAPTURE(BM_GgmlQuantize, type/reference, #type, true, false) \
      ->Unit(benchmark::kMillisecond);                                   \
  BENCHMARK_CAPTURE(BM_GgmlQuantize, type/fast, #type, false, false)     \
      ->Unit(benchmark::kMillisecond)
#define QUANTD_GGML_IMATRIX_BENCH(type)                                          \
  BENCHMARK_CAPTURE(BM_GgmlQuantize, type/imatrix/reference, #type, true, true) \
      ->Unit(benchmark::kMillisecond);                                           \
  BENCHMARK_CAPTURE(BM_GgmlQuantize, type/imatrix/fast, #type, false, true)     \
      ->Unit(benchmark::kMillisecond)

QUANTD_GGML_BENCH(Q4_0);
QUANTD_GGML_BENCH(Q4_1);
QUANTD_GGML_BENCH(Q5_0);
QUANTD_GGML_BENCH(Q5_1);
QUANTD_GGML_BENCH(Q8_0);
QUANTD_GGML_BENCH(Q2_K);
QUANTD_GGML_IMATRIX_BENCH(Q2_K);
QUANTD_GGML_BENCH(Q3_K);
QUANTD_GGML_IMATRIX_BENCH(Q3_K);
QUANTD_GGML_BENCH(Q4_K);
QUANTD_GGML_IMATRIX_BENCH(Q4_K);
QUANTD_GGML_BENCH(Q5_K);
QUANTD_GGML_IMATRIX_BENCH(Q5_K);
QUANTD_GGML_BENCH(Q6_K);
QUANTD_GGML_IMATRIX_BENCH(Q6_K);
QUANTD_GGML_BENCH(IQ4_NL);
QUANTD_GGML_BENCH(IQ4_XS);
QUANTD_GGML_BENCH(MXFP4);

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

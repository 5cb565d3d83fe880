// Throughput (GB/s of f32 input, one core) and SQNR of the codebook formats
// and HQQ on a 1024 x 4096 tensor, Gaussian (sigma 0.02) or with outliers
// (1% of values x25, every 7th row x30). The sqnr_db counter is the round
// trip's quality; compare with quantd_kernels_bench's int rows.
//
//   quantd_nonuniform_bench --benchmark_min_time=0.1
//   QUANTD_ISA=avx2 quantd_nonuniform_bench   # cap the dispatched ISA
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/hqq.h"
#include "kernels/layout.h"
#include "kernels/nonuniform.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

constexpr int64_t kRows = 1024;
constexpr int64_t kCols = 4096;

std::vector<float> MakeWeights(bool outliers) {
  std::vector<float> w(static_cast<size_t>(kRows * kCols));
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int64_t i = 0; i < kRows * kCols; ++i) {
    float x = d(rng);
    if (outliers && u(rng) < 0.01f) x *= 25.0f;
    if (outliers && (i / kCols) % 7 == 3) x *= 30.0f;
    w[static_cast<size_t>(i)] = x;
  }
  return w;
}

const std::vector<float>& Weights(bool outliers) {
  static const std::vector<float>* gaussian =
      new std::vector<float>(MakeWeights(false));
  static const std::vector<float>* heavy =
      new std::vector<float>(MakeWeights(true));
  return outliers ? *heavy : *gaussian;
}

double Sqnr(const std::vector<float>& w, const std::vector<float>& w_hat) {
  double s = 0;
  double e = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    s += double{w[i]} * w[i];
    e += (double{w[i]} - w_hat[i]) * (double{w[i]} - w_hat[i]);
  }
  return 10 * std::log10(s / e);
}

void Report(benchmark::State& state, double sqnr, double bpw) {
  state.SetBytesProcessed(state.iterations() * kRows * kCols * 4);
  state.counters["sqnr_db"] = sqnr;
  state.counters["bits_per_weight"] = bpw;
}

enum Method { kKMeans, kPow2, kHqq, kRtn };

// Args: bits, outliers (0/1). Groups of 128 along the row.
void BM_Quantize(benchmark::State& state, Method method) {
  const int bits = static_cast<int>(state.range(0));
  const std::vector<float>& w = Weights(state.range(1) != 0);
  std::vector<float> w_hat(w.size());
  double bpw = 0;
  for (auto _ : state) {
    if (method == kHqq) {
      HqqOptions o;
      o.bits = bits;
      o.group_size = 128;
      HqqTensor q = *HqqQuantize(w.data(), kRows, kCols, o);
      state.PauseTiming();
      (void)HqqDequantize(q, w_hat.data());
      bpw = q.BitsPerWeight();
      state.ResumeTiming();
    } else if (method == kRtn) {
      Scheme scheme;
      scheme.format = "int" + std::to_string(bits);
      scheme.symmetric = false;
      scheme.granularity = Granularity::kPerGroup;
      scheme.group_size = 128;
      QuantizedTensor q = AllocateQuantized(*MakeLayout(scheme, {kRows, kCols}));
      (void)Quantize(w.data(), q);
      state.PauseTiming();
      Dequantize(q, w_hat.data());
      bpw = q.layout.BitsPerWeight();
      state.ResumeTiming();
    } else {
      CodebookOptions o;
      o.bits = bits;
      o.granularity = Granularity::kPerGroup;
      o.group_size = 128;
      CodebookTensor q = method == kKMeans
                             ? *KMeansQuantize(w.data(), kRows, kCols, o)
                             : *PowerOfTwoQuantize(w.data(), kRows, kCols, o);
      state.PauseTiming();
      (void)CodebookDequantize(q, w_hat.data());
      bpw = q.BitsPerWeight();
      state.ResumeTiming();
    }
  }
  Report(state, Sqnr(w, w_hat), bpw);
}

void Args(benchmark::internal::Benchmark* b, int min_bits) {
  for (int outliers : {0, 1}) {
    for (int bits = min_bits; bits <= 4; ++bits) b->Args({bits, outliers});
    b->Args({8, outliers});
  }
  b->Unit(benchmark::kMillisecond);
}

BENCHMARK_CAPTURE(BM_Quantize, kmeans_g128, kKMeans)->Apply([](auto* b) { Args(b, 1); });
BENCHMARK_CAPTURE(BM_Quantize, pow2_g128, kPow2)->Apply([](auto* b) { Args(b, 2); });
BENCHMARK_CAPTURE(BM_Quantize, hqq_g128, kHqq)->Apply([](auto* b) { Args(b, 1); });
BENCHMARK_CAPTURE(BM_Quantize, rtn_asym_g128, kRtn)->Apply([](auto* b) { Args(b, 2); });

// The table-lookup dequantizer alone (k-means tables, groups of 128).
void BM_CodebookDequantize(benchmark::State& state) {
  const std::vector<float>& w = Weights(false);
  CodebookOptions o;
  o.bits = static_cast<int>(state.range(0));
  o.granularity = Granularity::kPerGroup;
  o.group_size = 128;
  o.max_iterations = 2;
  const CodebookTensor q = *KMeansQuantize(w.data(), kRows, kCols, o);
  std::vector<float> w_hat(w.size());
  for (auto _ : state) {
    (void)CodebookDequantize(q, w_hat.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kRows * kCols * 4);
}
BENCHMARK(BM_CodebookDequantize)->DenseRange(1, 8)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace quantd

BENCHMARK_MAIN();

// Calibration statistics: the time to fold 2048 tokens x 4096 features into
// a CalibrationAccumulator, next to one plain oneDNN sgemm computing the
// full XᵀX of the same X (the G GEMM alone). GFLOP/s counts 2·T·F² flops
// for every row (the full GEMM's), so the accumulator's figure above the
// sgemm's shows what computing only the upper triangle saves. One thread.
//
//   quantd_calibration_bench --benchmark_min_time=2
#include <omp.h>

#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "dnnl.h"
#include "kernels/calibration_stats.h"

namespace quantd {
namespace {

constexpr int64_t kTokens = 2048;
constexpr int64_t kFeatures = 4096;

const std::vector<float>& Activations() {
  static const std::vector<float>* x = [] {
    auto* v = new std::vector<float>(static_cast<size_t>(kTokens * kFeatures));
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (float& value : *v) value = d(rng);
    return v;
  }();
  return *x;
}

void SetGemmCounters(benchmark::State& state) {
  const double flops = 2.0 * kTokens * kFeatures * kFeatures;
  state.counters["GFLOP/s"] = benchmark::Counter(
      flops * 1e-9 * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

// One sgemm: G (f32, F x F) = XᵀX over all tokens at once.
void BM_OneDnnSgemmGram(benchmark::State& state) {
  const std::vector<float>& x = Activations();
  std::vector<float> g(static_cast<size_t>(kFeatures * kFeatures));
  omp_set_num_threads(1);
  for (auto _ : state) {
    if (dnnl_sgemm('T', 'N', kFeatures, kFeatures, kTokens, 1.0f, x.data(),
                   kFeatures, x.data(), kFeatures, 0.0f, g.data(),
                   kFeatures) != dnnl_success) {
      state.SkipWithError("dnnl_sgemm failed");
      break;
    }
    benchmark::DoNotOptimize(g.data());
  }
  SetGemmCounters(state);
}
BENCHMARK(BM_OneDnnSgemmGram)->Unit(benchmark::kMillisecond)->UseRealTime();

// The accumulator in chunks of 256 rows, then Gram() (the full matrix).
// Arg 0: G, stats and the per-tensor histogram; 1: also per-channel
// histograms; 2: G alone (stats computed but no histograms matter little:
// the arg only drops the per-channel ones) with 2048-row GEMM blocks.
void BM_AccumulateGram(benchmark::State& state) {
  const std::vector<float>& x = Activations();
  CalibrationOptions options;
  const bool everything = state.range(0) == 1;
  if (!everything) options.channel_histogram_bins = 0;
  if (state.range(0) == 2) options.gram_block_rows = 2048;
  constexpr int64_t kChunk = 256;
  for (auto _ : state) {
    absl::StatusOr<CalibrationAccumulator> acc =
        CalibrationAccumulator::Create("bench", kFeatures, options);
    if (!acc.ok()) {
      state.SkipWithError("Create failed");
      break;
    }
    for (int64_t r = 0; r < kTokens; r += kChunk) {
      if (!acc->Add(x.data() + r * kFeatures, kChunk, kFeatures).ok()) {
        state.SkipWithError("Add failed");
        break;
      }
    }
    absl::StatusOr<std::vector<double>> g = acc->Gram();
    benchmark::DoNotOptimize(g);
  }
  SetGemmCounters(state);
  state.SetLabel(everything ? "G + stats + histograms"
                 : state.range(0) == 2 ? "G + stats, 2048-row blocks"
                                       : "G + stats");
}
BENCHMARK(BM_AccumulateGram)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The statistics without G: the per-element cost of moments and histograms.
void BM_AccumulateStatsOnly(benchmark::State& state) {
  const std::vector<float>& x = Activations();
  CalibrationOptions options;
  options.gram = false;
  for (auto _ : state) {
    absl::StatusOr<CalibrationAccumulator> acc =
        CalibrationAccumulator::Create("bench", kFeatures, options);
    if (!acc.ok() || !acc->Add(x.data(), kTokens, kFeatures).ok()) {
      state.SkipWithError("accumulate failed");
      break;
    }
    benchmark::DoNotOptimize(acc->tokens());
  }
  state.SetBytesProcessed(state.iterations() * kTokens * kFeatures *
                          static_cast<int64_t>(sizeof(float)));
}
BENCHMARK(BM_AccumulateStatsOnly)->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace quantd

BENCHMARK_MAIN();

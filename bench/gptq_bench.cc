// GPTQ on a 4096 x 4096 layer with G from 2048 calibration tokens: the
// inverse-Hessian factorization alone (Cholesky + triangular inverse), the
// whole GptqQuantize (H from G, factorization, column updates and lazy
// batch GEMMs; output error not measured), and one plain oneDNN sgemm of
// the size of G = X^T X (4096 x 2048 x 4096) for scale. Counters: GFLOP/s
// of the GEMM-shaped work (Cholesky + inverse: 2n^3/3; the lazy batch
// updates: rows * n^2; sgemm: 2 * n^2 * tokens).
//
//   quantd_gptq_bench --benchmark_filter=. --benchmark_counters_tabular=true
#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/gptq.h"
#include "kernels/internal/linalg.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

constexpr int64_t kFeatures = 4096;
constexpr int64_t kRows = 4096;
constexpr int64_t kTokens = 2048;

struct Layer {
  std::vector<float> x;  // tokens x features
  std::vector<float> g32;
  std::vector<double> g64;
  std::vector<float> w;
};

const Layer& GetLayer() {
  static const Layer* layer = [] {
    auto* l = new Layer;
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    l->x.resize(static_cast<size_t>(kTokens * kFeatures));
    for (float& v : l->x) v = normal(rng);
    for (int64_t t = 0; t < kTokens; ++t) {  // a shared direction: correlated
      const float common = normal(rng);
      for (int64_t c = 0; c < kFeatures; c += 3) {
        l->x[static_cast<size_t>(t * kFeatures + c)] += common;
      }
    }
    l->g32.resize(static_cast<size_t>(kFeatures * kFeatures));
    (void)internal::Sgemm(true, false, kFeatures, kFeatures, kTokens, 1.0f,
                          l->x.data(), kFeatures, l->x.data(), kFeatures, 0.0f,
                          l->g32.data(), kFeatures);
    l->g64.assign(l->g32.begin(), l->g32.end());
    l->w.resize(static_cast<size_t>(kRows * kFeatures));
    for (float& v : l->w) v = 0.02f * normal(rng);
    return l;
  }();
  return *layer;
}

void BM_InverseHessianFactor(benchmark::State& state) {
  const Layer& layer = GetLayer();
  std::vector<float> h(layer.g32.size());
  for (auto _ : state) {
    state.PauseTiming();
    for (size_t i = 0; i < h.size(); ++i) h[i] = layer.g32[i] / 1024.0f;
    for (int64_t c = 0; c < kFeatures; ++c) h[static_cast<size_t>(c * kFeatures + c)] += 1.0f;
    state.ResumeTiming();
    if (!internal::UpperCholeskyOfInverse(h.data(), kFeatures).ok()) {
      state.SkipWithError("factorization failed");
    }
  }
  const double n = kFeatures;
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * n * n * n / 3.0 * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_InverseHessianFactor)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

void BM_GptqQuantize(benchmark::State& state, const char* scheme_text,
                     bool act_order) {
  const Layer& layer = GetLayer();
  const Layout layout =
      *MakeLayout(*ParseScheme(scheme_text), {kRows, kFeatures});
  const GramView gram = GramView::F64(layer.g64, kFeatures, kTokens);
  GptqOptions options;
  options.act_order = act_order;
  options.measure_output_error = false;
  for (auto _ : state) {
    absl::StatusOr<GptqResult> r =
        GptqQuantize(layer.w.data(), layout, gram, options);
    if (!r.ok()) state.SkipWithError(r.status().ToString().c_str());
    benchmark::DoNotOptimize(r);
  }
  const double n = kFeatures;
  state.counters["GFLOP/s"] = benchmark::Counter(
      (2.0 * n * n * n / 3.0 + kRows * n * n) * 1e-9,
      benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_GptqQuantize, int4_asym_g128, "int4_asym_g128", false)
    ->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();
BENCHMARK_CAPTURE(BM_GptqQuantize, int4_asym_g128_act_order, "int4_asym_g128",
                  true)
    ->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();
BENCHMARK_CAPTURE(BM_GptqQuantize, int3_sym_channel, "int3_sym_channel", false)
    ->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();

void BM_SgemmOfGramSize(benchmark::State& state) {
  const Layer& layer = GetLayer();
  std::vector<float> g(layer.g32.size());
  for (auto _ : state) {
    if (!internal::Sgemm(true, false, kFeatures, kFeatures, kTokens, 1.0f,
                         layer.x.data(), kFeatures, layer.x.data(), kFeatures,
                         0.0f, g.data(), kFeatures)
             .ok()) {
      state.SkipWithError("sgemm failed");
    }
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * kFeatures * kFeatures * kTokens * 1e-9,
      benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SgemmOfGramSize)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

}  // namespace
}  // namespace quantd

BENCHMARK_MAIN();

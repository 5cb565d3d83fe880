// Throughput of the low-precision float formats (float_formats.h) in GB/s of
// f32 input (quantize) or f32 output (dequantize), scalar reference beside
// each vector path this CPU has, single thread, on a 1024 x 4096 Gaussian
// tensor with outlier channels (every 37th column x50). Each quantize row
// also reports the round trip's SQNR in dB and the bits per weight.
//
//   taskset -c 0 quantd_float_formats_bench --benchmark_min_time=0.2
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "kernels/cpu.h"
#include "kernels/float_formats.h"
#include "kernels/internal/float_kernels.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/metrics.h"

namespace quantd {
namespace {

constexpr int64_t kRows = 1024;
constexpr int64_t kCols = 4096;

const std::vector<float>& Weights() {
  static const std::vector<float>* w = [] {
    auto* v = new std::vector<float>(static_cast<size_t>(kRows * kCols));
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 0.02f);
    for (size_t i = 0; i < v->size(); ++i) {
      const float x = d(rng);
      (*v)[i] = (i % kCols) % 37 == 5 ? 50.0f * x : x;
    }
    return v;
  }();
  return *w;
}

struct Case {
  const char* label;
  const char* format;
  const char* granularity;
  int block_size;
  bool double_quant;
};

constexpr Case kCases[] = {
    {"fp8_e4m3/tensor", "fp8_e4m3", "tensor", 0, false},
    {"fp8_e4m3/channel", "fp8_e4m3", "channel", 0, false},
    {"fp8_e4m3/block128", "fp8_e4m3", "block", 128, false},
    {"fp8_e5m2/channel", "fp8_e5m2", "channel", 0, false},
    {"fp4_e2m1/block32", "fp4_e2m1", "block", 32, false},
    {"nf4/block64", "nf4", "", 64, false},
    {"nf4/block64_dq", "nf4", "", 64, true},
    {"ocp_mxfp8", "ocp_mxfp8", "", 0, false},
    {"ocp_mxfp4", "ocp_mxfp4", "", 0, false},
    {"modelopt_nvfp4", "modelopt_nvfp4", "", 0, false},
};

void BmQuantize(benchmark::State& state, const Case& c,
                const internal::FloatKernels* kernels) {
  const std::vector<float>& w = Weights();
  const FloatFormatOptions options =
      *ParseFloatFormatOptions(c.format, c.granularity, c.block_size,
                               c.double_quant);
  absl::StatusOr<FloatQuantized> q;
  for (auto _ : state) {
    q = internal::FloatQuantizeWith(*kernels, w.data(), kRows, kCols, options);
    benchmark::DoNotOptimize(q);
  }
  state.SetBytesProcessed(state.iterations() * kRows * kCols * 4);
  std::vector<float> w_hat(w.size());
  if (!q.ok() || !FloatDequantize(*q, w_hat.data()).ok()) {
    state.SkipWithError("quantize failed");
    return;
  }
  const ErrorMetrics m = ComputeErrorMetrics(w.data(), w_hat.data(), w.size());
  state.counters["sqnr_db"] = m.sqnr_db;
  state.counters["bpw"] = FloatBitsPerWeight(*q);
}

void BmDequantize(benchmark::State& state, const Case& c,
                  const internal::FloatKernels* kernels) {
  const std::vector<float>& w = Weights();
  const FloatFormatOptions options =
      *ParseFloatFormatOptions(c.format, c.granularity, c.block_size,
                               c.double_quant);
  const absl::StatusOr<FloatQuantized> q =
      FloatQuantize(w.data(), kRows, kCols, options);
  std::vector<float> w_hat(w.size());
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        internal::FloatDequantizeWith(*kernels, *q, w_hat.data()));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kRows * kCols * 4);
}

int Register() {
  struct Path {
    const char* name;
    const internal::FloatKernels* kernels;
  };
  std::vector<Path> paths = {{"reference", &internal::FloatKernelsScalar()}};
  if (internal::CpuIsa() >= Isa::kAvx2) {
    paths.push_back({"avx2", &internal::FloatKernelsAvx2()});
  }
  if (internal::CpuIsa() >= Isa::kAvx512) {
    paths.push_back({"avx512", &internal::FloatKernelsAvx512()});
  }
  for (const Case& c : kCases) {
    for (const Path& p : paths) {
      benchmark::RegisterBenchmark(
          absl::StrCat("Quantize/", c.label, "/", p.name).c_str(), BmQuantize,
          c, p.kernels)
          ->Unit(benchmark::kMillisecond);
    }
    for (const Path& p : paths) {
      benchmark::RegisterBenchmark(
          absl::StrCat("Dequantize/", c.label, "/", p.name).c_str(),
          BmDequantize, c, p.kernels)
          ->Unit(benchmark::kMillisecond);
    }
  }
  return 0;
}

const int kRegistered = Register();

}  // namespace
}  // namespace quantd

BENCHMARK_MAIN();

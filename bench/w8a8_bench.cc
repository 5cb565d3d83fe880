// oneDNN's int8 GEMM (Int8GemmS32, s8 x s8 -> s32) beside oneDNN's f32
// sgemm of the same size, on LLM layer shapes: Y (m x n) = X (m x k) W^T.
// Prints one table row per shape: the median time of each, GOP/s, and the
// f32 / int8 ratio; "split" is the exact 7-bit path used on CPUs without a
// VNNI/AMX kernel, timed on this CPU for comparison. Primitives are created
// once per shape, outside the timing.
//
//   quantd_w8a8_bench            # all shapes
//   quantd_w8a8_bench 64 4096 4096   # one shape: m n k
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "kernels/internal/linalg.h"
#include "kernels/w8a8.h"

namespace {

// Median seconds of `fn` over repeats that together take >= 0.5 s (at least
// 3, at most 50).
double MedianSeconds(const std::function<absl::Status()>& fn) {
  std::vector<double> times;
  double total = 0.0;
  while (times.size() < 3 || (total < 0.5 && times.size() < 50)) {
    const auto start = std::chrono::steady_clock::now();
    const absl::Status s = fn();
    const double t = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start)
                         .count();
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      std::exit(1);
    }
    times.push_back(t);
    total += t;
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void Row(int64_t m, int64_t n, int64_t k) {
  std::mt19937 rng(static_cast<uint32_t>(m * 31 + n * 7 + k));
  std::uniform_int_distribution<int> byte(-128, 127);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint8_t> a(static_cast<size_t>(m * k));
  std::vector<int8_t> b(static_cast<size_t>(n * k));
  for (uint8_t& v : a) v = static_cast<uint8_t>(byte(rng) & 0xFF);
  for (int8_t& v : b) v = static_cast<int8_t>(byte(rng));
  std::vector<float> af(a.size());
  std::vector<float> bf(b.size());
  for (float& v : af) v = normal(rng);
  for (float& v : bf) v = normal(rng);
  std::vector<int32_t> acc(static_cast<size_t>(m * n));
  std::vector<float> c(static_cast<size_t>(m * n));

  const quantd::Int8GemmS32 gemm = *quantd::Int8GemmS32::Create(m, n, k, false);
  const quantd::Int8GemmS32 split = *quantd::Int8GemmS32::Create(
      m, n, k, false, quantd::Int8GemmS32::Path::kSevenBitSplit);
  const double t_s8 = MedianSeconds(
      [&] { return gemm.Run(a.data(), 0, b.data(), acc.data()); });
  const double t_split = MedianSeconds(
      [&] { return split.Run(a.data(), 0, b.data(), acc.data()); });
  const double t_f32 = MedianSeconds([&] {
    return quantd::internal::Sgemm(false, true, m, n, k, 1.0f, af.data(), k,
                                   bf.data(), k, 0.0f, c.data(), n);
  });
  const double gop = 2.0 * static_cast<double>(m) * static_cast<double>(n) *
                     static_cast<double>(k) * 1e-9;
  std::printf("%6lld %6lld %6lld | %9.3f %8.1f | %9.3f %8.1f | %9.3f %8.1f | "
              "%6.2fx  %s%s\n",
              static_cast<long long>(m), static_cast<long long>(n),
              static_cast<long long>(k), t_f32 * 1e3, gop / t_f32, t_s8 * 1e3,
              gop / t_s8, t_split * 1e3, gop / t_split, t_f32 / t_s8,
              gemm.implementation().c_str(), gemm.split() ? " (split)" : "");
}

}  // namespace

int main(int argc, char** argv) {
  std::printf("%6s %6s %6s | %9s %8s | %9s %8s | %9s %8s | %7s  %s\n", "m", "n",
              "k", "f32 ms", "GFLOP/s", "s8 ms", "GOP/s", "split ms",
              "GOP/s", "f32/s8", "oneDNN int8 kernel");
  if (argc == 4) {
    Row(std::atoll(argv[1]), std::atoll(argv[2]), std::atoll(argv[3]));
    return 0;
  }
  const int64_t shapes[][3] = {
      {1, 4096, 4096},   {16, 4096, 4096},  {128, 4096, 4096},
      {512, 4096, 4096}, {512, 11008, 4096}, {512, 4096, 11008},
  };
  for (const auto& s : shapes) Row(s[0], s[1], s[2]);
  return 0;
}

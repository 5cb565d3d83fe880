#include "kernels/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/metrics_internal.h"

namespace quantd {
namespace {

TEST(MetricsTest, ExactReconstruction) {
  const std::vector<float> w = {1.0f, -2.0f, 3.0f};
  const ErrorMetrics m = ComputeErrorMetrics(w.data(), w.data(), w.size());
  EXPECT_EQ(m.mse, 0.0);
  EXPECT_EQ(m.rmse, 0.0);
  EXPECT_EQ(m.max_abs_error, 0.0);
  EXPECT_EQ(m.sqnr_db, std::numeric_limits<double>::infinity());
  EXPECT_DOUBLE_EQ(m.cosine_similarity, 1.0);
}

TEST(MetricsTest, HandComputed) {
  // w = (3, 4), w_hat = (3, 3): error (0, 1); ||w|| = 5, ||e|| = 1.
  const std::vector<float> w = {3.0f, 4.0f};
  const std::vector<float> w_hat = {3.0f, 3.0f};
  const ErrorMetrics m = ComputeErrorMetrics(w.data(), w_hat.data(), 2);
  EXPECT_DOUBLE_EQ(m.mse, 0.5);
  EXPECT_DOUBLE_EQ(m.rmse, std::sqrt(0.5));
  EXPECT_DOUBLE_EQ(m.max_abs_error, 1.0);
  EXPECT_NEAR(m.sqnr_db, 20.0 * std::log10(5.0), 1e-12);
  EXPECT_NEAR(m.cosine_similarity, 21.0 / (5.0 * std::sqrt(18.0)), 1e-15);
}

TEST(MetricsTest, ZeroNorms) {
  const std::vector<float> zero = {0.0f, 0.0f};
  const std::vector<float> one = {1.0f, 0.0f};
  EXPECT_DOUBLE_EQ(ComputeErrorMetrics(zero.data(), zero.data(), 2).cosine_similarity, 1.0);
  EXPECT_DOUBLE_EQ(ComputeErrorMetrics(zero.data(), one.data(), 2).cosine_similarity, 0.0);
  EXPECT_DOUBLE_EQ(ComputeErrorMetrics(one.data(), zero.data(), 2).cosine_similarity, 0.0);
  const ErrorMetrics empty = ComputeErrorMetrics(nullptr, nullptr, 0);
  EXPECT_EQ(empty.mse, 0.0);
}

// The definition of the metrics: one pass over the whole tensor in double,
// no blocks, no vectors. The fast and blocked sums are checked against it.
struct PlainSums {
  internal::MetricSums sums;
  double abs_dot = 0;  // sum |w * w_hat|, for the bound on `dot`
};

PlainSums PlainLoop(const float* w, const float* w_hat, size_t n) {
  PlainSums p;
  for (size_t i = 0; i < n; ++i) {
    const double x = w[i];
    const double y = w_hat[i];
    const double d = x - y;
    p.sums.err2 += d * d;
    p.sums.w2 += x * x;
    p.sums.what2 += y * y;
    p.sums.dot += x * y;
    p.abs_dot += std::fabs(x * y);
    p.sums.max_abs = std::max(p.sums.max_abs, std::fabs(d));
  }
  return p;
}

// w ~ N(0, 1), w_hat = w + 0.01 N(0, 1), with planted errors on both sides
// of every block boundary and at the last element, so that an element lost
// or counted twice where blocks meet moves every sum far beyond the bound,
// and the largest error sits where a blocked maximum could miss it.
void MakeData(size_t n, uint32_t seed, std::vector<float>& w,
              std::vector<float>& w_hat) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  w.resize(n);
  w_hat.resize(n);
  for (size_t i = 0; i < n; ++i) {
    w[i] = normal(rng);
    w_hat[i] = w[i] + 0.01f * normal(rng);
  }
  for (size_t b = internal::kMetricsBlock; b <= n; b += internal::kMetricsBlock) {
    w_hat[b - 1] = w[b - 1] + 0.5f;
    if (b < n) w_hat[b] = w[b] - 0.75f;
  }
  if (n > 0) w_hat[n - 1] = w[n - 1] + 1.0f;
}

// Summing n terms in any order in double is within gamma(n) * sum |term| of
// the exact sum (Higham, Accuracy and Stability, 4.2), u = 2^-53. The terms
// themselves are exact: products of two floats fit in a double, and so does
// the difference of two floats of these magnitudes. Two such sums differ by
// at most twice that; the final division, square roots and log add a few u.
double Gamma(size_t n) {
  const double u = std::ldexp(1.0, -53);
  const double nu = static_cast<double>(n) * u;
  return nu / (1 - nu);
}

void ExpectWithinBound(const ErrorMetrics& got, const PlainSums& want_sums,
                       size_t n) {
  const ErrorMetrics want = internal::FinishMetrics(want_sums.sums, n);
  const double rel = 2 * Gamma(n) + 8 * std::ldexp(1.0, -53);
  const internal::MetricSums& s = want_sums.sums;
  EXPECT_NEAR(got.mse, want.mse, rel * want.mse);
  EXPECT_NEAR(got.rmse, want.rmse, rel * want.rmse);
  // sqnr_db = 10 log10(w2 / err2): a relative change r of each sum moves it
  // by at most 10 / ln(10) * 2r dB.
  EXPECT_NEAR(got.sqnr_db, want.sqnr_db, 10 / std::log(10.0) * 2 * rel + 1e-13);
  // cosine = dot / sqrt(w2 what2): dot moves by rel * abs_dot, each norm by
  // rel / 2 of itself.
  const double norms = std::sqrt(s.w2) * std::sqrt(s.what2);
  EXPECT_NEAR(got.cosine_similarity, want.cosine_similarity,
              rel * want_sums.abs_dot / norms + 2 * rel);
  // A maximum does not depend on the order: exact.
  EXPECT_EQ(got.max_abs_error, want.max_abs_error);
}

// Sizes on both sides of the 4096-element block boundaries.
const size_t kSizes[] = {1,    7,    4095, 4096,  4097,
                         8191, 8192, 8193, 12293, 3 * 4096};

TEST(MetricsTest, MatchesAPlainDoubleLoopAcrossBlockBoundaries) {
  const uint32_t seed = 77;
  for (size_t n : kSizes) {
    SCOPED_TRACE(::testing::Message() << "n " << n << " seed " << seed);
    std::vector<float> w, w_hat;
    MakeData(n, seed, w, w_hat);
    const ErrorMetrics got = ComputeErrorMetrics(w.data(), w_hat.data(), n);
    ExpectWithinBound(got, PlainLoop(w.data(), w_hat.data(), n), n);
    // The planted last element is the largest error.
    EXPECT_EQ(got.max_abs_error,
              std::fabs(static_cast<double>(w[n - 1]) - w_hat[n - 1]));
  }
}

// metrics.h fixes the summation order (4096-element blocks, each summed in
// index order, block sums added in order), which is what lets the fused
// dequantize-and-measure paths equal ComputeErrorMetrics bit for bit.
TEST(MetricsTest, SumsInTheDocumentedBlockOrderBitForBit) {
  const uint32_t seed = 78;
  for (size_t n : kSizes) {
    SCOPED_TRACE(::testing::Message() << "n " << n << " seed " << seed);
    std::vector<float> w, w_hat;
    MakeData(n, seed, w, w_hat);
    internal::MetricSums sums;
    for (size_t b = 0; b < n; b += 4096) {
      internal::AccumulateBlockReference(w.data() + b, w_hat.data() + b,
                                         std::min<size_t>(4096, n - b), sums);
    }
    const ErrorMetrics want = internal::FinishMetrics(sums, n);
    const ErrorMetrics got = ComputeErrorMetrics(w.data(), w_hat.data(), n);
    EXPECT_EQ(got.mse, want.mse);
    EXPECT_EQ(got.rmse, want.rmse);
    EXPECT_EQ(got.max_abs_error, want.max_abs_error);
    EXPECT_EQ(got.sqnr_db, want.sqnr_db);
    EXPECT_EQ(got.cosine_similarity, want.cosine_similarity);
  }
}

// The same values at another address give the same bits: nothing depends on
// where the blocks fall against the vector alignment.
TEST(MetricsTest, IndependentOfAlignmentBitForBit) {
  const uint32_t seed = 79;
  for (size_t n : {size_t{4097}, size_t{12293}}) {
    std::vector<float> w, w_hat;
    MakeData(n, seed, w, w_hat);
    const ErrorMetrics want = ComputeErrorMetrics(w.data(), w_hat.data(), n);
    for (size_t offset = 1; offset < 16; ++offset) {
      SCOPED_TRACE(::testing::Message()
                   << "n " << n << " offset " << offset << " seed " << seed);
      std::vector<float> w_at(n + offset), w_hat_at(n + offset);
      std::copy(w.begin(), w.end(), w_at.begin() + static_cast<ptrdiff_t>(offset));
      std::copy(w_hat.begin(), w_hat.end(),
                w_hat_at.begin() + static_cast<ptrdiff_t>(offset));
      const ErrorMetrics got =
          ComputeErrorMetrics(w_at.data() + offset, w_hat_at.data() + offset, n);
      EXPECT_EQ(got.mse, want.mse);
      EXPECT_EQ(got.max_abs_error, want.max_abs_error);
      EXPECT_EQ(got.sqnr_db, want.sqnr_db);
      EXPECT_EQ(got.cosine_similarity, want.cosine_similarity);
    }
  }
}

// Every vector accumulator of this CPU, run block by block as the fused
// paths run it: within the bound of the plain loop; the scalar one is the
// reference order and so equals ComputeErrorMetrics exactly.
TEST(MetricsTest, EveryAccumulatorOfThisCpuWithinTheBound) {
  struct Path {
    const char* name;
    internal::AccumulateMetricsFn fn;
  };
  std::vector<Path> paths = {{"scalar", &internal::AccumulateMetricsScalar}};
  if (internal::CpuIsa() >= Isa::kAvx2) {
    paths.push_back({"avx2", &internal::AccumulateMetricsAvx2});
  }
  if (internal::CpuIsa() >= Isa::kAvx512) {
    paths.push_back({"avx512", &internal::AccumulateMetricsAvx512});
  }
  const uint32_t seed = 80;
  for (size_t n : kSizes) {
    std::vector<float> w, w_hat;
    MakeData(n, seed, w, w_hat);
    const PlainSums plain = PlainLoop(w.data(), w_hat.data(), n);
    for (const Path& path : paths) {
      SCOPED_TRACE(::testing::Message()
                   << path.name << " n " << n << " seed " << seed);
      internal::MetricSums sums;
      for (size_t b = 0; b < n; b += internal::kMetricsBlock) {
        const size_t m = std::min(internal::kMetricsBlock, n - b);
        path.fn(w.data() + b, w_hat.data() + b, static_cast<int64_t>(m), sums);
      }
      const ErrorMetrics got = internal::FinishMetrics(sums, n);
      ExpectWithinBound(got, plain, n);
      if (path.fn == &internal::AccumulateMetricsScalar) {
        const ErrorMetrics want = ComputeErrorMetrics(w.data(), w_hat.data(), n);
        EXPECT_EQ(got.mse, want.mse);
        EXPECT_EQ(got.cosine_similarity, want.cosine_similarity);
      }
    }
  }
}

}  // namespace
}  // namespace quantd

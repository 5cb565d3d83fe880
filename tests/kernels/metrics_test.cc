#include "kernels/metrics.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

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

TEST(MetricsTest, DeterministicAcrossBlocks) {
  const unsigned seed = 77;
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> w(10000), w_hat(10000);
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = d(rng);
    w_hat[i] = w[i] + 0.01f * d(rng);
  }
  const ErrorMetrics a = ComputeErrorMetrics(w.data(), w_hat.data(), w.size());
  const ErrorMetrics b = ComputeErrorMetrics(w.data(), w_hat.data(), w.size());
  EXPECT_EQ(a.mse, b.mse);
  EXPECT_EQ(a.sqnr_db, b.sqnr_db);
  EXPECT_GT(a.sqnr_db, 35.0);
  EXPECT_LT(a.sqnr_db, 45.0);  // ~ 20 log10(1/0.01) = 40 dB
  EXPECT_GT(a.cosine_similarity, 0.999);
}

}  // namespace
}  // namespace quantd

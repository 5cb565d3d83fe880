// HQQ (kernels/hqq.h): the output layout, its dequantization, the per-group
// guarantee against plain round-to-nearest, and input checks. The numpy
// implementation of the same algorithm is in tests/e2e/python/
// test_nonuniform.py.
#include "kernels/hqq.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

std::vector<float> Gaussian(int64_t n, uint32_t seed, float sigma) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// Gaussian with 1% of the values scaled by 25 and every 7th row by 30.
std::vector<float> OutlierHeavy(int64_t rows, int64_t cols, uint32_t seed) {
  std::vector<float> v = Gaussian(rows * cols, seed, 0.02f);
  std::mt19937 rng(seed + 1);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float& x = v[static_cast<size_t>(r * cols + c)];
      if (r % 7 == 3) x *= 30.0f;
      if (u(rng) < 0.01f) x *= 25.0f;
    }
  }
  return v;
}

std::vector<float> Dequantized(const HqqTensor& q) {
  std::vector<float> out(static_cast<size_t>(q.num_elements()));
  EXPECT_TRUE(HqqDequantize(q, out.data()).ok());
  return out;
}

// Plain asymmetric round-to-nearest with a float zero point: HQQ's starting
// point (hqq.h), in the same (q - zero) * scale form.
std::vector<float> MinMaxRtn(const std::vector<float>& w, int bits,
                             int64_t group_size) {
  const float qmax = static_cast<float>((1 << bits) - 1);
  std::vector<float> out(w.size());
  for (size_t g0 = 0; g0 < w.size(); g0 += static_cast<size_t>(group_size)) {
    const auto first = w.begin() + static_cast<std::ptrdiff_t>(g0);
    const auto last = first + group_size;
    const float lo = *std::min_element(first, last);
    const float hi = *std::max_element(first, last);
    float inv = std::fabs(hi - lo) <= 1e-4f ? 1.0f : qmax / (hi - lo);
    inv = std::min(inv, 2e4f);
    const float zero = -lo * inv;
    const float scale = 1.0f / inv;
    for (size_t i = g0; i < g0 + static_cast<size_t>(group_size); ++i) {
      const float q = std::clamp(std::nearbyint(w[i] * inv + zero), 0.0f, qmax);
      out[i] = (q - zero) * scale;
    }
  }
  return out;
}

double AbsError(const float* a, const float* b, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::fabs(double{a[i]} - b[i]);
  return sum;
}

double SquaredError(const float* a, const float* b, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double{a[i]} - b[i];
    sum += d * d;
  }
  return sum;
}

double Sqnr(const std::vector<float>& w, const std::vector<float>& w_hat) {
  double signal = 0;
  double noise = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    signal += double{w[i]} * w[i];
    const double d = double{w[i]} - w_hat[i];
    noise += d * d;
  }
  return 10.0 * std::log10(signal / noise);
}

HqqOptions Options(int bits, int64_t group_size) {
  HqqOptions o;
  o.bits = bits;
  o.group_size = group_size;
  return o;
}

TEST(HqqTest, LayoutAndDequantizationFormula) {
  const std::vector<float> w = Gaussian(6 * 96, 1, 1.0f);
  HqqTensor q = *HqqQuantize(w.data(), 6, 96, Options(3, 32));
  EXPECT_EQ(q.num_groups, 18);
  EXPECT_EQ(q.scales.size(), 18u);
  EXPECT_EQ(q.zero_points.size(), 18u);
  EXPECT_EQ(q.codes.size(), 6u * 96 * 3 / 8);
  EXPECT_DOUBLE_EQ(q.BitsPerWeight(), 3 + 64.0 / 32);
  std::vector<uint8_t> codes(w.size());
  UnpackCodes(q.codes.data(), q.num_elements(), 3, codes.data());
  const std::vector<float> w_hat = Dequantized(q);
  for (size_t i = 0; i < w.size(); ++i) {
    ASSERT_LE(codes[i], 7);
    ASSERT_EQ(w_hat[i],
              (static_cast<float>(codes[i]) - q.zero_points[i / 32]) * q.scales[i / 32]);
  }
  // Deterministic.
  HqqTensor again = *HqqQuantize(w.data(), 6, 96, Options(3, 32));
  EXPECT_EQ(again.codes, q.codes);
  EXPECT_EQ(again.scales, q.scales);
  EXPECT_EQ(again.zero_points, q.zero_points);
}

TEST(HqqTest, NoStepIsPlainRoundToNearest) {
  const std::vector<float> w = Gaussian(4 * 64, 2, 0.1f);
  HqqOptions o = Options(4, 64);
  o.iterations = 0;
  EXPECT_EQ(Dequantized(*HqqQuantize(w.data(), 4, 64, o)), MinMaxRtn(w, 4, 64));
}

// Per group, sum |w - w_hat| of HQQ is at most that of its min-max
// starting point, on Gaussian and outlier-heavy inputs, at every width.
TEST(HqqTest, NeverWorseThanRoundToNearestPerGroup) {
  struct Input {
    const char* name;
    std::vector<float> w;
  };
  const int64_t rows = 14;
  const int64_t cols = 512;
  const std::vector<Input> inputs = {
      {"gaussian", Gaussian(rows * cols, 3, 0.02f)},
      {"outliers", OutlierHeavy(rows, cols, 4)}};
  for (const Input& input : inputs) {
    for (int bits : {1, 2, 3, 4, 8}) {
      for (int64_t group : {32, 128, 512}) {
        for (int variant = 0; variant < 3; ++variant) {
          const bool optimize_scale = variant == 1;
          const bool mse_guard = variant == 2;
          SCOPED_TRACE(absl::StrCat(input.name, " bits ", bits, " group ", group,
                                    " optimize_scale ", optimize_scale,
                                    " mse_guard ", mse_guard));
          HqqOptions o = Options(bits, group);
          o.optimize_scale = optimize_scale;
          o.mse_guard = mse_guard;
          const std::vector<float> hqq =
              Dequantized(*HqqQuantize(input.w.data(), rows, cols, o));
          const std::vector<float> rtn = MinMaxRtn(input.w, bits, group);
          double total_hqq = 0;
          double total_rtn = 0;
          for (size_t g0 = 0; g0 < input.w.size(); g0 += static_cast<size_t>(group)) {
            const double e_hqq = AbsError(input.w.data() + g0, hqq.data() + g0, group);
            const double e_rtn = AbsError(input.w.data() + g0, rtn.data() + g0, group);
            // The optimizer compares (q - z) / inv; the output is (q - z) *
            // (1 / inv): a relative 1e-6 covers that last rounding.
            ASSERT_LE(e_hqq, e_rtn * (1 + 1e-6)) << "group at " << g0;
            if (mse_guard) {
              ASSERT_LE(SquaredError(input.w.data() + g0, hqq.data() + g0, group),
                        SquaredError(input.w.data() + g0, rtn.data() + g0, group))
                  << "group at " << g0;
            }
            total_hqq += e_hqq;
            total_rtn += e_rtn;
          }
          if (bits <= 4 && variant == 0) {
            EXPECT_LT(total_hqq, total_rtn);  // and it does improve overall
          }
        }
      }
    }
  }
}

// Against the foundation's uint8-zero-point RTN (int<b>_asym_g64, whose
// range always includes 0 and whose zero point is rounded), HQQ's SQNR is at
// least as good on Gaussian data at every width and on outlier-heavy data
// from 3 bits. At 2 bits on outlier-heavy data it is not (7.8 against 8.2 dB
// here): HQQ minimizes an lp error with p < 1 and its guard compares with the
// min-max RTN point, not with this one; the test pins that gap so a change
// of it is seen.
TEST(HqqTest, SqnrAgainstTheFoundationsAsymmetricRtn) {
  const int64_t rows = 14;
  const int64_t cols = 512;
  const std::vector<std::vector<float>> inputs = {Gaussian(rows * cols, 5, 0.02f),
                                                  OutlierHeavy(rows, cols, 6)};
  for (size_t k = 0; k < inputs.size(); ++k) {
    const std::vector<float>& w = inputs[k];
    for (int bits : {2, 3, 4, 8}) {
      SCOPED_TRACE(absl::StrCat("input ", k, " bits ", bits));
      const double hqq = Sqnr(w, Dequantized(*HqqQuantize(w.data(), rows, cols,
                                                          Options(bits, 64))));
      QuantizedTensor q = AllocateQuantized(*MakeLayout(
          *ParseScheme(absl::StrCat("int", bits, "_asym_g64")), {rows, cols}));
      ASSERT_TRUE(Quantize(w.data(), q).ok());
      std::vector<float> rtn(w.size());
      Dequantize(q, rtn.data());
      if (k == 1 && bits == 2) {
        EXPECT_NEAR(hqq - Sqnr(w, rtn), -0.36, 0.1);
      } else {
        EXPECT_GE(hqq, Sqnr(w, rtn));
      }
    }
  }
}

TEST(HqqTest, ValuesOnTheGridComeBackExactly) {
  // Each group of 16 holds the codes 0..15 of scale 0.25 and offset -1.
  std::vector<float> w;
  for (int g = 0; g < 8; ++g) {
    for (int i = 0; i < 16; ++i) w.push_back(static_cast<float>((i * 7 + g) % 16) * 0.25f - 1.0f);
  }
  EXPECT_EQ(Dequantized(*HqqQuantize(w.data(), 2, 64, Options(4, 16))), w);
}

TEST(HqqTest, ConstantGroupsAndOneElementGroups) {
  const std::vector<float> w = {0.5f, 0.5f, 0.5f, 0.5f, -3, -3, -3, -3};
  for (int bits : {1, 4}) {
    EXPECT_EQ(Dequantized(*HqqQuantize(w.data(), 2, 4, Options(bits, 0))), w);
    EXPECT_EQ(Dequantized(*HqqQuantize(w.data(), 8, 1, Options(bits, 1))), w);
  }
}

TEST(HqqTest, RejectsBadInput) {
  std::vector<float> w = Gaussian(64, 1, 1.0f);
  auto code = [&](HqqOptions o, int64_t rows = 2, int64_t cols = 32) {
    return HqqQuantize(w.data(), rows, cols, o).status().code();
  };
  const auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code(Options(0, 32)), kBad);
  EXPECT_EQ(code(Options(9, 32)), kBad);
  EXPECT_EQ(code(Options(4, 5)), kBad);
  EXPECT_EQ(code(Options(4, -1)), kBad);
  EXPECT_EQ(code(Options(4, 32), 0), kBad);
  HqqOptions o = Options(4, 32);
  o.lp_norm = 0.0f;
  EXPECT_EQ(code(o), kBad);
  o = Options(4, 32);
  o.lp_norm = 1.5f;
  EXPECT_EQ(code(o), kBad);
  o = Options(4, 32);
  o.beta = 0.0f;
  EXPECT_EQ(code(o), kBad);
  o = Options(4, 32);
  o.kappa = 0.5f;
  EXPECT_EQ(code(o), kBad);
  o = Options(4, 32);
  o.iterations = -1;
  EXPECT_EQ(code(o), kBad);
  w[40] = -INFINITY;
  absl::Status s = HqqQuantize(w.data(), 2, 32, Options(4, 32)).status();
  EXPECT_EQ(s.code(), kBad);
  EXPECT_NE(s.message().find("40"), std::string::npos) << s;
  const std::vector<float> huge = {3e38f, -3e38f};
  s = HqqQuantize(huge.data(), 1, 2, Options(4, 0)).status();
  EXPECT_EQ(s.code(), kBad);
  EXPECT_NE(s.message().find("overflows"), std::string::npos) << s;
  // Inconsistent tensors are refused by the dequantizer.
  HqqTensor q = *HqqQuantize(w.data(), 1, 32, Options(4, 32));
  q.zero_points.clear();
  std::vector<float> out(32);
  EXPECT_EQ(HqqDequantize(q, out.data()).code(), kBad);
}

}  // namespace
}  // namespace quantd

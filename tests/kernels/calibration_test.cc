#include "kernels/calibration_stats.h"
#include "kernels/output_error.h"
#include "kernels/range_estimators.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/convert.h"

namespace quantd {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kSeed = 20240611;

// rows x features activations: Gaussian channels of different spreads and
// means, 0.5% outliers, one non-negative channel (post-ReLU), one all-zero
// channel and exact powers of two (histogram bin edges).
std::vector<float> Activations(int64_t rows, int64_t features, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * features));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < features; ++c) {
      const float spread = 0.1f + 0.2f * static_cast<float>(c % 7);
      float v = normal(rng) * spread + (c % 5 == 0 ? 0.5f : 0.0f);
      if (uniform(rng) < 0.005f) v *= 40.0f;
      if (c == 1) v = std::fabs(v);
      if (c == 2) v = 0.0f;
      if (c == 3 && r % 10 == 0) v = 2.0f;
      x[static_cast<size_t>(r * features + c)] = v;
    }
  }
  return x;
}

CalibrationOptions SmallOptions() {
  CalibrationOptions o;
  o.gram_block_rows = 64;
  o.tensor_histogram_bins = 1024;
  o.channel_histogram_bins = 256;
  return o;
}

CalibrationAccumulator Accumulate(const std::vector<float>& x, int64_t rows,
                                  int64_t features, int64_t chunk,
                                  const CalibrationOptions& options) {
  absl::StatusOr<CalibrationAccumulator> acc =
      CalibrationAccumulator::Create("layer", features, options);
  EXPECT_TRUE(acc.ok()) << acc.status();
  for (int64_t r = 0; r < rows; r += chunk) {
    const int64_t n = std::min(chunk, rows - r);
    absl::Status s = acc->Add(x.data() + r * features, n, features);
    EXPECT_TRUE(s.ok()) << s;
  }
  return *std::move(acc);
}

void ExpectSameStats(const CalibrationAccumulator& a,
                     const CalibrationAccumulator& b, bool exact_sums) {
  EXPECT_EQ(a.tokens(), b.tokens());
  const ChannelStats sa = *a.Stats(), sb = *b.Stats();
  EXPECT_EQ(sa.min, sb.min);
  EXPECT_EQ(sa.max, sb.max);
  for (size_t c = 0; c < sa.mean_sq.size(); ++c) {
    SCOPED_TRACE(::testing::Message() << "channel " << c);
    if (exact_sums) {
      EXPECT_EQ(sa.mean_abs[c], sb.mean_abs[c]);
      EXPECT_EQ(sa.mean_sq[c], sb.mean_sq[c]);
    } else {
      EXPECT_NEAR(sa.mean_abs[c], sb.mean_abs[c], 1e-12 * sa.mean_abs[c]);
      EXPECT_NEAR(sa.mean_sq[c], sb.mean_sq[c], 1e-12 * sa.mean_sq[c]);
    }
  }
  const Histogram ha = *a.TensorHistogram(), hb = *b.TensorHistogram();
  EXPECT_EQ(ha.exponent, hb.exponent);
  EXPECT_EQ(ha.counts, hb.counts);
  for (int64_t c = 0; c < a.features(); ++c) {
    SCOPED_TRACE(::testing::Message() << "channel " << c);
    const Histogram ca = *a.ChannelHistogram(c), cb = *b.ChannelHistogram(c);
    EXPECT_EQ(ca.exponent, cb.exponent);
    EXPECT_EQ(ca.counts, cb.counts);
  }
}

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

std::vector<double> GramReference(const std::vector<float>& x, int64_t rows,
                                  int64_t features) {
  std::vector<double> g(static_cast<size_t>(features * features), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * features;
    for (int64_t i = 0; i < features; ++i) {
      for (int64_t j = 0; j < features; ++j) {
        g[static_cast<size_t>(i * features + j)] +=
            static_cast<double>(row[i]) * static_cast<double>(row[j]);
      }
    }
  }
  return g;
}

TEST(CalibrationAccumulatorTest, ChunkingDoesNotChangeAnything) {
  const int64_t rows = 1000, features = 37;  // G panels and blocks uneven
  const std::vector<float> x = Activations(rows, features, kSeed);
  const CalibrationAccumulator whole =
      Accumulate(x, rows, features, rows, SmallOptions());
  const std::vector<double> g_whole = *whole.Gram();
  for (int64_t chunk : {1, 7, 100}) {
    SCOPED_TRACE(::testing::Message() << "chunk " << chunk);
    const CalibrationAccumulator chunked =
        Accumulate(x, rows, features, chunk, SmallOptions());
    ExpectSameStats(whole, chunked, /*exact_sums=*/true);
    // Blocks of gram_block_rows rows counted from the first row: the same
    // GEMMs whatever the chunks.
    EXPECT_EQ(*chunked.Gram(), g_whole);
  }
}

TEST(CalibrationAccumulatorTest, GramAndMomentsMatchDoubleReference) {
  const int64_t rows = 3000, features = 300;  // two G panels
  const std::vector<float> x = Activations(rows, features, kSeed + 1);
  CalibrationOptions options = SmallOptions();
  options.gram_block_rows = 512;
  const CalibrationAccumulator acc =
      Accumulate(x, rows, features, 1000, options);
  const std::vector<double> g = *acc.Gram();
  const std::vector<double> ref = GramReference(x, rows, features);
  const double scale = MaxAbs(ref);
  for (size_t i = 0; i < g.size(); ++i) {
    ASSERT_NEAR(g[i], ref[i], 1e-6 * scale) << "element " << i;
  }
  for (int64_t i = 0; i < features; ++i) {  // exactly symmetric
    for (int64_t j = 0; j < i; ++j) {
      ASSERT_EQ(g[static_cast<size_t>(i * features + j)],
                g[static_cast<size_t>(j * features + i)]);
    }
  }
  const ChannelStats stats = *acc.Stats();
  const std::vector<float> importance = *acc.Importance();
  for (int64_t c = 0; c < features; ++c) {
    SCOPED_TRACE(::testing::Message() << "channel " << c);
    double lo = INFINITY, hi = -INFINITY, sum_abs = 0, sum_sq = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const double v = x[static_cast<size_t>(r * features + c)];
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      sum_abs += std::fabs(v);
      sum_sq += v * v;
    }
    const size_t u = static_cast<size_t>(c);
    EXPECT_EQ(stats.min[u], lo);
    EXPECT_EQ(stats.max[u], hi);
    EXPECT_DOUBLE_EQ(stats.mean_abs[u], sum_abs / rows);
    EXPECT_DOUBLE_EQ(stats.mean_sq[u], sum_sq / rows);
    EXPECT_FLOAT_EQ(importance[u], static_cast<float>(sum_sq / rows));
  }
  EXPECT_EQ(stats.min[2], 0.0f);
  EXPECT_EQ(stats.max[2], 0.0f);
  EXPECT_GE(stats.min[1], 0.0f);
}

// The histogram rule of calibration.h, written again plainly: every value
// binned once at the final range.
std::vector<uint64_t> BinAll(const std::vector<float>& values, int64_t bins,
                             int* exponent) {
  float amax = 0;
  for (float v : values) amax = std::max(amax, std::fabs(v));
  int e = -149;
  while (std::ldexp(1.0, e) <= amax) ++e;
  *exponent = e;
  std::vector<uint64_t> counts(static_cast<size_t>(bins), 0);
  const double w = std::ldexp(2.0, e) / static_cast<double>(bins);
  for (float v : values) {
    const int64_t bin =
        static_cast<int64_t>(std::floor(static_cast<double>(v) / w)) + bins / 2;
    EXPECT_GE(bin, 0);
    EXPECT_LT(bin, bins);
    ++counts[static_cast<size_t>(bin)];
  }
  return counts;
}

TEST(CalibrationAccumulatorTest, HistogramsFollowTheRule) {
  const int64_t rows = 500, features = 9;
  // Growing ranges: each chunk's values are larger than the last's.
  std::vector<float> x = Activations(rows, features, kSeed + 2);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < features; ++c) {
      x[static_cast<size_t>(r * features + c)] *=
          std::ldexp(1.0f, static_cast<int>(r / 50) * 3 - 10);
    }
  }
  const CalibrationOptions options = SmallOptions();
  const CalibrationAccumulator acc = Accumulate(x, rows, features, 13, options);
  int e = 0;
  const std::vector<uint64_t> tensor =
      BinAll(x, options.tensor_histogram_bins, &e);
  const Histogram h = *acc.TensorHistogram();
  EXPECT_EQ(h.exponent, e);
  EXPECT_EQ(h.counts, tensor);
  EXPECT_EQ(h.Total(), static_cast<uint64_t>(rows * features));
  for (int64_t c = 0; c < features; ++c) {
    SCOPED_TRACE(::testing::Message() << "channel " << c);
    std::vector<float> column;
    for (int64_t r = 0; r < rows; ++r) {
      column.push_back(x[static_cast<size_t>(r * features + c)]);
    }
    const Histogram ch = *acc.ChannelHistogram(c);
    EXPECT_EQ(ch.counts, BinAll(column, options.channel_histogram_bins, &e));
    EXPECT_EQ(ch.exponent, e);
  }
  // The all-zero channel sits just right of 0 at the smallest range.
  const Histogram zero = *acc.ChannelHistogram(2);
  EXPECT_EQ(zero.exponent, -149);
  EXPECT_EQ(zero.counts[static_cast<size_t>(zero.bins / 2)],
            static_cast<uint64_t>(rows));
}

TEST(CalibrationAccumulatorTest, MergeEqualsOneAccumulator) {
  const int64_t rows = 700, features = 21;
  const std::vector<float> x = Activations(rows, features, kSeed + 3);
  const CalibrationAccumulator whole =
      Accumulate(x, rows, features, rows, SmallOptions());
  const int64_t split = 301;  // neither part a whole number of G blocks
  CalibrationAccumulator a = Accumulate(x, split, features, 50, SmallOptions());
  std::vector<float> tail(x.begin() + split * features, x.end());
  const CalibrationAccumulator b =
      Accumulate(tail, rows - split, features, 77, SmallOptions());
  ASSERT_TRUE(a.Merge(b).ok());
  ExpectSameStats(whole, a, /*exact_sums=*/false);
  const std::vector<double> gw = *whole.Gram(), gm = *a.Gram();
  const double scale = MaxAbs(gw);
  for (size_t i = 0; i < gw.size(); ++i) {
    ASSERT_NEAR(gm[i], gw[i], 1e-6 * scale) << "element " << i;
  }
}

TEST(CalibrationAccumulatorTest, HalfPrecisionInputEqualsItsF32Values) {
  const int64_t rows = 64, features = 16;
  const std::vector<float> x = Activations(rows, features, kSeed + 4);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    std::vector<uint16_t> bits(x.size());
    std::vector<float> widened(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      bits[i] = dtype == DType::kF16 ? FloatToHalf(x[i]) : FloatToBFloat16(x[i]);
      widened[i] = dtype == DType::kF16 ? HalfToFloat(bits[i])
                                        : BFloat16ToFloat(bits[i]);
    }
    const CalibrationAccumulator expected =
        Accumulate(widened, rows, features, rows, SmallOptions());
    CalibrationAccumulator acc =
        *CalibrationAccumulator::Create("layer", features, SmallOptions());
    ASSERT_TRUE(acc.Add(dtype, bits.data(), 10 * features * 2, features).ok());
    ASSERT_TRUE(acc.Add(dtype, bits.data() + 10 * features,
                        (rows - 10) * features * 2, features)
                    .ok());
    ExpectSameStats(expected, acc, /*exact_sums=*/true);
    EXPECT_EQ(*acc.Gram(), *expected.Gram());

    bits[static_cast<size_t>(5 * features + 3)] =
        dtype == DType::kF16 ? 0x7e00 : 0x7fc0;  // NaN
    absl::Status s = acc.Add(dtype, bits.data(), bits.size() * 2, features);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("row 5"));
    EXPECT_THAT(s.message(), HasSubstr("column 3"));
    s = acc.Add(dtype, bits.data(), features * 2 + 1, features);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("whole number of rows"));
  }
}

TEST(CalibrationAccumulatorTest, BadChunksAreRejectedAndChangeNothing) {
  const int64_t features = 8;
  std::vector<float> x = Activations(20, features, kSeed + 5);
  CalibrationAccumulator acc =
      *CalibrationAccumulator::Create("blk.3.ffn_down", features, SmallOptions());
  ASSERT_TRUE(acc.Add(x.data(), 4, features).ok());
  const std::vector<double> gram_before = *acc.Gram();
  const ChannelStats stats_before = *acc.Stats();

  struct Case {
    const char* what;
    int64_t row, column;
    float value;
    const char* text;
  };
  const Case cases[] = {
      {"nan", 3, 5, std::numeric_limits<float>::quiet_NaN(), "NaN"},
      {"+inf", 0, 0, std::numeric_limits<float>::infinity(), "+Inf"},
      {"-inf", 9, 7, -std::numeric_limits<float>::infinity(), "-Inf"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<float> bad = x;
    bad[static_cast<size_t>(c.row * features + c.column)] = c.value;
    const absl::Status s = acc.Add(bad.data(), 10, features);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("blk.3.ffn_down"));
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("row ", c.row)));
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("column ", c.column)));
    EXPECT_THAT(s.message(), HasSubstr(c.text));
  }
  absl::Status s = acc.Add(x.data(), 2, features + 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("blk.3.ffn_down"));
  EXPECT_THAT(s.message(), HasSubstr("9 columns"));
  s = acc.Add(x.data(), 0, features);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("blk.3.ffn_down"));
  EXPECT_THAT(s.message(), HasSubstr("at least one row"));

  EXPECT_EQ(acc.tokens(), 4);
  EXPECT_EQ(*acc.Gram(), gram_before);
  const ChannelStats stats_after = *acc.Stats();
  EXPECT_EQ(stats_after.min, stats_before.min);
  EXPECT_EQ(stats_after.max, stats_before.max);
  EXPECT_EQ(stats_after.mean_sq, stats_before.mean_sq);
}

TEST(CalibrationAccumulatorTest, BadOptionsAndMerges) {
  CalibrationOptions bad = SmallOptions();
  bad.tensor_histogram_bins = 1000;
  EXPECT_EQ(CalibrationAccumulator::Create("a", 4, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = SmallOptions();
  bad.channel_histogram_bins = 8;
  EXPECT_EQ(CalibrationAccumulator::Create("a", 4, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CalibrationAccumulator::Create("a", 0).status().code(),
            absl::StatusCode::kInvalidArgument);

  CalibrationAccumulator a =
      *CalibrationAccumulator::Create("a", 4, SmallOptions());
  const CalibrationAccumulator other_name =
      *CalibrationAccumulator::Create("b", 4, SmallOptions());
  const CalibrationAccumulator other_features =
      *CalibrationAccumulator::Create("a", 5, SmallOptions());
  CalibrationOptions no_gram = SmallOptions();
  no_gram.gram = false;
  const CalibrationAccumulator other_options =
      *CalibrationAccumulator::Create("a", 4, no_gram);
  for (const CalibrationAccumulator* o :
       {&other_name, &other_features, &other_options}) {
    const absl::Status s = a.Merge(*o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr("'a'"));
  }
  EXPECT_EQ(a.Merge(a).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(other_options.Gram().status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.Importance().status().code(),
            absl::StatusCode::kFailedPrecondition);  // no tokens yet
}

TEST(CalibrationAccumulatorTest, MemoryDoesNotGrowWithTokens) {
  const int64_t features = 64;
  const std::vector<float> x = Activations(1000, features, kSeed + 6);
  CalibrationAccumulator acc =
      *CalibrationAccumulator::Create("layer", features, SmallOptions());
  const size_t empty = acc.MemoryBytes();
  const CalibrationOptions o = SmallOptions();
  const size_t f = static_cast<size_t>(features);
  // G in f64, a block of pending rows, per-channel histograms.
  EXPECT_GE(empty, f * f * 8 + f * static_cast<size_t>(o.gram_block_rows) * 4 +
                       f * static_cast<size_t>(o.channel_histogram_bins) * 4);
  EXPECT_LT(empty, 2 * (f * f * 8 +
                        f * static_cast<size_t>(o.gram_block_rows) * 4 +
                        f * static_cast<size_t>(o.channel_histogram_bins) * 4) +
                       static_cast<size_t>(o.tensor_histogram_bins) * 8 + 4096);
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(acc.Add(x.data(), 1000, features).ok());
    ASSERT_EQ(acc.MemoryBytes(), empty) << "after " << acc.tokens() << " tokens";
  }
  EXPECT_EQ(acc.tokens(), 30000);
}

TEST(CalibrationAccumulatorTest, FromPrecomputedStatistics) {
  const int64_t features = 3;
  // Only the upper triangle counts.
  const std::vector<double> g = {4, 1, 2,  //
                                 -7, 9, 3,  //
                                 -7, -7, 16};
  CalibrationAccumulator from_gram =
      *CalibrationAccumulator::FromGram("l", features, g, 2);
  EXPECT_TRUE(from_gram.has_gram());
  EXPECT_FALSE(from_gram.has_stats());
  EXPECT_EQ(*from_gram.Gram(),
            (std::vector<double>{4, 1, 2, 1, 9, 3, 2, 3, 16}));
  EXPECT_EQ(*from_gram.Importance(), (std::vector<float>{2, 4.5f, 8}));
  EXPECT_EQ(from_gram.Stats().status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(EstimateTensorRange(from_gram, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  const float row[3] = {1, 2, 3};
  EXPECT_EQ(from_gram.Add(row, 1, 3).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(
      from_gram.Merge(*CalibrationAccumulator::FromGram("l", features, g, 2))
          .ok());
  EXPECT_EQ(from_gram.tokens(), 4);
  EXPECT_EQ((*from_gram.Gram())[4], 18);

  CalibrationAccumulator imatrix =
      *CalibrationAccumulator::FromImportance("l", {1.0f, 3.0f}, 10);
  EXPECT_EQ(*imatrix.Importance(), (std::vector<float>{1.0f, 3.0f}));
  EXPECT_EQ(imatrix.Gram().status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(
      imatrix.Merge(*CalibrationAccumulator::FromImportance("l", {4.0f, 0.0f}, 30))
          .ok());
  EXPECT_EQ(imatrix.tokens(), 40);
  EXPECT_EQ(*imatrix.Importance(), (std::vector<float>{3.25f, 0.75f}));

  EXPECT_EQ(CalibrationAccumulator::FromGram("l", 2, g, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CalibrationAccumulator::FromGram("l", 3, g, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CalibrationAccumulator::FromImportance("l", {1.0f, -1.0f}, 1)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// --- Range estimators --------------------------------------------------

TEST(Int8RangeTest, ScalesAndZeroPoints) {
  ActivationRange r = Int8Range(-1.0f, 3.0f, /*symmetric=*/false);
  EXPECT_EQ(r.scale, 4.0f / 255.0f);
  EXPECT_EQ(r.zero_point, 64);  // round(63.75)
  r = Int8Range(0.5f, 3.0f, /*symmetric=*/false);  // range includes 0
  EXPECT_EQ(r.scale, 3.0f / 255.0f);
  EXPECT_EQ(r.zero_point, 0);
  r = Int8Range(-2.0f, 1.0f, /*symmetric=*/true);
  EXPECT_EQ(r.lo, -2.0f);
  EXPECT_EQ(r.hi, 2.0f);
  EXPECT_EQ(r.scale, 2.0f / 127.0f);
  EXPECT_EQ(r.zero_point, 0);
  r = Int8Range(0.0f, 0.0f, /*symmetric=*/true);
  EXPECT_GT(r.scale, 0.0f);
}

// Laplace(0, 1) activations (|x| for `positive`): heavy enough tails that
// the MSE-optimal int8 clip lies inside the range (about 9.9 for 8 bits).
CalibrationAccumulator Laplace(int64_t rows, int64_t features, bool positive) {
  std::mt19937 rng(kSeed + 7);
  std::exponential_distribution<float> exponential(1.0f);
  std::bernoulli_distribution sign(0.5);
  std::vector<float> x(static_cast<size_t>(rows * features));
  for (float& v : x) {
    v = exponential(rng);
    if (!positive && sign(rng)) v = -v;
  }
  CalibrationOptions o;
  o.channel_histogram_bins = 512;
  return Accumulate(x, rows, features, 1024, o);
}

TEST(RangeEstimatorTest, MethodsOnHeavyTails) {
  const CalibrationAccumulator acc = Laplace(100000, 4, false);
  const ChannelStats stats = *acc.Stats();
  const float amax = std::max(-*std::min_element(stats.min.begin(), stats.min.end()),
                              *std::max_element(stats.max.begin(), stats.max.end()));
  auto t = [&](RangeOptions o) {
    absl::StatusOr<ActivationRange> r = EstimateTensorRange(acc, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->hi : -1.0f;
  };
  const float minmax = t({.method = RangeMethod::kMinMax});
  const float p100 = t({.method = RangeMethod::kPercentile, .percentile = 100});
  const float p99 = t({.method = RangeMethod::kPercentile, .percentile = 99});
  const float mse = t({.method = RangeMethod::kMse});
  const float kl = t({.method = RangeMethod::kKl});
  EXPECT_EQ(minmax, amax);
  EXPECT_EQ(p100, amax);
  EXPECT_GT(amax, 12.0f);  // ln(400000) = 12.9
  // P(|x| > t) = exp(-t): the 99th percentile is ln(100) = 4.6.
  EXPECT_GT(p99, 4.4f);
  EXPECT_LT(p99, 4.9f);
  // 8-bit MSE clipping of a Laplace(1): about 9.9.
  EXPECT_GT(mse, 8.5f);
  EXPECT_LT(mse, 11.5f);
  EXPECT_LT(kl, amax);
  EXPECT_GT(kl, 3.0f);
  const ActivationRange r =
      *EstimateTensorRange(acc, {.method = RangeMethod::kMse});
  EXPECT_EQ(r.scale, r.hi / 127.0f);
  EXPECT_EQ(r.zero_point, 0);
}

TEST(RangeEstimatorTest, AsymmetricOnNonNegativeData) {
  const CalibrationAccumulator acc = Laplace(8000, 3, true);
  const ChannelStats stats = *acc.Stats();
  for (RangeMethod m : {RangeMethod::kMinMax, RangeMethod::kPercentile,
                        RangeMethod::kMse, RangeMethod::kKl}) {
    SCOPED_TRACE(static_cast<int>(m));
    const ActivationRange r =
        *EstimateTensorRange(acc, {.method = m, .symmetric = false});
    EXPECT_GE(r.lo, 0.0f);
    EXPECT_GT(r.hi, 3.0f);
    EXPECT_EQ(r.zero_point, 0);  // min(lo, 0) = 0
    EXPECT_EQ(r.scale, r.hi / 255.0f);
    const std::vector<ActivationRange> channels =
        *EstimateChannelRanges(acc, {.method = m, .symmetric = false});
    ASSERT_EQ(channels.size(), 3u);
    for (size_t c = 0; c < channels.size(); ++c) {
      EXPECT_GE(channels[c].lo, stats.min[c]);
      EXPECT_LE(channels[c].hi, stats.max[c]);
      EXPECT_GT(channels[c].hi, 1.0f);
      EXPECT_EQ(channels[c].zero_point, 0);
    }
  }
}

TEST(RangeEstimatorTest, HandBuiltHistograms) {
  Histogram h;
  h.bins = 16;
  h.exponent = 3;  // [-8, 8), bins of width 1
  h.counts.assign(16, 0);
  h.counts[8] = 90;   // [0, 1)
  h.counts[15] = 10;  // [7, 8)
  // Percentile 90 of |x| ends in the first positive bin.
  ClipRange r = *EstimateClipRange(
      h, 0.0f, 7.5f, {.method = RangeMethod::kPercentile, .percentile = 90});
  EXPECT_EQ(r.hi, 1.0);
  r = *EstimateClipRange(
      h, 0.0f, 7.5f, {.method = RangeMethod::kPercentile, .percentile = 90.5});
  EXPECT_EQ(r.hi, 7.5);  // the upper edge 8 clamped to the max
  // Asymmetric: the lower percentile starts in bin 8 (edge 0).
  r = *EstimateClipRange(h, 0.0f, 7.5f,
                         {.method = RangeMethod::kPercentile,
                          .symmetric = false,
                          .percentile = 95});
  EXPECT_EQ(r.lo, 0.0);
  EXPECT_EQ(r.hi, 7.5);
  // kMse symmetric, worked by hand: candidates t = 1..7 and 7.5; the folded
  // centres are 0.5 (90 values) and 7.5 (10 values, clamped to 7.5).
  auto model = [](double t) {
    const double s = t / 127.0;
    const double clip_small = t < 1.0 ? 90 * (0.5 - t) * (0.5 - t) : 0.0;
    const double clip_big = t < 7.5 ? 10 * (7.5 - t) * (7.5 - t) : 0.0;
    const double inside = (t < 1.0 ? 0 : 90) + (t < 7.5 ? 0 : 10);
    return clip_small + clip_big + inside * s * s / 12.0;
  };
  double best = 7.5;
  for (double t : {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 7.5}) {
    if (model(t) <= model(best)) best = t;
  }
  r = *EstimateClipRange(h, 0.0f, 7.5f, {.method = RangeMethod::kMse});
  EXPECT_EQ(r.hi, best);
  EXPECT_EQ(r.lo, -best);

  // Errors.
  EXPECT_EQ(EstimateClipRange(h, 0.0f, 7.5f,
                              {.method = RangeMethod::kPercentile,
                               .percentile = 20})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  Histogram empty = h;
  empty.counts.assign(16, 0);
  EXPECT_EQ(
      EstimateClipRange(empty, 0.0f, 1.0f, {.method = RangeMethod::kKl})
          .status()
          .code(),
      absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(EstimateClipRange(h, 2.0f, 1.0f, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RangeEstimatorTest, ChannelRangesNeedChannelHistograms) {
  CalibrationOptions o = SmallOptions();
  o.channel_histogram_bins = 0;
  const std::vector<float> x = Activations(100, 6, kSeed + 8);
  const CalibrationAccumulator acc = Accumulate(x, 100, 6, 100, o);
  EXPECT_EQ(EstimateChannelRanges(acc, {.method = RangeMethod::kKl})
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  const std::vector<ActivationRange> r =
      *EstimateChannelRanges(acc, {.method = RangeMethod::kMinMax});
  const ChannelStats stats = *acc.Stats();
  ASSERT_EQ(r.size(), 6u);
  for (size_t c = 0; c < 6; ++c) {
    EXPECT_EQ(r[c].hi, std::max(-stats.min[c], stats.max[c]));
  }
  const CalibrationAccumulator empty =
      *CalibrationAccumulator::Create("e", 6, SmallOptions());
  EXPECT_EQ(EstimateTensorRange(empty, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// --- Output-space error ------------------------------------------------

TEST(OutputErrorTest, MatchesDirectComputationOnX) {
  const int64_t rows = 400, in = 48, out = 300;  // two output panels
  const std::vector<float> x = Activations(rows, in, kSeed + 9);
  std::mt19937 rng(kSeed + 10);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(out * in)), w_hat(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = normal(rng);
    w_hat[i] = std::round(w[i] / 0.01f) * 0.01f;  // a uniform quantizer
  }
  const CalibrationAccumulator acc = Accumulate(x, rows, in, 128, SmallOptions());
  const std::vector<double> g = *acc.Gram();
  const OutputError e = *ComputeOutputError(w.data(), w_hat.data(), out, in, g);
  double err = 0, sig = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double y = 0, y_hat = 0;
      for (int64_t i = 0; i < in; ++i) {
        const double xv = x[static_cast<size_t>(r * in + i)];
        y += xv * w[static_cast<size_t>(o * in + i)];
        y_hat += xv * w_hat[static_cast<size_t>(o * in + i)];
      }
      err += (y - y_hat) * (y - y_hat);
      sig += y * y;
    }
  }
  EXPECT_NEAR(e.error_sq, err, 1e-4 * err);
  EXPECT_NEAR(e.signal_sq, sig, 1e-5 * sig);
  EXPECT_NEAR(e.relative_error, std::sqrt(err / sig), 1e-4 * std::sqrt(err / sig));
  EXPECT_NEAR(e.sqnr_db, 10 * std::log10(sig / err), 1e-3);

  const OutputError same = *ComputeOutputError(w.data(), w.data(), out, in, g);
  EXPECT_EQ(same.error_sq, 0.0);
  EXPECT_EQ(same.relative_error, 0.0);
  EXPECT_EQ(same.sqnr_db, std::numeric_limits<double>::infinity());

  EXPECT_EQ(ComputeOutputError(w.data(), w_hat.data(), out, in + 1, g)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  w_hat[17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(ComputeOutputError(w.data(), w_hat.data(), out, in, g)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantd

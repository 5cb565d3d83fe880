#include "kernels/w8a8.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/range_estimators.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

struct GemmCase {
  int64_t m, n, k;
  bool src_unsigned;
  int32_t zero_point;
};

TEST(Int8GemmS32Test, OneDnnEqualsTheScalarReferenceExactly) {
  const GemmCase cases[] = {
      {1, 1, 1, false, 0},      {1, 7, 100, false, 0},
      {1, 33, 63, true, 128},   {5, 17, 65, false, 0},
      {37, 64, 130, true, 3},   {64, 48, 257, false, 0},
      {3, 5, 1000, true, 255},  {16, 16, 64, true, 0},
      {130, 70, 511, false, 0}, {9, 300, 4099, true, 77},
  };
  uint32_t seed = 100;
  for (const GemmCase& c : cases) {
    ++seed;
    SCOPED_TRACE(testing::Message()
                 << "m " << c.m << " n " << c.n << " k " << c.k << " u8 "
                 << c.src_unsigned << " zp " << c.zero_point << " seed "
                 << seed);
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> byte(0, 255);
    std::vector<uint8_t> a(static_cast<size_t>(c.m * c.k));
    std::vector<int8_t> b(static_cast<size_t>(c.n * c.k));
    for (uint8_t& v : a) v = static_cast<uint8_t>(byte(rng));
    for (int8_t& v : b) v = static_cast<int8_t>(byte(rng) - 128);
    // The extremes: a row of -128 (s8) / 255 (u8) against a row of -128.
    std::fill(a.begin(), a.begin() + c.k, c.src_unsigned ? 255 : 0x80);
    std::fill(b.begin(), b.begin() + c.k, int8_t{-128});
    std::vector<int32_t> ref(static_cast<size_t>(c.m * c.n));
    Int8GemmS32Reference(a.data(), c.src_unsigned, c.zero_point, b.data(),
                         c.m, c.n, c.k, ref.data());
    for (Int8GemmS32::Path path : {Int8GemmS32::Path::kAuto,
                                   Int8GemmS32::Path::kSevenBitSplit}) {
      absl::StatusOr<Int8GemmS32> gemm =
          Int8GemmS32::Create(c.m, c.n, c.k, c.src_unsigned, path);
      ASSERT_TRUE(gemm.ok()) << gemm.status();
      SCOPED_TRACE(testing::Message() << "oneDNN " << gemm->implementation()
                                      << " split " << gemm->split());
      std::vector<int32_t> got(ref.size(), -1);
      // Created once, run twice: the same result.
      for (int run = 0; run < 2; ++run) {
        ASSERT_TRUE(gemm->Run(a.data(), c.zero_point, b.data(), got.data())
                        .ok());
        EXPECT_EQ(got, ref);
      }
    }
    const int32_t extreme = c.src_unsigned ? (255 - c.zero_point) * -128
                                           : (-128) * (-128);
    EXPECT_EQ(ref[0], extreme * static_cast<int32_t>(c.k));
  }
}

TEST(Int8GemmS32Test, BadShapesAreInvalidArgument) {
  EXPECT_EQ(Int8GemmS32::Create(0, 4, 4, false).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status s = Int8GemmS32::Create(2, 2, 70000, false).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s.message(), "70000")) << s;
}

TEST(QuantizeActivationsInt8Test, RoundsHalfToEvenAndSaturates) {
  const float x[] = {0.5f, 1.5f, 2.5f, -2.5f, -0.5f, 126.6f, 200.0f,
                     -128.4f, -129.0f, 3.0f};
  W8A8Activations act;
  act.scale = 1.0f;
  uint8_t q[10];
  EXPECT_EQ(QuantizeActivationsInt8(x, 1, 10, act, q), 2);
  const int8_t want[] = {0, 2, 2, -2, 0, 127, 127, -128, -128, 3};
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(static_cast<int8_t>(q[i]), want[i]) << i;
  }
  act.asymmetric = true;
  act.zero_point = 128;
  act.scale = 0.5f;
  // x / 0.5 + 128: 129, 131, 133, 123, 127, 381->255, 528->255, -128.8->-129
  // rounds to -257 + 128 -> 0, -258 + 128 -> 0, 134.
  EXPECT_EQ(QuantizeActivationsInt8(x, 2, 5, act, q), 4);
  const uint8_t want_u8[] = {129, 131, 133, 123, 127, 255, 255, 0, 0, 134};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(q[i], want_u8[i]) << i;
  // Smoothing divides first.
  const float smooth[] = {2.0f, 4.0f};
  const float y[] = {5.0f, 10.0f};
  W8A8Activations sm;
  sm.scale = 1.0f;
  sm.smooth = smooth;
  EXPECT_EQ(QuantizeActivationsInt8(y, 1, 2, sm, q), 0);
  EXPECT_EQ(static_cast<int8_t>(q[0]), 2);  // 2.5 -> 2
  EXPECT_EQ(static_cast<int8_t>(q[1]), 2);  // 2.5 -> 2
}

struct Layer {
  int64_t m, n, k;
  std::vector<float> x;  // m x k
  std::vector<float> w;  // n x k
};

// Activations N(0, 1) with every 11th channel `outlier` times larger.
Layer MakeLayer(int64_t m, int64_t n, int64_t k, float outlier,
                uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Layer l{m, n, k, std::vector<float>(static_cast<size_t>(m * k)),
          std::vector<float>(static_cast<size_t>(n * k))};
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = 0; c < k; ++c) {
      l.x[i * k + c] = normal(rng) * (c % 11 == 0 ? outlier : 1.0f);
    }
  }
  for (float& v : l.w) v = 0.05f * normal(rng);
  return l;
}

QuantizedTensor QuantizeWeights(const std::vector<float>& w, int64_t n,
                                int64_t k, const std::string& scheme) {
  absl::StatusOr<Scheme> s = ParseScheme(scheme);
  EXPECT_TRUE(s.ok()) << s.status();
  absl::StatusOr<Layout> layout = MakeLayout(*s, {n, k});
  EXPECT_TRUE(layout.ok()) << layout.status();
  QuantizedTensor q = AllocateQuantized(*layout);
  EXPECT_TRUE(Quantize(w.data(), q).ok());
  return q;
}

float AbsMax(const std::vector<float>& v) {
  float m = 0.0f;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

// The metrics recomputed here in double from the scalar reference GEMM.
TEST(W8A8CheckTest, MetricsMatchAnIndependentComputation) {
  for (const char* scheme : {"int8", "int8_tensor"}) {
    for (bool asymmetric : {false, true}) {
      SCOPED_TRACE(testing::Message() << scheme << " asymmetric " << asymmetric
                                      << " (seed 3)");
      const Layer l = MakeLayer(33, 40, 129, 8.0f, 3);
      const QuantizedTensor wq = QuantizeWeights(l.w, l.n, l.k, scheme);
      absl::StatusOr<W8A8Weights> weights = W8A8Weights::From(wq);
      ASSERT_TRUE(weights.ok()) << weights.status();
      W8A8Activations act;
      if (asymmetric) {
        float lo = 0.0f, hi = 0.0f;
        for (float v : l.x) {
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
        act = W8A8Activations::FromRange(Int8Range(lo, hi, false), false);
        ASSERT_TRUE(act.asymmetric);
        ASSERT_GT(act.zero_point, 0);
        ASSERT_EQ(act.scale, Int8Range(lo, hi, false).scale);
      } else {
        act.scale = 0.8f * AbsMax(l.x) / 127.0f;  // clips the largest
      }
      W8A8Options options;
      options.return_output = true;
      absl::StatusOr<W8A8Report> r = W8A8Check(
          l.x.data(), l.m, l.w.data(), l.n, l.k, *weights, act, options);
      ASSERT_TRUE(r.ok()) << r.status();

      std::vector<uint8_t> xq(l.x.size());
      const int64_t clipped =
          QuantizeActivationsInt8(l.x.data(), l.m, l.k, act, xq.data());
      EXPECT_EQ(r->clipped, clipped);
      if (!asymmetric) {
        EXPECT_GT(clipped, 0);
      }
      std::vector<int32_t> acc(static_cast<size_t>(l.m * l.n));
      Int8GemmS32Reference(xq.data(), asymmetric, act.zero_point,
                           weights->codes, l.m, l.n, l.k, acc.data());
      double err2 = 0, ref2 = 0, max_abs = 0, werr2 = 0;
      for (int64_t i = 0; i < l.m; ++i) {
        for (int64_t j = 0; j < l.n; ++j) {
          const float sw = wq.scales.size() == 1 ? wq.scales[0] : wq.scales[j];
          const float y = (act.scale * sw) * static_cast<float>(acc[i * l.n + j]);
          ASSERT_EQ(y, r->y[i * l.n + j]);
          double ref = 0, yw = 0;
          for (int64_t c = 0; c < l.k; ++c) {
            const double xv = l.x[i * l.k + c];
            ref += xv * l.w[j * l.k + c];
            yw += xv * static_cast<double>(
                           sw * static_cast<float>(weights->codes[j * l.k + c]));
          }
          err2 += (y - ref) * (y - ref);
          werr2 += (yw - ref) * (yw - ref);
          ref2 += ref * ref;
          max_abs = std::max(max_abs, std::fabs(y - ref));
        }
      }
      EXPECT_NEAR(r->w8a8.relative_error, std::sqrt(err2 / ref2),
                  1e-4 * std::sqrt(err2 / ref2));
      EXPECT_NEAR(r->w8a8.sqnr_db, 10 * std::log10(ref2 / err2), 1e-3);
      EXPECT_NEAR(r->w8a8.max_abs_error, max_abs, 1e-4 * max_abs);
      EXPECT_NEAR(r->weight_only.relative_error, std::sqrt(werr2 / ref2),
                  1e-3 * std::sqrt(werr2 / ref2));
      EXPECT_DOUBLE_EQ(r->clipped_fraction,
                       static_cast<double>(clipped) /
                           static_cast<double>(l.m * l.k));
      // Quantizing the activations too costs accuracy.
      EXPECT_GT(r->w8a8.relative_error, r->weight_only.relative_error);
      EXPECT_LT(r->w8a8.relative_error, 0.1);
    }
  }
}

TEST(W8A8CheckTest, ClippingAndOutliersShowInTheReport) {
  const Layer l = MakeLayer(64, 32, 256, 30.0f, 9);
  const QuantizedTensor wq = QuantizeWeights(l.w, l.n, l.k,
                                             "int8");
  const W8A8Weights weights = *W8A8Weights::From(wq);
  W8A8Activations full;
  full.scale = AbsMax(l.x) / 127.0f;
  const W8A8Report r_full =
      *W8A8Check(l.x.data(), l.m, l.w.data(), l.n, l.k, weights, full, {});
  EXPECT_EQ(r_full.clipped, 0);
  W8A8Activations tight = full;
  tight.scale = full.scale / 8.0f;
  const W8A8Report r_tight =
      *W8A8Check(l.x.data(), l.m, l.w.data(), l.n, l.k, weights, tight, {});
  EXPECT_GT(r_tight.clipped_fraction, 0.01);
  EXPECT_GT(r_tight.w8a8.relative_error, r_full.w8a8.relative_error);
  // Weights-only error does not depend on the activation range.
  EXPECT_EQ(r_tight.weight_only.relative_error,
            r_full.weight_only.relative_error);

  // SmoothQuant (alpha 0.5) moves the outliers into the weight: the codes
  // quantize W diag(s) and x is divided by s.
  std::vector<float> s(static_cast<size_t>(l.k));
  std::vector<float> ws(l.w.size());
  for (int64_t c = 0; c < l.k; ++c) {
    float ax = 0.0f, aw = 0.0f;
    for (int64_t i = 0; i < l.m; ++i) ax = std::max(ax, std::fabs(l.x[i * l.k + c]));
    for (int64_t j = 0; j < l.n; ++j) aw = std::max(aw, std::fabs(l.w[j * l.k + c]));
    s[c] = std::sqrt(ax / aw);
    for (int64_t j = 0; j < l.n; ++j) ws[j * l.k + c] = l.w[j * l.k + c] * s[c];
  }
  const QuantizedTensor wsq = QuantizeWeights(ws, l.n, l.k,
                                              "int8");
  W8A8Activations smooth;
  smooth.smooth = s;
  float amax = 0.0f;
  for (int64_t i = 0; i < l.m; ++i) {
    for (int64_t c = 0; c < l.k; ++c) {
      amax = std::max(amax, std::fabs(l.x[i * l.k + c] / s[c]));
    }
  }
  smooth.scale = amax / 127.0f;
  const W8A8Report r_smooth = *W8A8Check(l.x.data(), l.m, l.w.data(), l.n,
                                         l.k, *W8A8Weights::From(wsq), smooth,
                                         {});
  std::printf("W8A8 output error: min-max %.5f, 1/8 range %.5f (clipped %.3f), "
              "smoothed %.5f; weights only %.5f / smoothed %.5f\n",
              r_full.w8a8.relative_error, r_tight.w8a8.relative_error,
              r_tight.clipped_fraction, r_smooth.w8a8.relative_error,
              r_full.weight_only.relative_error,
              r_smooth.weight_only.relative_error);
  EXPECT_LT(r_smooth.w8a8.relative_error, 0.7 * r_full.w8a8.relative_error);
}

TEST(W8A8CheckTest, BadInputIsInvalidArgumentNamingTheProblem) {
  Layer l = MakeLayer(4, 8, 16, 1.0f, 1);
  const QuantizedTensor wq = QuantizeWeights(l.w, l.n, l.k,
                                             "int8");
  const W8A8Weights weights = *W8A8Weights::From(wq);
  W8A8Activations act;
  act.scale = 0.1f;
  const auto check = [&](const W8A8Weights& wt, const W8A8Activations& a,
                         absl::string_view part) {
    absl::Status s =
        W8A8Check(l.x.data(), l.m, l.w.data(), l.n, l.k, wt, a, {}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_TRUE(Contains(s.message(), part)) << s << " lacks " << part;
  };
  W8A8Activations bad = act;
  bad.scale = 0.0f;
  check(weights, bad, "activation scale");
  bad = act;
  bad.zero_point = 5;
  check(weights, bad, "zero point 5");
  bad.asymmetric = true;
  bad.zero_point = 300;
  check(weights, bad, "[0, 255]");
  const float smooth[] = {1.0f, 2.0f};
  bad = act;
  bad.smooth = smooth;
  check(weights, bad, "2 factors for 16");
  W8A8Weights wt = weights;
  wt.scales = wt.scales.subspan(0, 3);
  check(wt, act, "3 scales");
  l.x[5] = std::nanf("");
  check(weights, act, "index 5");

  const QuantizedTensor int4 = QuantizeWeights(l.w, l.n, l.k,
                                               "int4");
  EXPECT_EQ(W8A8Weights::From(int4).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantd

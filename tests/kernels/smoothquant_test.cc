#include "kernels/smoothquant.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/gptq.h"

namespace quantd {
namespace {

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

// Activations with a few huge outlier channels (the LLM case SmoothQuant
// targets), their Gram matrix and per-channel max |x|, and a weight.
struct Problem {
  int64_t rows = 0, cols = 0, tokens = 0;
  std::vector<float> w;
  std::vector<double> g;
  std::vector<float> max_abs;
};

Problem MakeProblem(int64_t rows, int64_t cols, int64_t tokens,
                    uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Problem p{rows, cols, tokens, {}, {}, {}};
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (int64_t t = 0; t < tokens; ++t) {
    const float common = normal(rng);
    for (int64_t c = 0; c < cols; ++c) {
      const float v = 0.7f * normal(rng) + 0.3f * common;
      x[t * cols + c] = c % 16 == 3 ? 60.0f * v : v;
    }
  }
  p.g.assign(static_cast<size_t>(cols * cols), 0.0);
  p.max_abs.assign(static_cast<size_t>(cols), 0.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * cols;
    for (int64_t i = 0; i < cols; ++i) {
      p.max_abs[i] = std::max(p.max_abs[i], std::fabs(xt[i]));
      for (int64_t j = 0; j < cols; ++j) {
        p.g[i * cols + j] += static_cast<double>(xt[i]) * xt[j];
      }
    }
  }
  p.w.resize(static_cast<size_t>(rows * cols));
  for (float& v : p.w) v = 0.05f * normal(rng);
  return p;
}

TEST(SmoothQuantTest, ScalesFollowThePaperFormula) {
  Problem p = MakeProblem(16, 64, 256, 1);
  p.max_abs[9] = 0.0f;  // a channel never active: s clamped at 1e-5
  for (double alpha : {0.0, 0.5, 0.85, 1.0}) {
    SCOPED_TRACE(testing::Message() << "alpha " << alpha);
    SmoothQuantOptions options;
    options.alpha = alpha;
    absl::StatusOr<SmoothQuantResult> r =
        SmoothQuant(p.w.data(), p.rows, p.cols, p.max_abs, nullptr, options);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(std::isnan(r->estimated_error));
    for (int64_t j = 0; j < p.cols; ++j) {
      double w_max = 0.0;
      for (int64_t row = 0; row < p.rows; ++row) {
        w_max = std::max(w_max, std::fabs(double{p.w[row * p.cols + j]}));
      }
      const double expected = std::max(
          std::pow(double{p.max_abs[j]}, alpha) /
              std::pow(std::max(w_max, 1e-5), 1.0 - alpha),
          1e-5);
      EXPECT_NEAR(r->scales[j], expected, 2e-6 * expected) << j;
      for (int64_t row = 0; row < p.rows; ++row) {
        ASSERT_EQ(r->smoothed_weight[row * p.cols + j],
                  p.w[row * p.cols + j] * r->scales[j]);
      }
    }
  }
}

TEST(SmoothQuantTest, SearchPicksTheSmallestEstimateAndBeatsNoSmoothing) {
  const Problem p = MakeProblem(32, 128, 512, 2);
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  SmoothQuantOptions options;
  options.search_alpha = true;
  absl::StatusOr<SmoothQuantResult> r =
      SmoothQuant(p.w.data(), p.rows, p.cols, p.max_abs, &gram, options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->alpha_errors.size(), 21u);
  const auto best = std::min_element(r->alpha_errors.begin(),
                                     r->alpha_errors.end());
  EXPECT_EQ(r->estimated_error, *best);
  EXPECT_NEAR(r->alpha, static_cast<double>(best - r->alpha_errors.begin()) / 20,
              1e-6);
  // With outlier channels, smoothing clearly beats none (s = 1).
  const std::vector<float> ones(static_cast<size_t>(p.cols), 1.0f);
  absl::StatusOr<double> plain =
      EstimateW8A8Error(p.w.data(), p.rows, p.cols, ones, p.max_abs, gram);
  ASSERT_TRUE(plain.ok());
  EXPECT_LT(r->estimated_error, 0.5 * *plain)
      << r->estimated_error << " vs " << *plain;
  // The public estimate agrees with the search's.
  absl::StatusOr<double> again = EstimateW8A8Error(
      p.w.data(), p.rows, p.cols, r->scales, p.max_abs, gram);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, r->estimated_error);
}

TEST(SmoothQuantTest, BadInputIsInvalidArgumentNamingTheProblem) {
  const Problem p = MakeProblem(4, 32, 64, 3);
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  SmoothQuantOptions search;
  search.search_alpha = true;
  SmoothQuantOptions bad_alpha;
  bad_alpha.alpha = 1.5;
  std::vector<float> inf_act = p.max_abs;
  inf_act[2] = std::numeric_limits<float>::infinity();
  const std::vector<float> short_act(p.max_abs.begin(), p.max_abs.end() - 2);
  std::vector<double> g_nan = p.g;
  g_nan[3 * 32 + 1] = std::numeric_limits<double>::quiet_NaN();
  const GramView nan_gram = GramView::F64(g_nan, p.cols, p.tokens);
  std::vector<float> zero_scales(32, 1.0f);
  zero_scales[6] = 0.0f;
  struct Bad {
    const char* what;
    absl::Status status;
    const char* message;
  };
  const Bad cases[] = {
      {"search without G",
       SmoothQuant(p.w.data(), 4, 32, p.max_abs, nullptr, search).status(),
       "search_alpha needs G"},
      {"alpha", SmoothQuant(p.w.data(), 4, 32, p.max_abs, nullptr, bad_alpha).status(),
       "alpha is 1.5"},
      {"act infinite", SmoothQuant(p.w.data(), 4, 32, inf_act, nullptr, {}).status(),
       "act_max_abs[2]"},
      {"act size", SmoothQuant(p.w.data(), 4, 32, short_act, nullptr, {}).status(),
       "act_max_abs has 30 values"},
      {"G NaN", SmoothQuant(p.w.data(), 4, 32, p.max_abs, &nan_gram, {}).status(),
       "row 3, column 1"},
      {"scales zero",
       EstimateW8A8Error(p.w.data(), 4, 32, zero_scales, p.max_abs, gram).status(),
       "scales[6]"},
  };
  for (const Bad& c : cases) {
    SCOPED_TRACE(c.what);
    EXPECT_EQ(c.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(c.status.message(), c.message)) << c.status;
  }
}

}  // namespace
}  // namespace quantd

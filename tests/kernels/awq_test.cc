#include "kernels/awq.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/gptq.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

// Calibration inputs with a few outlier channels (x40) over correlated
// features, their Gram matrix and mean |x| per channel, and a weight.
struct Problem {
  int64_t rows = 0, cols = 0, tokens = 0;
  std::vector<float> w;
  std::vector<double> g;
  std::vector<float> mean_abs;
};

Problem MakeProblem(int64_t rows, int64_t cols, int64_t tokens,
                    uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Problem p{rows, cols, tokens, {}, {}, {}};
  const int latent = 6;
  std::vector<float> mix(static_cast<size_t>(latent * cols));
  for (float& v : mix) v = normal(rng);
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (int64_t t = 0; t < tokens; ++t) {
    float z[latent];
    for (float& v : z) v = normal(rng);
    for (int64_t c = 0; c < cols; ++c) {
      float s = 0.5f * normal(rng);
      for (int k = 0; k < latent; ++k) s += z[k] * mix[k * cols + c];
      x[t * cols + c] = c % 13 == 5 ? 40.0f * s : s;
    }
  }
  p.g.assign(static_cast<size_t>(cols * cols), 0.0);
  p.mean_abs.assign(static_cast<size_t>(cols), 0.0f);
  std::vector<double> sum_abs(static_cast<size_t>(cols), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * cols;
    for (int64_t i = 0; i < cols; ++i) {
      sum_abs[i] += std::fabs(xt[i]);
      for (int64_t j = 0; j < cols; ++j) {
        p.g[i * cols + j] += static_cast<double>(xt[i]) * xt[j];
      }
    }
  }
  for (int64_t i = 0; i < cols; ++i) {
    p.mean_abs[i] = static_cast<float>(sum_abs[i] / static_cast<double>(tokens));
  }
  p.w.resize(static_cast<size_t>(rows * cols));
  for (float& v : p.w) v = 0.05f * normal(rng);
  for (size_t i = 0; i < p.w.size(); i += 61) p.w[i] *= 6.0f;
  return p;
}

Layout MakeIntLayout(const std::string& scheme, int64_t rows, int64_t cols) {
  absl::StatusOr<Layout> layout = MakeLayout(*ParseScheme(scheme), {rows, cols});
  EXPECT_TRUE(layout.ok()) << layout.status();
  return *layout;
}

TEST(AwqTest, BelowRoundToNearestAndConsistent) {
  const Problem p = MakeProblem(64, 256, 1024, 1);
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  for (const char* scheme : {"int4_asym_g64", "int3_asym_g32",
                             "int4_sym_channel", "int3_sym_g64",
                             "int4_asym_tensor"}) {
    SCOPED_TRACE(scheme);
    const Layout layout = MakeIntLayout(scheme, p.rows, p.cols);
    AwqOptions options;
    options.fake_quant = true;
    absl::StatusOr<AwqResult> r =
        AwqQuantize(p.w.data(), layout, p.mean_abs, gram, options);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_LT(r->output_error, 0.85 * r->rtn_output_error)
        << "awq " << r->output_error << " rtn " << r->rtn_output_error
        << " alpha " << r->alpha;
    // Ratio 0 is s = 1: plain round to nearest.
    ASSERT_EQ(r->alpha_errors.size(), 20u);
    EXPECT_EQ(r->alpha_errors[0], r->rtn_output_error);
    const double best =
        *std::min_element(r->alpha_errors.begin(), r->alpha_errors.end());
    EXPECT_EQ(r->alpha_errors[static_cast<size_t>(std::lround(r->alpha * 20))],
              best);
    // The fake-quant weight is the quantized tensor divided by s, and its
    // measured error is the reported one.
    std::vector<float> deq(p.w.size());
    Dequantize(r->quantized, deq.data());
    for (int64_t row = 0; row < p.rows; ++row) {
      for (int64_t j = 0; j < p.cols; ++j) {
        ASSERT_EQ(r->fake_quant[row * p.cols + j],
                  deq[row * p.cols + j] / r->scales[j]);
      }
    }
    absl::StatusOr<double> e = OutputRelativeError(
        p.w.data(), r->fake_quant.data(), p.rows, p.cols, gram);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(*e, r->output_error);
  }
}

TEST(AwqTest, ClippingOnlyShrinksAndHelps) {
  const Problem p = MakeProblem(32, 128, 512, 2);
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  const Layout layout = MakeIntLayout("int3_asym_g32", p.rows, p.cols);
  AwqOptions no_clip;
  no_clip.clip = false;
  absl::StatusOr<AwqResult> a =
      AwqQuantize(p.w.data(), layout, p.mean_abs, gram, no_clip);
  absl::StatusOr<AwqResult> b =
      AwqQuantize(p.w.data(), layout, p.mean_abs, gram, {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->alpha, b->alpha);
  EXPECT_EQ(a->scales, b->scales);
  // Without clipping the final error is the chosen ratio's.
  EXPECT_EQ(a->output_error,
            a->alpha_errors[static_cast<size_t>(std::lround(a->alpha * 20))]);
  ASSERT_EQ(a->clip_max.size(), b->clip_max.size());
  int shrunk = 0;
  for (size_t k = 0; k < a->clip_max.size(); ++k) {
    EXPECT_LE(b->clip_max[k], a->clip_max[k]);
    EXPECT_GE(b->clip_max[k], 0.55f * a->clip_max[k] * (1 - 1e-6f));
    shrunk += b->clip_max[k] < a->clip_max[k];
  }
  EXPECT_GT(shrunk, 0);
  EXPECT_LT(b->output_error, a->output_error);
}

TEST(AwqTest, BadInputIsInvalidArgumentNamingTheProblem) {
  const Problem p = MakeProblem(4, 32, 64, 3);
  const Layout layout = MakeIntLayout("int4_g16", p.rows, p.cols);
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  std::vector<float> short_act(p.mean_abs.begin(), p.mean_abs.end() - 1);
  std::vector<float> neg_act = p.mean_abs;
  neg_act[4] = -1.0f;
  std::vector<float> nan_w = p.w;
  nan_w[7] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<double> g_small(16 * 16, 1.0);
  AwqOptions bad_grid;
  bad_grid.n_grid = 0;
  AwqOptions bad_shrink;
  bad_shrink.max_shrink = 1.0;
  struct Bad {
    const char* what;
    std::function<absl::StatusOr<AwqResult>()> run;
    const char* message;
  };
  const Bad cases[] = {
      {"act size", [&] { return AwqQuantize(p.w.data(), layout, short_act, gram, {}); },
       "act_mean_abs has 31 values"},
      {"act negative", [&] { return AwqQuantize(p.w.data(), layout, neg_act, gram, {}); },
       "act_mean_abs[4]"},
      {"w NaN", [&] { return AwqQuantize(nan_w.data(), layout, p.mean_abs, gram, {}); },
       "index 7"},
      {"G size",
       [&] { return AwqQuantize(p.w.data(), layout, p.mean_abs,
                                GramView::F64(g_small, 16, 64), {}); },
       "input features"},
      {"n_grid", [&] { return AwqQuantize(p.w.data(), layout, p.mean_abs, gram, bad_grid); },
       "n_grid"},
      {"max_shrink", [&] { return AwqQuantize(p.w.data(), layout, p.mean_abs, gram, bad_shrink); },
       "max_shrink"},
  };
  for (const Bad& c : cases) {
    SCOPED_TRACE(c.what);
    absl::StatusOr<AwqResult> r = c.run();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status().message(), c.message)) << r.status();
  }
}

}  // namespace
}  // namespace quantd

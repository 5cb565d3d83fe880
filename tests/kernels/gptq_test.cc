#include "kernels/gptq.h"

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
#include "kernels/internal/linalg.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

// A layer's calibration data: correlated inputs (a random mixing of a few
// latent factors plus noise) with a handful of outlier channels, and
// weights with a few large entries.
struct Problem {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t tokens = 0;
  std::vector<float> w;
  std::vector<double> g;
};

Problem MakeProblem(int64_t rows, int64_t cols, int64_t tokens,
                    uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Problem p;
  p.rows = rows;
  p.cols = cols;
  p.tokens = tokens;
  const int64_t latent = 8;
  std::vector<float> mix(static_cast<size_t>(latent * cols));
  for (float& v : mix) v = normal(rng);
  std::vector<float> channel_scale(static_cast<size_t>(cols), 1.0f);
  for (int64_t c = 0; c < cols; c += 17) channel_scale[c] = 20.0f;
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (int64_t t = 0; t < tokens; ++t) {
    float z[latent];
    for (float& v : z) v = normal(rng);
    for (int64_t c = 0; c < cols; ++c) {
      float s = 0.3f * normal(rng);
      for (int64_t k = 0; k < latent; ++k) s += z[k] * mix[k * cols + c];
      x[t * cols + c] = s * channel_scale[c];
    }
  }
  p.g.assign(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * cols;
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        p.g[i * cols + j] += static_cast<double>(xt[i]) * xt[j];
      }
    }
  }
  p.w.resize(static_cast<size_t>(rows * cols));
  for (float& v : p.w) v = 0.02f * normal(rng);
  for (size_t i = 0; i < p.w.size(); i += 97) p.w[i] *= 8.0f;
  return p;
}

Layout MakeIntLayout(const std::string& scheme, int64_t rows, int64_t cols) {
  absl::StatusOr<Scheme> s = ParseScheme(scheme);
  EXPECT_TRUE(s.ok()) << s.status();
  absl::StatusOr<Layout> layout = MakeLayout(*s, {rows, cols});
  EXPECT_TRUE(layout.ok()) << layout.status();
  return *layout;
}

std::vector<float> Dense(const QuantizedTensor& q) {
  std::vector<float> out(static_cast<size_t>(q.layout.num_elements));
  Dequantize(q, out.data());
  return out;
}

std::vector<uint8_t> Fields(const QuantizedTensor& q) {
  std::vector<uint8_t> f(static_cast<size_t>(q.layout.num_elements));
  UnpackCodes(q.codes.data(), q.layout.num_elements, q.layout.bits, f.data());
  return f;
}

// ---------------------------------------------------------------------------
// Linear algebra.

std::vector<float> RandomSpd(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> b(static_cast<size_t>(n * n));
  for (float& v : b) v = normal(rng);
  std::vector<float> a(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = i == j ? static_cast<double>(n) : 0.0;
      for (int64_t k = 0; k < n; ++k) s += double{b[i * n + k]} * b[j * n + k];
      a[i * n + j] = static_cast<float>(s / static_cast<double>(n));
    }
  }
  return a;
}

TEST(LinalgTest, CholeskyLowerReproducesTheMatrix) {
  for (int64_t n : {1, 5, 128, 300}) {
    SCOPED_TRACE(testing::Message() << "n " << n);
    const std::vector<float> a = RandomSpd(n, 7);
    std::vector<float> l = a;
    ASSERT_TRUE(internal::CholeskyLower(l.data(), n, n).ok());
    double max_err = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        if (j > i) {
          EXPECT_EQ(l[i * n + j], 0.0f);
        }
        double s = 0.0;
        for (int64_t k = 0; k < n; ++k) s += double{l[i * n + k]} * l[j * n + k];
        max_err = std::max(max_err, std::fabs(s - a[i * n + j]));
      }
    }
    EXPECT_LT(max_err, 1e-4);
  }
}

TEST(LinalgTest, UpperCholeskyOfInverseTimesMatrixIsIdentity) {
  for (int64_t n : {1, 3, 129, 300}) {
    SCOPED_TRACE(testing::Message() << "n " << n);
    const std::vector<float> h = RandomSpd(n, 11);
    std::vector<float> u = h;
    ASSERT_TRUE(internal::UpperCholeskyOfInverse(u.data(), n).ok());
    // U^T U H == I.
    std::vector<double> utu(static_cast<size_t>(n * n));
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_GT(u[i * n + i], 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        if (j < i) {
          EXPECT_EQ(u[i * n + j], 0.0f);
        }
        double s = 0.0;
        for (int64_t k = 0; k < n; ++k) s += double{u[k * n + i]} * u[k * n + j];
        utu[i * n + j] = s;
      }
    }
    double max_err = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t k = 0; k < n; ++k) s += utu[i * n + k] * h[k * n + j];
        max_err = std::max(max_err, std::fabs(s - (i == j ? 1.0 : 0.0)));
      }
    }
    EXPECT_LT(max_err, 1e-4);
  }
}

TEST(LinalgTest, NotPositiveDefiniteIsFailedPrecondition) {
  std::vector<float> h = {1, 2, 2, 1};
  const absl::Status s = internal::UpperCholeskyOfInverse(h.data(), 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(s.message(), "not positive definite")) << s;
}

// ---------------------------------------------------------------------------
// GPTQ.

struct Case {
  const char* scheme;
  bool act_order;
  bool static_groups;
};

TEST(GptqTest, ClearlyBelowRoundToNearestOnCorrelatedInputs) {
  const Problem p = MakeProblem(64, 256, 1024, 1);
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  const Case cases[] = {
      {"int4_sym_channel", false, false}, {"int4_asym_channel", false, false},
      {"int3_asym_channel", false, false}, {"int4_asym_g64", false, false},
      {"int3_sym_g32", false, false},     {"int4_asym_g64", true, false},
      {"int4_asym_g64", true, true},      {"int3_asym_g32", true, true},
      {"int4_sym_tensor", false, false},  {"int3_asym_channel", true, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << c.scheme << " act_order " << c.act_order
                                    << " static_groups " << c.static_groups);
    GptqOptions options;
    options.act_order = c.act_order;
    options.static_groups = c.static_groups;
    absl::StatusOr<GptqResult> r = GptqQuantize(
        p.w.data(), MakeIntLayout(c.scheme, p.rows, p.cols), gram, options);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_GT(r->rtn_output_error, 0.0);
    EXPECT_LT(r->output_error, 0.75 * r->rtn_output_error)
        << "gptq " << r->output_error << " rtn " << r->rtn_output_error;
    // The reported error is the measured one of the dequantized weights.
    std::vector<float> w_hat(p.w.size());
    Dequantize(r->quantized, w_hat.data());
    absl::StatusOr<double> e =
        OutputRelativeError(p.w.data(), w_hat.data(), p.rows, p.cols, gram);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(*e, r->output_error);
  }
}

TEST(GptqTest, F32GramGivesTheSameResultAsF64) {
  const Problem p = MakeProblem(16, 64, 256, 2);
  std::vector<float> g32(p.g.begin(), p.g.end());
  const Layout layout = MakeIntLayout("int4_asym_g32", p.rows, p.cols);
  absl::StatusOr<GptqResult> a =
      GptqQuantize(p.w.data(), layout, GramView::F64(p.g, p.cols, p.tokens), {});
  absl::StatusOr<GptqResult> b =
      GptqQuantize(p.w.data(), layout, GramView::F32(g32, p.cols, p.tokens), {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->quantized.codes, b->quantized.codes);
  EXPECT_EQ(a->quantized.scales, b->quantized.scales);
}

TEST(GptqTest, PerChannelAndStaticGroupScalesAreRoundToNearestScales) {
  // Parameters from the original W: exactly what Quantize computes.
  const Problem p = MakeProblem(32, 128, 512, 3);
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  for (const char* scheme : {"int4_asym_channel", "int3_sym_g32"}) {
    for (bool act_order : {false, true}) {
      SCOPED_TRACE(testing::Message() << scheme << " act_order " << act_order);
      const Layout layout = MakeIntLayout(scheme, p.rows, p.cols);
      GptqOptions options;
      options.act_order = act_order;
      options.static_groups = true;
      absl::StatusOr<GptqResult> r = GptqQuantize(p.w.data(), layout, gram,
                                                  options);
      ASSERT_TRUE(r.ok()) << r.status();
      QuantizedTensor rtn = AllocateQuantized(layout);
      ASSERT_TRUE(Quantize(p.w.data(), rtn).ok());
      EXPECT_FALSE(r->quantized.layout.group_index);
      EXPECT_TRUE(r->quantized.group_index.empty());
      EXPECT_EQ(r->quantized.scales, rtn.scales);
      EXPECT_EQ(r->quantized.zero_points, rtn.zero_points);
      EXPECT_NE(r->quantized.codes, rtn.codes);  // but GPTQ moved codes
      EXPECT_EQ(Dense(r->quantized), [&] {
        std::vector<float> w_hat(p.w.size());
        Dequantize(r->quantized, w_hat.data());
        return w_hat;
      }());
    }
  }
}

TEST(GptqTest, ActOrderWithDynamicGroupsKeepsColumnOrderWithGroupIndex) {
  const Problem p = MakeProblem(8, 96, 384, 4);
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  const Layout layout = MakeIntLayout("int4_asym_g32", p.rows, p.cols);
  GptqOptions options;
  options.act_order = true;
  absl::StatusOr<GptqResult> r = GptqQuantize(p.w.data(), layout, gram,
                                              options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->perm.size(), 96u);
  ASSERT_EQ(r->g_idx.size(), 96u);
  ASSERT_TRUE(r->quantized.layout.group_index);
  EXPECT_EQ(r->quantized.group_index, r->g_idx);
  EXPECT_TRUE(CheckGroupIndex(r->quantized.layout, r->quantized.group_index)
                  .ok());
  // The stored bits count the index: 32 bits per column, per row.
  EXPECT_DOUBLE_EQ(r->quantized.layout.BitsPerWeight(),
                   layout.BitsPerWeight() + 32.0 / static_cast<double>(p.rows));
  // perm sorts diag(G) descending, and the j-th quantized column is in
  // group j / 32 of its row: every group holds 32 columns.
  std::vector<int> members(3, 0);
  for (size_t j = 0; j < r->perm.size(); ++j) {
    if (j > 0) {
      EXPECT_GE(p.g[r->perm[j - 1] * (p.cols + 1)],
                p.g[r->perm[j] * (p.cols + 1)]);
    }
    EXPECT_EQ(r->g_idx[r->perm[j]], static_cast<int32_t>(j / 32));
    ++members[r->g_idx[r->perm[j]]];
  }
  EXPECT_EQ(members, std::vector<int>({32, 32, 32}));
  // Codes in the original column order; g_idx addresses each column's
  // scale, and Dequantize (fast) and DequantizeReference follow it.
  std::vector<float> w_hat(p.w.size()), w_ref(p.w.size());
  Dequantize(r->quantized, w_hat.data());
  DequantizeReference(r->quantized, w_ref.data());
  EXPECT_EQ(w_hat, w_ref);
  const std::vector<uint8_t> fields = Fields(r->quantized);
  const int64_t groups_per_row = p.cols / 32;
  for (int64_t row = 0; row < p.rows; ++row) {
    for (int64_t c = 0; c < p.cols; ++c) {
      const int64_t g = row * groups_per_row + r->g_idx[c];
      const float expected =
          r->quantized.scales[g] *
          static_cast<float>(fields[row * p.cols + c] -
                             r->quantized.zero_points[g]);
      ASSERT_EQ(w_hat[row * p.cols + c], expected) << row << "," << c;
    }
  }
  // The metrics pass measures what Dequantize gives.
  std::vector<float> w_measured(p.w.size());
  const ErrorMetrics m =
      DequantizeAndMeasure(r->quantized, p.w.data(), w_measured.data());
  EXPECT_EQ(w_measured, w_hat);
  EXPECT_EQ(m.max_abs_error,
            ComputeErrorMetrics(p.w.data(), w_hat.data(),
                                static_cast<int64_t>(p.w.size()))
                .max_abs_error);
  // A wrong index is refused before anything reads through it.
  std::vector<int32_t> bad = r->g_idx;
  bad[5] = 3;
  EXPECT_EQ(CheckGroupIndex(r->quantized.layout, bad).code(),
            absl::StatusCode::kInvalidArgument);
  bad.pop_back();
  EXPECT_EQ(CheckGroupIndex(r->quantized.layout, bad).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckGroupIndex(layout, r->g_idx).code(),
            absl::StatusCode::kInvalidArgument);
  // Quantize writes consecutive groups: reusing the tensor as its
  // destination puts the identity index back, so it decodes as RTN does.
  QuantizedTensor reused = r->quantized;
  ASSERT_TRUE(Quantize(p.w.data(), reused).ok());
  QuantizedTensor rtn = AllocateQuantized(reused.layout);
  ASSERT_TRUE(Quantize(p.w.data(), rtn).ok());
  EXPECT_EQ(reused.group_index, rtn.group_index);
  for (int64_t c = 0; c < p.cols; ++c) {
    ASSERT_EQ(reused.group_index[c], c / 32);
  }
  std::vector<float> a(p.w.size()), b(p.w.size());
  Dequantize(reused, a.data());
  Dequantize(rtn, b.data());
  EXPECT_EQ(a, b);
}

TEST(GptqTest, LazyBatchSizeDoesNotChangeTheAlgorithm) {
  const Problem p = MakeProblem(16, 128, 512, 5);
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  for (const char* scheme : {"int4_asym_g32", "int3_sym_channel",
                             "int4_sym_g64"}) {
    SCOPED_TRACE(scheme);
    const Layout layout = MakeIntLayout(scheme, p.rows, p.cols);
    GptqOptions options;
    options.block_size = 1;
    absl::StatusOr<GptqResult> one = GptqQuantize(p.w.data(), layout, gram,
                                                  options);
    ASSERT_TRUE(one.ok());
    const std::vector<uint8_t> reference = Fields(one->quantized);
    for (int64_t block : {7, 48, 128, 1000}) {
      SCOPED_TRACE(testing::Message() << "block_size " << block);
      options.block_size = block;
      absl::StatusOr<GptqResult> r = GptqQuantize(p.w.data(), layout, gram,
                                                  options);
      ASSERT_TRUE(r.ok());
      const std::vector<uint8_t> fields = Fields(r->quantized);
      int64_t same = 0;
      for (size_t i = 0; i < fields.size(); ++i) same += fields[i] == reference[i];
      // Only float rounding of the update order may flip a code.
      EXPECT_GE(same, static_cast<int64_t>(fields.size()) * 995 / 1000);
      EXPECT_NEAR(r->output_error, one->output_error,
                  0.01 * one->output_error);
    }
  }
}

TEST(GptqTest, DeadColumnsAreZeroed) {
  Problem p = MakeProblem(8, 64, 256, 6);
  for (int64_t dead : {3, 40}) {
    for (int64_t k = 0; k < p.cols; ++k) {
      p.g[dead * p.cols + k] = 0.0;
      p.g[k * p.cols + dead] = 0.0;
    }
  }
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  for (bool act_order : {false, true}) {
    SCOPED_TRACE(testing::Message() << "act_order " << act_order);
    GptqOptions options;
    options.act_order = act_order;
    absl::StatusOr<GptqResult> r = GptqQuantize(
        p.w.data(), MakeIntLayout("int4_asym_g16", p.rows, p.cols), gram,
        options);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->dead_columns, 2);
    std::vector<float> w_hat(p.w.size());
    Dequantize(r->quantized, w_hat.data());
    for (int64_t row = 0; row < p.rows; ++row) {
      EXPECT_EQ(w_hat[row * p.cols + 3], 0.0f);
      EXPECT_EQ(w_hat[row * p.cols + 40], 0.0f);
    }
    EXPECT_LT(r->output_error, r->rtn_output_error);
  }
}

TEST(GptqTest, HeavyDampingFallsBackToRoundToNearest) {
  // H + lambda*I with a huge lambda: Hinv is nearly diagonal, so no error is
  // fed forward and every code is the round-to-nearest one.
  const Problem p = MakeProblem(16, 64, 256, 8);
  const GramView gram = GramView::F64(p.g, p.cols, p.tokens);
  const Layout layout = MakeIntLayout("int4_sym_channel", p.rows, p.cols);
  GptqOptions options;
  options.damp_percent = 1e7;
  absl::StatusOr<GptqResult> r = GptqQuantize(p.w.data(), layout, gram,
                                              options);
  ASSERT_TRUE(r.ok()) << r.status();
  QuantizedTensor rtn = AllocateQuantized(layout);
  ASSERT_TRUE(Quantize(p.w.data(), rtn).ok());
  EXPECT_EQ(r->quantized.codes, rtn.codes);
  EXPECT_EQ(r->output_error, r->rtn_output_error);
  // The default damping does change codes.
  absl::StatusOr<GptqResult> d = GptqQuantize(p.w.data(), layout, gram, {});
  ASSERT_TRUE(d.ok());
  EXPECT_NE(d->quantized.codes, rtn.codes);
}

TEST(GptqTest, IndefiniteUndampedHessianIsFailedPrecondition) {
  const std::vector<double> g = {1, 2, 2, 1};
  const std::vector<float> w = {0.5f, -0.25f};
  GptqOptions options;
  options.damp_percent = 0.0;
  absl::StatusOr<GptqResult> r = GptqQuantize(
      w.data(), MakeIntLayout("int4", 1, 2), GramView::F64(g, 2, 4), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(GptqTest, BadInputIsInvalidArgumentNamingTheProblem) {
  const Problem p = MakeProblem(4, 32, 64, 9);
  const Layout layout = MakeIntLayout("int4_g16", p.rows, p.cols);
  const GramView good = GramView::F64(p.g, p.cols, p.tokens);
  struct Bad {
    const char* what;
    std::function<absl::StatusOr<GptqResult>()> run;
    const char* message;
  };
  std::vector<double> g_nan = p.g;
  g_nan[5 * 32 + 7] = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> g_neg = p.g;
  g_neg[2 * 33] = -1.0;
  std::vector<float> w_inf = p.w;
  w_inf[10] = std::numeric_limits<float>::infinity();
  const std::vector<double> g_small(31 * 31, 1.0);
  GptqOptions negative_damp;
  negative_damp.damp_percent = -0.1;
  GptqOptions zero_block;
  zero_block.block_size = 0;
  const Bad cases[] = {
      {"G wrong size",
       [&] { return GptqQuantize(p.w.data(), layout,
                                 GramView::F64(g_small, 31, 64), {}); },
       "input features"},
      {"G size not features^2",
       [&] { return GptqQuantize(p.w.data(), layout,
                                 GramView::F64(g_small, 32, 64), {}); },
       "features^2"},
      {"G NaN",
       [&] { return GptqQuantize(p.w.data(), layout,
                                 GramView::F64(g_nan, 32, 64), {}); },
       "row 5, column 7"},
      {"G negative diagonal",
       [&] { return GptqQuantize(p.w.data(), layout,
                                 GramView::F64(g_neg, 32, 64), {}); },
       "negative diagonal"},
      {"no tokens",
       [&] { return GptqQuantize(p.w.data(), layout,
                                 GramView::F64(p.g, 32, 0), {}); },
       "token count"},
      {"W infinite",
       [&] { return GptqQuantize(w_inf.data(), layout, good, {}); },
       "weight has a non-finite value inf at index 10"},
      {"negative damping",
       [&] { return GptqQuantize(p.w.data(), layout, good, negative_damp); },
       "damp_percent"},
      {"block size 0",
       [&] { return GptqQuantize(p.w.data(), layout, good, zero_block); },
       "block_size"},
      {"block format",
       [&] {
         return GptqQuantize(p.w.data(), *MakeLayout(*ParseScheme("q4_0"),
                                                     {p.rows, p.cols}),
                             good, {});
       },
       "int2..int8"},
  };
  for (const Bad& c : cases) {
    SCOPED_TRACE(c.what);
    absl::StatusOr<GptqResult> r = c.run();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status().message(), c.message)) << r.status();
  }
}

}  // namespace
}  // namespace quantd

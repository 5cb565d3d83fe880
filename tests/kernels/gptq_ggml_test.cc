#include "kernels/gptq_ggml.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/ggml_formats.h"
#include "kernels/gptq.h"

namespace quantd {
namespace {

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

struct Problem {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t tokens = 0;
  std::vector<float> w;
  std::vector<double> g;
  GramView gram() const { return GramView::F64(g, cols, tokens); }
};

// correlated: inputs are a random mixing of 8 latent factors plus noise,
// every 17th channel 20x larger (outliers); else i.i.d. N(0, 1) inputs.
// Weights N(0, 0.02^2) with every 97th entry 8x larger.
Problem MakeProblem(int64_t rows, int64_t cols, int64_t tokens, bool correlated,
                    uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Problem p;
  p.rows = rows;
  p.cols = cols;
  p.tokens = tokens;
  const int64_t latent = 8;
  std::vector<float> mix(static_cast<size_t>(latent * cols));
  for (float& v : mix) v = normal(rng);
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (int64_t t = 0; t < tokens; ++t) {
    float z[latent];
    for (float& v : z) v = normal(rng);
    for (int64_t c = 0; c < cols; ++c) {
      float s;
      if (correlated) {
        s = 0.3f * normal(rng);
        for (int64_t k = 0; k < latent; ++k) s += z[k] * mix[k * cols + c];
        if (c % 17 == 0) s *= 20.0f;
      } else {
        s = normal(rng);
      }
      x[t * cols + c] = s;
    }
  }
  p.g.assign(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * cols;
    for (int64_t i = 0; i < cols; ++i) {
      const double xi = xt[i];
      double* gi = p.g.data() + i * cols;
      for (int64_t j = 0; j < cols; ++j) gi[j] += xi * xt[j];
    }
  }
  p.w.resize(static_cast<size_t>(rows * cols));
  for (float& v : p.w) v = 0.02f * normal(rng);
  for (size_t i = 0; i < p.w.size(); i += 97) p.w[i] *= 8.0f;
  return p;
}

// Byte ranges [begin, end) of each block that hold scales / minimums (from
// ggml's block structs), i.e. everything but the code bits.
std::vector<std::pair<int, int>> ScaleBytes(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ5_0:
    case GgmlType::kQ8_0:
    case GgmlType::kIq4Nl:
      return {{0, 2}};
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
      return {{0, 4}};
    case GgmlType::kQ2_K:
      return {{0, 16}, {80, 84}};
    case GgmlType::kQ3_K:
      return {{96, 110}};
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
      return {{0, 16}};
    case GgmlType::kQ6_K:
      return {{192, 210}};
    case GgmlType::kIq4Xs:
      return {{0, 8}};
    case GgmlType::kMxfp4:
      return {{0, 1}};
  }
  return {};
}

std::vector<float> Decode(const GgmlFormatTraits& format,
                          const std::vector<uint8_t>& bytes, int64_t rows,
                          int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  const absl::Status s =
      GgmlDequantize(format, bytes.data(), rows, cols, out.data());
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

// The output-space squared error tr(dW G dW^T), in double.
double OutputSquaredError(const Problem& p, const std::vector<float>& w_hat) {
  double total = 0.0;
  std::vector<double> d(static_cast<size_t>(p.cols));
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t c = 0; c < p.cols; ++c) {
      d[c] = static_cast<double>(p.w[r * p.cols + c]) - w_hat[r * p.cols + c];
    }
    for (int64_t i = 0; i < p.cols; ++i) {
      double s = 0.0;
      for (int64_t j = 0; j < p.cols; ++j) s += p.g[i * p.cols + j] * d[j];
      total += d[i] * s;
    }
  }
  return total;
}

GptqGgmlResult RunGptq(const GgmlFormatTraits& format, const Problem& p,
                   GptqGgmlOptions options) {
  absl::StatusOr<GptqGgmlResult> r =
      GptqGgmlQuantize(format, p.w.data(), p.rows, p.cols, p.gram(), options);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : GptqGgmlResult{};
}

class GptqGgmlTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    correlated_ = new Problem(MakeProblem(24, 512, 768, true, 7));
    random_ = new Problem(MakeProblem(24, 512, 768, false, 11));
  }
  static void TearDownTestSuite() {
    delete correlated_;
    delete random_;
  }
  static Problem* correlated_;
  static Problem* random_;
};
Problem* GptqGgmlTest::correlated_ = nullptr;
Problem* GptqGgmlTest::random_ = nullptr;

TEST_F(GptqGgmlTest, DecodesBitForBitToTheValuesTheLoopUsedWithStaticScales) {
  for (const GgmlFormatTraits& format : GgmlFormatTable()) {
    for (int variant = 0; variant < 3; ++variant) {
      const bool act_order = variant == 1;
      const Problem& p = variant == 2 ? *random_ : *correlated_;
      SCOPED_TRACE(testing::Message()
                   << format.name << " act_order " << act_order
                   << (variant == 2 ? " random (seed 11)"
                                    : " correlated (seed 7)"));
      GptqGgmlOptions options;
      options.act_order = act_order;
      options.return_w_hat = true;
      const GptqGgmlResult r = RunGptq(format, p, options);
      const int64_t row_bytes = *GgmlRowBytes(format, p.cols);
      ASSERT_EQ(r.bytes.size(), static_cast<size_t>(p.rows * row_bytes));
      ASSERT_EQ(r.w_hat.size(), p.w.size());
      const std::vector<float> decoded = Decode(format, r.bytes, p.rows, p.cols);
      ASSERT_EQ(std::memcmp(decoded.data(), r.w_hat.data(),
                            decoded.size() * sizeof(float)),
                0);
      for (float v : decoded) ASSERT_TRUE(std::isfinite(v));

      // The static pass is ggml's quantizer with diag(G) / tokens.
      std::vector<float> importance(static_cast<size_t>(p.cols));
      for (int64_t c = 0; c < p.cols; ++c) {
        importance[c] = static_cast<float>(p.g[c * p.cols + c] /
                                           static_cast<double>(p.tokens));
      }
      std::vector<uint8_t> rtn(r.bytes.size());
      ASSERT_TRUE(GgmlQuantize(format, p.w.data(), p.rows, p.cols,
                               importance.data(), rtn.data())
                      .ok());
      ASSERT_EQ(rtn, r.rtn_bytes);
      // Scale bytes unchanged; some code bytes changed.
      const int64_t blocks = static_cast<int64_t>(r.bytes.size()) /
                             format.block_bytes;
      for (int64_t b = 0; b < blocks; ++b) {
        for (auto [begin, end] : ScaleBytes(format.type)) {
          for (int k = begin; k < end; ++k) {
            ASSERT_EQ(r.bytes[b * format.block_bytes + k],
                      rtn[b * format.block_bytes + k])
                << "block " << b << " byte " << k;
          }
        }
      }
      EXPECT_NE(r.bytes, rtn);
    }
  }
}

TEST_F(GptqGgmlTest, BelowRoundToNearestForEveryFormat) {
  for (const GgmlFormatTraits& format : GgmlFormatTable()) {
    for (bool correlated : {true, false}) {
      SCOPED_TRACE(testing::Message()
                   << format.name << (correlated ? " correlated (seed 7)"
                                                 : " random (seed 11)"));
      const Problem& p = correlated ? *correlated_ : *random_;
      const GptqGgmlResult r = RunGptq(format, p, {});
      // Recompute both errors here from the decoded bytes, in double.
      const double gptq_err =
          OutputSquaredError(p, Decode(format, r.bytes, p.rows, p.cols));
      const double rtn_err =
          OutputSquaredError(p, Decode(format, r.rtn_bytes, p.rows, p.cols));
      const double ratio = std::sqrt(gptq_err / rtn_err);
      EXPECT_NEAR(ratio, r.output_error / r.rtn_output_error, 1e-3);
      std::printf("%-7s %-10s output error GPTQ %.5f RTN %.5f (ratio %.3f)\n",
                  format.name, correlated ? "correlated" : "random",
                  r.output_error, r.rtn_output_error, ratio);
      // Clearly below on correlated inputs, below on i.i.d. ones (where
      // GPTQ has little correlation to exploit).
      EXPECT_LT(ratio, correlated ? 0.8 : 0.97);
    }
  }
}

TEST_F(GptqGgmlTest, ActOrderQuantizesInAnotherOrderButWritesOriginalOrder) {
  const GgmlFormatTraits& format = *FindGgmlFormat("Q4_K");
  const Problem& p = *correlated_;
  GptqGgmlOptions options;
  options.act_order = true;
  const GptqGgmlResult r = RunGptq(format, p, options);
  ASSERT_EQ(r.perm.size(), static_cast<size_t>(p.cols));
  // Outlier channels (largest diag(G)) first.
  EXPECT_EQ(r.perm[0] % 17, 0);
  const GptqGgmlResult plain = RunGptq(format, p, {});
  EXPECT_TRUE(plain.perm.empty());
  EXPECT_NE(r.bytes, plain.bytes);
  EXPECT_LT(r.output_error, r.rtn_output_error * 0.8);
}

// With a diagonal G there is no error feedback (H^-1's factor is diagonal),
// so GPTQ is the nearest value of each block's fixed grid, whatever the
// order: never farther from w than ggml's own rounding, and act_order
// changes nothing, which checks that the codes land in the original order.
TEST_F(GptqGgmlTest, DiagonalHessianIsNearestGridRoundingInAnyOrder) {
  const Problem& base = *random_;
  Problem p = base;
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> uniform(0.5, 4.0);
  for (int64_t i = 0; i < p.cols; ++i) {
    for (int64_t j = 0; j < p.cols; ++j) {
      p.g[i * p.cols + j] = i == j ? uniform(rng) * static_cast<double>(p.tokens) : 0.0;
    }
  }
  for (const GgmlFormatTraits& format : GgmlFormatTable()) {
    SCOPED_TRACE(testing::Message() << format.name << " (seed 5)");
    GptqGgmlOptions options;
    options.return_w_hat = true;
    const GptqGgmlResult plain = RunGptq(format, p, options);
    options.act_order = true;
    const GptqGgmlResult ordered = RunGptq(format, p, options);
    ASSERT_FALSE(ordered.perm.empty());
    EXPECT_EQ(plain.bytes, ordered.bytes);
    const std::vector<float> rtn = Decode(format, plain.rtn_bytes, p.rows,
                                          p.cols);
    for (size_t i = 0; i < p.w.size(); ++i) {
      ASSERT_LE(std::fabs(p.w[i] - plain.w_hat[i]),
                std::fabs(p.w[i] - rtn[i]))
          << "element " << i;
    }
  }
}

TEST_F(GptqGgmlTest, DeterministicAndLazyBatchesDoNotChangeTheAlgorithm) {
  const Problem& p = *correlated_;
  for (const char* name : {"Q4_0", "Q6_K", "IQ4_XS"}) {
    SCOPED_TRACE(name);
    const GgmlFormatTraits& format = *FindGgmlFormat(name);
    const GptqGgmlResult a = RunGptq(format, p, {});
    const GptqGgmlResult b = RunGptq(format, p, {});
    EXPECT_EQ(a.bytes, b.bytes);
    EXPECT_EQ(a.loss, b.loss);
    GptqGgmlOptions options;
    options.block_size = 1;
    const GptqGgmlResult c = RunGptq(format, p, options);
    // Batching only reorders float sums: a few codes may flip, the error
    // stays the same to within a small fraction.
    EXPECT_NEAR(c.output_error, a.output_error, 0.02 * a.output_error);
  }
}

// Zero rows and zero blocks have a zero scale: their elements take the
// code of level 0 (or nearest it), and the bytes still decode exactly.
TEST_F(GptqGgmlTest, ZeroRowsAndBlocksDecodeExactly) {
  Problem p = *correlated_;
  std::fill(p.w.begin(), p.w.begin() + p.cols, 0.0f);              // row 0
  std::fill(p.w.begin() + p.cols, p.w.begin() + p.cols + 256, 0.0f);  // row 1
  for (const GgmlFormatTraits& format : GgmlFormatTable()) {
    SCOPED_TRACE(format.name);
    GptqGgmlOptions options;
    options.return_w_hat = true;
    const GptqGgmlResult r = RunGptq(format, p, options);
    const std::vector<float> decoded = Decode(format, r.bytes, p.rows, p.cols);
    ASSERT_EQ(std::memcmp(decoded.data(), r.w_hat.data(),
                          decoded.size() * sizeof(float)),
              0);
    for (int64_t c = 0; c < p.cols; ++c) ASSERT_EQ(decoded[c], 0.0f) << c;
    EXPECT_LT(r.output_error, r.rtn_output_error);
  }
}

TEST_F(GptqGgmlTest, DeadColumnsAreCountedAndDecodeFinite) {
  Problem p = *correlated_;
  for (int64_t c : {3, 100, 300}) {
    for (int64_t j = 0; j < p.cols; ++j) {
      p.g[c * p.cols + j] = 0.0;
      p.g[j * p.cols + c] = 0.0;
    }
  }
  for (const GgmlFormatTraits& format : GgmlFormatTable()) {
    SCOPED_TRACE(format.name);
    const GptqGgmlResult r = RunGptq(format, p, {});
    EXPECT_EQ(r.dead_columns, 3);
    for (float v : Decode(format, r.bytes, p.rows, p.cols)) {
      ASSERT_TRUE(std::isfinite(v));
    }
    EXPECT_LE(r.output_error, r.rtn_output_error);
  }
}

TEST_F(GptqGgmlTest, BadInputIsInvalidArgumentNamingTheProblem) {
  const Problem& p = *correlated_;
  const GgmlFormatTraits& q4_k = *FindGgmlFormat("Q4_K");
  absl::StatusOr<GptqGgmlResult> r =
      GptqGgmlQuantize(q4_k, p.w.data(), p.rows, 96,
                       GramView::F64(p.g, 96, p.tokens), {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), "256")) << r.status();

  std::vector<float> w = p.w;
  w[1234] = std::nanf("");
  r = GptqGgmlQuantize(q4_k, w.data(), p.rows, p.cols, p.gram(), {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), "1234")) << r.status();

  GptqGgmlOptions options;
  options.damp_percent = -1.0;
  r = GptqGgmlQuantize(q4_k, p.w.data(), p.rows, p.cols, p.gram(), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), "damp_percent")) << r.status();

  r = GptqGgmlQuantize(q4_k, p.w.data(), p.rows, p.cols,
                       GramView::F64(p.g, p.cols, 0), {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);

  // Q8_0's f16 scale overflows for |w| ~ 1e7: no finite grid.
  w = p.w;
  w[40] = 1.0e7f;
  r = GptqGgmlQuantize(*FindGgmlFormat("Q8_0"), w.data(), p.rows, p.cols,
                       p.gram(), {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), "block 1 of row 0"))
      << r.status();
}

}  // namespace
}  // namespace quantd

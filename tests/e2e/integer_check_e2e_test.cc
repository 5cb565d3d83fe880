// Data-aware results end to end through the real server on loopback and the
// C++ client, beyond the methods_e2e ones:
//   - the W8A8 integer-only check on a set's held-back rows
//     (CalibrationHeader.holdout_rows, TensorResult.w8a8): the held-back rows
//     stay out of the statistics, the check's figures equal the local
//     kernel's and a direct integer computation here, SmoothQuant's factors
//     are applied, and it is absent where it does not apply;
//   - per-channel static activation ranges (ActivationRangeOptions
//     .per_channel) equal to the rule computed here from X;
//   - GPTQ onto ggml block grids (Q4_0, Q4_K, IQ4_NL +gptq): the bytes equal
//     the local kernel's on the same G and beat ggml's own quantizer on the
//     output error;
//   - the refusals, each naming the set or the tensor.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/quantd_client.h"
#include "gtest/gtest.h"
#include "kernels/calibration_stats.h"
#include "kernels/ggml_formats.h"
#include "kernels/gptq_ggml.h"
#include "kernels/quantize.h"
#include "kernels/range_estimators.h"
#include "kernels/w8a8.h"
#include "server/calibration_set.h"
#include "tests/e2e/client_job.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

using testing::AsBytes;
using testing::ChannelTo;
using testing::Floats;
using testing::RandomWeights;
using testing::StartTestServer;

constexpr uint32_t kSeed = 20261123;
constexpr int64_t kHoldout = 96, kTokens = 640, kIn = 256, kOut = 64;

// Correlated features (16 latent factors), every 29th an outlier channel.
std::vector<float> Activations(int64_t tokens, uint32_t seed) {
  return testing::CorrelatedActivations(tokens, kIn, 16, 29, 10.0f, seed);
}

class IntegerCheckE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.workers = 2;
    server_ = StartTestServer(options);
    ASSERT_NE(server_, nullptr);
    channel_ = ChannelTo(*server_);
    x_ = Activations(kTokens, kSeed);
    // What the server folds: every row after the held-back ones.
    auto acc = CalibrationAccumulator::Create("local", kIn);
    ASSERT_TRUE(acc.ok());
    ASSERT_TRUE(
        acc->Add(x_.data() + kHoldout * kIn, kTokens - kHoldout, kIn).ok());
    gram_ = *acc->Gram();
    stats_ = *acc->Stats();
  }

  absl::StatusOr<std::map<std::string, TensorReply>> Run(
      const JobConfig& config, const std::vector<TensorRequest>& tensors) {
    return testing::RunClientJob(channel_, config, tensors);
  }

  // The set in chunks of 100 rows (the held-back rows span two chunks).
  JobConfig Job(int64_t holdout, bool channel_histograms = false) const {
    JobConfig config;
    config.output = v1::OUTPUT_KIND_BOTH;
    config.chunk_bytes = 100 * kIn * 4;
    CalibrationSetRequest set;
    set.name = "x";
    set.kind = v1::CALIBRATION_KIND_ACTIVATIONS;
    set.dtype = DType::kF32;
    set.features = kIn;
    set.data = AsBytes(x_.data(), x_.size() * 4);
    set.channel_histograms = channel_histograms;
    set.holdout_rows = holdout;
    config.calibration_sets.push_back(set);
    return config;
  }

  TensorRequest Tensor(const std::string& name, const std::string& scheme,
                       const std::vector<float>& w) const {
    TensorRequest t;
    t.name = name;
    t.scheme = *ParseScheme(scheme);
    t.shape = {kOut, kIn};
    t.data = AsBytes(w.data(), w.size() * 4);
    t.calibration = "x";
    return t;
  }

  std::unique_ptr<QuantdServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::vector<float> x_;
  std::vector<double> gram_;
  ChannelStats stats_;
};

TEST_F(IntegerCheckE2eTest, W8A8CheckOnHeldBackRowsMatchesTheIntegerPath) {
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 1);
  auto replies = Run(Job(kHoldout),
                     {Tensor("w8", "int8", w), Tensor("w4", "int4_g128", w)});
  ASSERT_TRUE(replies.ok()) << replies.status();
  const TensorReply& r = replies->at("w8");
  // The statistics exclude the held-back rows.
  ASSERT_TRUE(r.output_metrics.has_value());
  EXPECT_EQ(r.output_metrics->tokens(), static_cast<uint64_t>(kTokens - kHoldout));
  ASSERT_TRUE(r.activation_range.has_value());
  float amax = 0.0f;
  for (int64_t j = 0; j < kIn; ++j) {
    amax = std::max({amax, std::abs(stats_.min[j]), std::abs(stats_.max[j])});
  }
  EXPECT_EQ(r.activation_range->scale(), Int8Range(-amax, amax, true).scale);
  ASSERT_TRUE(r.w8a8.has_value());
  const v1::W8A8Check& c = *r.w8a8;
  EXPECT_EQ(c.calibration(), "x");
  EXPECT_EQ(c.rows(), static_cast<uint64_t>(kHoldout));
  EXPECT_EQ(c.activation_scale(), r.activation_range->scale());
  EXPECT_EQ(c.activation_zero_point(), 0);
  EXPECT_FALSE(c.gemm().empty());
  std::printf("W8A8 on %lld held-back rows: rel. error %.5f (%.2f dB), "
              "weights only %.5f, clipped %.5f, gemm %s\n",
              static_cast<long long>(kHoldout), c.relative_error(), c.sqnr_db(),
              c.weight_only_relative_error(), c.clipped_fraction(),
              c.gemm().c_str());

  // The local kernel on the same codes, range and rows gives the same figures.
  QuantizedTensor q = AllocateQuantized(*MakeLayout(*ParseScheme("int8"), {kOut, kIn}));
  ASSERT_TRUE(Quantize(w.data(), q).ok());
  ASSERT_EQ(r.part(Part::kCodes), q.codes);
  auto weights = W8A8Weights::From(q);
  ASSERT_TRUE(weights.ok()) << weights.status();
  W8A8Activations act;
  act.scale = c.activation_scale();
  auto local = W8A8Check(x_.data(), kHoldout, w.data(), kOut, kIn, *weights,
                         act, W8A8Options());
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_DOUBLE_EQ(c.relative_error(), local->w8a8.relative_error);
  EXPECT_DOUBLE_EQ(c.weight_only_relative_error(),
                   local->weight_only.relative_error);
  EXPECT_DOUBLE_EQ(c.clipped_fraction(), local->clipped_fraction);

  // And a direct integer computation here, in f64 against f64 X Wᵀ.
  double err = 0, sig = 0;
  int64_t clipped = 0;
  std::vector<int32_t> xq(kIn);
  for (int64_t t = 0; t < kHoldout; ++t) {
    for (int64_t i = 0; i < kIn; ++i) {
      const float v = std::nearbyint(x_[static_cast<size_t>(t * kIn + i)] / act.scale);
      const float s = std::clamp(v, -128.0f, 127.0f);
      clipped += s != v;
      xq[static_cast<size_t>(i)] = static_cast<int32_t>(s);
    }
    for (int64_t o = 0; o < kOut; ++o) {
      int64_t acc = 0;
      double y = 0;
      for (int64_t i = 0; i < kIn; ++i) {
        acc += int64_t{xq[static_cast<size_t>(i)]} *
               static_cast<int8_t>(q.codes[static_cast<size_t>(o * kIn + i)]);
        y += double{x_[static_cast<size_t>(t * kIn + i)]} *
             w[static_cast<size_t>(o * kIn + i)];
      }
      const double y_int = double{act.scale} * q.scales[static_cast<size_t>(o)] *
                           static_cast<double>(acc);
      err += (y_int - y) * (y_int - y);
      sig += y * y;
    }
  }
  EXPECT_NEAR(c.relative_error(), std::sqrt(err / sig), 1e-5);
  EXPECT_DOUBLE_EQ(c.clipped_fraction(),
                   static_cast<double>(clipped) / (kHoldout * kIn));
  // Integer activations cost something on top of the weights' error.
  EXPECT_GT(c.relative_error(), c.weight_only_relative_error());
  EXPECT_LT(c.relative_error(), 0.1);

  // Not an int8 scheme: no check.
  EXPECT_FALSE(replies->at("w4").w8a8.has_value());
}

TEST_F(IntegerCheckE2eTest, SmoothQuantChecksTheSmoothedInputs) {
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 2);
  auto replies = Run(Job(kHoldout), {Tensor("sq", "int8+smoothquant(alpha=0.5)", w),
                                     Tensor("rtn", "int8", w)});
  ASSERT_TRUE(replies.ok()) << replies.status();
  const TensorReply& sq = replies->at("sq");
  ASSERT_TRUE(sq.w8a8.has_value());
  const std::vector<float> s = Floats(sq.part(Part::kChannelScales));
  ASSERT_EQ(s.size(), static_cast<size_t>(kIn));
  // The range of x / s from the per-channel extremes.
  float lo = 0, hi = 0;
  for (int64_t j = 0; j < kIn; ++j) {
    lo = std::min(lo, stats_.min[j] / s[static_cast<size_t>(j)]);
    hi = std::max(hi, stats_.max[j] / s[static_cast<size_t>(j)]);
  }
  EXPECT_EQ(sq.w8a8->activation_scale(), Int8Range(lo, hi, true).scale);
  const TensorReply& rtn = replies->at("rtn");
  ASSERT_TRUE(rtn.w8a8.has_value());
  std::printf("W8A8 rel. error: rtn %.5f smoothquant %.5f\n",
              rtn.w8a8->relative_error(), sq.w8a8->relative_error());
  // Outlier channels: smoothing them into the weights helps the int8 path.
  EXPECT_LT(sq.w8a8->relative_error(), rtn.w8a8->relative_error());
}

TEST_F(IntegerCheckE2eTest, NoHeldBackRowsMeansNoCheckAndAllRowsCount) {
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 3);
  auto replies = Run(Job(0), {Tensor("w8", "int8", w)});
  ASSERT_TRUE(replies.ok()) << replies.status();
  const TensorReply& r = replies->at("w8");
  EXPECT_FALSE(r.w8a8.has_value());
  ASSERT_TRUE(r.output_metrics.has_value());
  EXPECT_EQ(r.output_metrics->tokens(), static_cast<uint64_t>(kTokens));
}

TEST_F(IntegerCheckE2eTest, PerChannelRangesFollowTheRule) {
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 4);
  TensorRequest minmax = Tensor("minmax", "int8", w);
  minmax.activation_range.emplace();
  minmax.activation_range->set_per_channel(true);
  TensorRequest asym = Tensor("asym", "int8", w);
  asym.activation_range.emplace();
  asym.activation_range->set_per_channel(true);
  asym.activation_range->set_asymmetric(true);
  TensorRequest pct = Tensor("pct", "int8", w);
  pct.activation_range.emplace();
  pct.activation_range->set_per_channel(true);
  pct.activation_range->set_method(v1::RANGE_METHOD_PERCENTILE);
  pct.activation_range->set_percentile(99.0);
  auto replies = Run(Job(kHoldout, /*channel_histograms=*/true),
                     {minmax, asym, pct, Tensor("plain", "int8", w)});
  ASSERT_TRUE(replies.ok()) << replies.status();
  for (const char* name : {"minmax", "asym"}) {
    SCOPED_TRACE(name);
    const bool symmetric = std::string(name) == "minmax";
    const TensorReply& r = replies->at(name);
    ASSERT_TRUE(r.activation_range.has_value());
    ASSERT_EQ(r.activation_range->channels_size(), kIn);
    for (int64_t j = 0; j < kIn; ++j) {
      const v1::ChannelRange& c = r.activation_range->channels(static_cast<int>(j));
      const ActivationRange want = Int8Range(stats_.min[j], stats_.max[j], symmetric);
      EXPECT_EQ(c.scale(), want.scale) << j;
      EXPECT_EQ(c.zero_point(), want.zero_point) << j;
      EXPECT_EQ(c.lo(), want.lo) << j;
      EXPECT_EQ(c.hi(), want.hi) << j;
    }
  }
  const TensorReply& p = replies->at("pct");
  ASSERT_EQ(p.activation_range->channels_size(), kIn);
  int narrower = 0;
  for (int64_t j = 0; j < kIn; ++j) {
    const v1::ChannelRange& c = p.activation_range->channels(static_cast<int>(j));
    const float amax = std::max(std::abs(stats_.min[j]), std::abs(stats_.max[j]));
    EXPECT_LE(c.hi(), amax) << j;
    EXPECT_GT(c.hi(), 0.0f) << j;
    narrower += c.hi() < amax;
  }
  EXPECT_GT(narrower, kIn / 2);  // the 99th percentile clips most channels
  EXPECT_EQ(replies->at("plain").activation_range->channels_size(), 0);
}

TEST_F(IntegerCheckE2eTest, PerChannelPercentileWithoutHistogramsIsRefused) {
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 5);
  TensorRequest t = Tensor("blk.0.q", "int8", w);
  t.activation_range.emplace();
  t.activation_range->set_per_channel(true);
  t.activation_range->set_method(v1::RANGE_METHOD_KL);
  auto replies = Run(Job(0), {t});
  ASSERT_FALSE(replies.ok());
  EXPECT_EQ(replies.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(replies.status().message().find("blk.0.q"), std::string::npos)
      << replies.status();
  EXPECT_NE(replies.status().message().find("channel_histograms"),
            std::string::npos) << replies.status();
}

TEST_F(IntegerCheckE2eTest, BadHoldoutsAreRefusedNamingTheSet) {
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 6);
  // Every row held back: nothing left for the statistics.
  auto all = Run(Job(kTokens), {Tensor("w", "int8", w)});
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(all.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(all.status().message().find("'x'"), std::string::npos) << all.status();
  EXPECT_NE(all.status().message().find("held back"), std::string::npos)
      << all.status();
  // Above the limit.
  auto big = Run(Job(kMaxHoldoutRows + 1), {Tensor("w", "int8", w)});
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("holdout_rows"), std::string::npos)
      << big.status();
  // On a GRAM set.
  JobConfig gram_job;
  CalibrationSetRequest g;
  g.name = "g";
  g.kind = v1::CALIBRATION_KIND_GRAM;
  g.features = kIn;
  g.tokens = kTokens;
  g.data = AsBytes(gram_.data(), gram_.size() * 8);
  g.holdout_rows = 8;
  gram_job.calibration_sets.push_back(g);
  TensorRequest t = Tensor("w", "int8", w);
  t.calibration = "g";
  auto gram = Run(gram_job, {t});
  ASSERT_FALSE(gram.ok());
  EXPECT_EQ(gram.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(gram.status().message().find("'g'"), std::string::npos) << gram.status();
}

TEST_F(IntegerCheckE2eTest, GptqOntoGgmlBlocksMatchesTheLocalKernel) {
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 7);
  std::vector<TensorRequest> tensors;
  const std::vector<std::string> formats = {"Q4_0", "Q4_K", "IQ4_NL", "Q3_K"};
  for (const std::string& f : formats) {
    tensors.push_back(Tensor(f, f, w));
    tensors.push_back(Tensor(f + "+gptq", f + "+gptq", w));
  }
  tensors.push_back(Tensor("Q4_K+gptq(act_order)", "Q4_K+gptq(act_order)", w));
  auto replies = Run(Job(kHoldout), tensors);
  ASSERT_TRUE(replies.ok()) << replies.status();
  const GramView gram = GramView::F64(gram_, kIn, kTokens - kHoldout);
  for (const std::string& f : formats) {
    SCOPED_TRACE(f);
    const TensorReply& rtn = replies->at(f);
    const TensorReply& gptq = replies->at(f + "+gptq");
    ASSERT_TRUE(rtn.output_metrics.has_value());
    ASSERT_TRUE(gptq.output_metrics.has_value());
    std::printf("%s: output rel. error ggml %.5f, ggml+gptq %.5f\n", f.c_str(),
                rtn.output_metrics->relative_error(),
                gptq.output_metrics->relative_error());
    EXPECT_LT(gptq.output_metrics->relative_error(),
              rtn.output_metrics->relative_error());
    EXPECT_EQ(gptq.layout.scheme().method(), v1::QUANT_METHOD_GPTQ);
    const GgmlFormatTraits* block = FindGgmlFormat(f);
    ASSERT_NE(block, nullptr);
    GptqGgmlOptions options;
    options.measure_output_error = false;
    auto local = GptqGgmlQuantize(*block, w.data(), kOut, kIn, gram, options);
    ASSERT_TRUE(local.ok()) << local.status();
    EXPECT_EQ(gptq.part(Part::kCodes), local->bytes);
    std::vector<float> w_hat(w.size());
    ASSERT_TRUE(GgmlDequantize(*block, local->bytes.data(), kOut, kIn,
                               w_hat.data()).ok());
    EXPECT_EQ(Floats(gptq.part(Part::kFakeQuant)), w_hat);
  }
  const TensorReply& ao = replies->at("Q4_K+gptq(act_order)");
  EXPECT_TRUE(ao.layout.scheme().gptq().act_order());
  EXPECT_EQ(ao.part(Part::kCodes).size(), replies->at("Q4_K").part(Part::kCodes).size());
}

TEST_F(IntegerCheckE2eTest, MethodsOtherThanGptqOnBlockFormatsAreRefused) {
  EXPECT_FALSE(ParseScheme("Q4_0+awq").ok());
  EXPECT_FALSE(ParseScheme("Q4_K+gptq(static_groups)").ok());
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 8);
  TensorRequest t = Tensor("blk.3.ffn", "Q4_0+gptq", w);
  t.calibration.clear();
  auto replies = Run(Job(0), {t});
  ASSERT_FALSE(replies.ok());
  EXPECT_EQ(replies.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(replies.status().message().find("blk.3.ffn"), std::string::npos)
      << replies.status();
}

}  // namespace
}  // namespace quantd

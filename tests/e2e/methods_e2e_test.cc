// GPTQ, AWQ and SmoothQuant (Scheme::method) end to end through the real
// server on loopback and the C++ client: on a correlated calibration set
// with outlier channels, GPTQ and AWQ have a lower output error than round
// to nearest on the same tensors at 4 and 3 bits; the bytes equal the local
// kernels' on the same G and statistics; AWQ and SmoothQuant return their
// per-input-channel scales (checked against their CRC by the client) and a
// fake-quant W_hat in the original space; a method without the set it
// needs is INVALID_ARGUMENT naming the tensor.
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
#include "kernels/awq.h"
#include "kernels/calibration_stats.h"
#include "kernels/gptq.h"
#include "kernels/quantize.h"
#include "kernels/smoothquant.h"
#include "tests/e2e/client_job.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

using testing::AsBytes;
using testing::ChannelTo;
using testing::Floats;
using testing::RandomWeights;
using testing::StartTestServer;

constexpr uint32_t kSeed = 20251123;
constexpr int64_t kTokens = 512, kIn = 256, kOut = 64;

// x = z M + noise with 32 latent factors (strongly correlated features),
// every 37th feature an outlier channel 12x larger.
std::vector<float> CorrelatedActivations(uint32_t seed) {
  return testing::CorrelatedActivations(kTokens, kIn, 32, 37, 12.0f, seed);
}

template <typename T>
std::vector<uint8_t> Bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

class MethodsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.workers = 2;
    server_ = StartTestServer(options);
    ASSERT_NE(server_, nullptr);
    channel_ = ChannelTo(*server_);
    x_ = CorrelatedActivations(kSeed);
    auto acc = CalibrationAccumulator::Create("local", kIn);
    ASSERT_TRUE(acc.ok());
    ASSERT_TRUE(acc->Add(x_.data(), kTokens, kIn).ok());
    gram_ = *acc->Gram();
    stats_ = *acc->Stats();
  }

  // Runs one job; the replies by name, or the first error.
  absl::StatusOr<std::map<std::string, TensorReply>> Run(
      const JobConfig& config, const std::vector<TensorRequest>& tensors) {
    return testing::RunClientJob(channel_, config, tensors);
  }

  // The set as ACTIVATIONS in one chunk, so the server folds exactly what
  // SetUp folded here.
  JobConfig ActivationsJob() const {
    JobConfig config;
    config.output = v1::OUTPUT_KIND_BOTH;
    config.chunk_bytes = 1 << 20;
    config.calibration_sets.push_back(
        {"x", v1::CALIBRATION_KIND_ACTIVATIONS, DType::kF32, kIn, 0,
         AsBytes(x_.data(), x_.size() * 4), false});
    return config;
  }

  GramView Gram() const { return GramView::F64(gram_, kIn, kTokens); }

  std::unique_ptr<QuantdServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::vector<float> x_;
  std::vector<double> gram_;
  ChannelStats stats_;
};

TEST_F(MethodsE2eTest, GptqAndAwqBeatRoundToNearestAndMatchTheLocalKernels) {
  std::vector<std::vector<float>> weights;
  for (uint32_t i = 0; i < 3; ++i) {
    weights.push_back(RandomWeights(kOut * kIn, kSeed + 1 + i));
  }
  const std::vector<std::string> bases = {"int4_g128", "int3_g128"};
  const std::vector<std::string> methods = {"", "+gptq", "+awq"};
  JobConfig config = ActivationsJob();
  std::vector<TensorRequest> tensors;
  for (const std::string& base : bases) {
    for (const std::string& method : methods) {
      for (size_t i = 0; i < weights.size(); ++i) {
        TensorRequest t;
        t.name = absl::StrCat("blk.", i, ".", base, method);
        t.scheme = *ParseScheme(base + method);
        t.shape = {kOut, kIn};
        t.data = AsBytes(weights[i].data(), weights[i].size() * 4);
        t.calibration = "x";
        tensors.push_back(std::move(t));
      }
    }
  }
  auto replies = Run(config, tensors);
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), tensors.size());

  std::vector<float> mean_abs(stats_.mean_abs.begin(), stats_.mean_abs.end());
  for (const std::string& base : bases) {
    for (size_t i = 0; i < weights.size(); ++i) {
      const std::string prefix = absl::StrCat("blk.", i, ".", base);
      SCOPED_TRACE(prefix);
      const TensorReply& rtn = replies->at(prefix);
      const TensorReply& gptq = replies->at(prefix + "+gptq");
      const TensorReply& awq = replies->at(prefix + "+awq");
      for (const TensorReply* r : {&rtn, &gptq, &awq}) {
        ASSERT_TRUE(r->output_metrics.has_value()) << r->name;
        EXPECT_GT(r->metrics.mse(), 0) << r->name;
      }
      const double e_rtn = rtn.output_metrics->relative_error();
      const double e_gptq = gptq.output_metrics->relative_error();
      const double e_awq = awq.output_metrics->relative_error();
      std::printf("%s: output relative error rtn %.5f gptq %.5f awq %.5f\n",
                  prefix.c_str(), e_rtn, e_gptq, e_awq);
      EXPECT_LT(e_gptq, e_rtn);
      EXPECT_LT(e_awq, e_rtn);
      EXPECT_TRUE(rtn.part(Part::kChannelScales).empty());
      EXPECT_TRUE(gptq.part(Part::kChannelScales).empty());
      EXPECT_EQ(gptq.layout.scheme().method(), v1::QUANT_METHOD_GPTQ);

      const Layout layout = *MakeLayout(*ParseScheme(base), {kOut, kIn});
      // GPTQ: the local kernel on the same G gives the same bytes.
      GptqOptions gptq_options;
      gptq_options.measure_output_error = false;
      absl::StatusOr<GptqResult> local =
          GptqQuantize(weights[i].data(), layout, Gram(), gptq_options);
      ASSERT_TRUE(local.ok()) << local.status();
      EXPECT_EQ(gptq.part(Part::kCodes), local->quantized.codes);
      EXPECT_EQ(gptq.part(Part::kScales), Bytes(local->quantized.scales));
      std::vector<float> w_hat(weights[i].size());
      Dequantize(local->quantized, w_hat.data());
      EXPECT_EQ(Floats(gptq.part(Part::kFakeQuant)), w_hat);
      EXPECT_NEAR(e_gptq,
                  *OutputRelativeError(weights[i].data(), w_hat.data(), kOut,
                                       kIn, Gram()),
                  1e-4 * e_gptq);

      // AWQ: same codes, scales and s as the local kernel on the set's
      // mean |x|; the fake quant is W_hat with s folded back.
      AwqOptions awq_options;
      awq_options.fake_quant = true;
      absl::StatusOr<AwqResult> local_awq =
          AwqQuantize(weights[i].data(), layout, mean_abs, Gram(), awq_options);
      ASSERT_TRUE(local_awq.ok()) << local_awq.status();
      EXPECT_EQ(awq.part(Part::kCodes), local_awq->quantized.codes);
      EXPECT_EQ(awq.part(Part::kScales), Bytes(local_awq->quantized.scales));
      EXPECT_EQ(awq.part(Part::kChannelScales), Bytes(local_awq->scales));
      EXPECT_EQ(Floats(awq.part(Part::kFakeQuant)), local_awq->fake_quant);
      EXPECT_NEAR(e_awq, local_awq->output_error, 1e-4 * e_awq);
    }
  }
}

// GPTQ's desc_act with g_idx: act_order with dynamic groups. The server
// returns codes in the original column order, the groups' scales and the
// group index, equal to the local kernel's; a client dequantizing through
// the index gets the server's fake quant.
TEST_F(MethodsE2eTest, GptqActOrderWithDynamicGroupsReturnsTheGroupIndex) {
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 21);
  const std::vector<std::string> schemes = {
      "int4_asym_g32+gptq", "int4_asym_g32+gptq(act_order,static_groups)",
      "int4_asym_g32+gptq(act_order)", "int3_g64+gptq(act_order)"};
  JobConfig config = ActivationsJob();
  std::vector<TensorRequest> tensors;
  for (const std::string& scheme : schemes) {
    TensorRequest t;
    t.name = "w." + scheme;
    t.scheme = *ParseScheme(scheme);
    t.shape = {kOut, kIn};
    t.data = AsBytes(w.data(), w.size() * 4);
    t.calibration = "x";
    tensors.push_back(std::move(t));
  }
  auto replies = Run(config, tensors);
  ASSERT_TRUE(replies.ok()) << replies.status();
  std::map<std::string, double> errors;
  for (const std::string& scheme : schemes) {
    SCOPED_TRACE(scheme);
    const TensorReply& r = replies->at("w." + scheme);
    const Scheme parsed = *ParseScheme(scheme);
    const bool indexed =
        parsed.method.act_order && !parsed.method.static_groups;
    const Layout layout = *MakeLayout(parsed, {kOut, kIn});
    EXPECT_EQ(layout.group_index, indexed);
    EXPECT_EQ(r.layout.has_group_index(), indexed);
    EXPECT_DOUBLE_EQ(r.metrics.bits_per_weight(), layout.BitsPerWeight());

    GptqOptions options;
    options.act_order = parsed.method.act_order;
    options.static_groups = parsed.method.static_groups;
    options.measure_output_error = false;
    absl::StatusOr<GptqResult> local =
        GptqQuantize(w.data(), layout, Gram(), options);
    ASSERT_TRUE(local.ok()) << local.status();
    EXPECT_EQ(r.part(Part::kCodes), local->quantized.codes);
    EXPECT_EQ(r.part(Part::kScales), Bytes(local->quantized.scales));
    EXPECT_EQ(r.part(Part::kZeroPoints), local->quantized.zero_points);
    EXPECT_EQ(r.part(Part::kGroupIndex), Bytes(local->quantized.group_index));
    if (!indexed) {
      EXPECT_TRUE(r.part(Part::kGroupIndex).empty());
      errors[scheme] = r.output_metrics->relative_error();
      continue;
    }
    // The index is the quantization order's groups: the j-th column of
    // perm is in group j / group_size.
    std::vector<int32_t> g_idx(kIn);
    ASSERT_EQ(r.part(Part::kGroupIndex).size(), g_idx.size() * 4);
    std::memcpy(g_idx.data(), r.part(Part::kGroupIndex).data(), r.part(Part::kGroupIndex).size());
    for (size_t j = 0; j < local->perm.size(); ++j) {
      ASSERT_EQ(g_idx[local->perm[j]],
                static_cast<int32_t>(j / layout.group_size));
    }
    // Rebuilt from the reply's bytes alone, it dequantizes to the server's
    // fake quant.
    QuantizedTensor q = AllocateQuantized(layout);
    q.codes = r.part(Part::kCodes);
    std::memcpy(q.scales.data(), r.part(Part::kScales).data(), r.part(Part::kScales).size());
    q.zero_points = r.part(Part::kZeroPoints);
    q.group_index = g_idx;
    ASSERT_TRUE(CheckGroupIndex(layout, q.group_index).ok());
    std::vector<float> w_hat(w.size());
    Dequantize(q, w_hat.data());
    EXPECT_EQ(Floats(r.part(Part::kFakeQuant)), w_hat);
    EXPECT_NEAR(r.output_metrics->relative_error(),
                *OutputRelativeError(w.data(), w_hat.data(), kOut, kIn, Gram()),
                1e-4 * r.output_metrics->relative_error());
    errors[scheme] = r.output_metrics->relative_error();
  }
  std::printf("int4_asym_g32 output error: gptq %.5f, act_order+static %.5f, "
              "act_order+g_idx %.5f\n",
              errors["int4_asym_g32+gptq"],
              errors["int4_asym_g32+gptq(act_order,static_groups)"],
              errors["int4_asym_g32+gptq(act_order)"]);
  // On correlated inputs with outlier channels, act-order's dynamic groups
  // (outlier columns grouped together) are no worse than plain GPTQ.
  EXPECT_LE(errors["int4_asym_g32+gptq(act_order)"],
            1.02 * errors["int4_asym_g32+gptq"]);
}

TEST_F(MethodsE2eTest, SmoothQuantReturnsItsScalesAndTheSmoothedCodes) {
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 9);
  JobConfig config = ActivationsJob();
  std::vector<TensorRequest> tensors(2);
  tensors[0].name = "fixed";
  tensors[0].scheme = *ParseScheme("int8+smoothquant(alpha=0.5)");
  tensors[1].name = "searched";
  tensors[1].scheme = *ParseScheme("int8+smoothquant");
  for (TensorRequest& t : tensors) {
    t.shape = {kOut, kIn};
    t.data = AsBytes(w.data(), w.size() * 4);
    t.calibration = "x";
  }
  auto replies = Run(config, tensors);
  ASSERT_TRUE(replies.ok()) << replies.status();
  std::vector<float> max_abs(static_cast<size_t>(kIn));
  for (size_t j = 0; j < max_abs.size(); ++j) {
    max_abs[j] = std::max(std::fabs(stats_.min[j]), std::fabs(stats_.max[j]));
  }
  const GramView gram = Gram();
  for (bool search : {false, true}) {
    const TensorReply& r = replies->at(search ? "searched" : "fixed");
    SCOPED_TRACE(r.name);
    SmoothQuantOptions options;
    options.search_alpha = search;
    absl::StatusOr<SmoothQuantResult> local =
        SmoothQuant(w.data(), kOut, kIn, max_abs, &gram, options);
    ASSERT_TRUE(local.ok()) << local.status();
    EXPECT_EQ(r.part(Part::kChannelScales), Bytes(local->scales));
    QuantizedTensor q = AllocateQuantized(*MakeLayout(*ParseScheme("int8"), {kOut, kIn}));
    ASSERT_TRUE(Quantize(local->smoothed_weight.data(), q).ok());
    EXPECT_EQ(r.part(Part::kCodes), q.codes);
    EXPECT_EQ(r.part(Part::kScales), Bytes(q.scales));
    std::vector<float> w_hat(w.size());
    Dequantize(q, w_hat.data());
    for (int64_t o = 0; o < kOut; ++o) {
      for (int64_t j = 0; j < kIn; ++j) {
        w_hat[static_cast<size_t>(o * kIn + j)] /= local->scales[static_cast<size_t>(j)];
      }
    }
    EXPECT_EQ(Floats(r.part(Part::kFakeQuant)), w_hat);
    ASSERT_TRUE(r.output_metrics.has_value());
    EXPECT_GT(r.output_metrics->relative_error(), 0);
  }
}

TEST_F(MethodsE2eTest, AMethodWithoutTheSetItNeedsIsInvalidArgument) {
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 11);
  struct Case {
    const char* name;
    const char* scheme;
    std::optional<v1::CalibrationKind> kind;  // nullopt: no set
    std::vector<std::string> message_parts;
  };
  const std::vector<Case> cases = {
      {"gptq without a set", "int4_g128+gptq", std::nullopt,
       {"tensor w.gptq_without_a_set", "gptq", "calibration set"}},
      {"awq with a GRAM set", "int4_g128+awq", v1::CALIBRATION_KIND_GRAM,
       {"tensor w.awq_with_a_GRAM_set", "awq", "'g'", "ACTIVATIONS"}},
      {"smoothquant with a GRAM set", "int8+smoothquant",
       v1::CALIBRATION_KIND_GRAM,
       {"tensor w.smoothquant_with_a_GRAM_set", "smoothquant", "'g'"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    JobConfig config;
    std::string name = absl::StrCat("w.", c.name);
    for (char& ch : name) {
      if (ch == ' ') ch = '_';
    }
    TensorRequest t;
    t.name = name;
    t.scheme = *ParseScheme(c.scheme);
    t.shape = {kOut, kIn};
    t.data = AsBytes(w.data(), w.size() * 4);
    if (c.kind.has_value()) {
      config.calibration_sets.push_back(
          {"g", *c.kind, DType::kF32, kIn, kTokens,
           AsBytes(gram_.data(), gram_.size() * 8), false});
      t.calibration = "g";
    }
    auto replies = Run(config, {t});
    ASSERT_FALSE(replies.ok());
    EXPECT_EQ(replies.status().code(), absl::StatusCode::kInvalidArgument)
        << replies.status();
    for (const std::string& part : c.message_parts) {
      EXPECT_NE(replies.status().message().find(part), std::string::npos)
          << replies.status();
    }
  }
  // The same GRAM set serves GPTQ.
  JobConfig config;
  config.calibration_sets.push_back(
      {"g", v1::CALIBRATION_KIND_GRAM, DType::kF32, kIn, kTokens,
       AsBytes(gram_.data(), gram_.size() * 8), false});
  TensorRequest t;
  t.name = "w.gptq_on_gram";
  t.scheme = *ParseScheme("int4_g128+gptq(act_order,static_groups)");
  t.shape = {kOut, kIn};
  t.data = AsBytes(w.data(), w.size() * 4);
  t.calibration = "g";
  auto replies = Run(config, {t});
  ASSERT_TRUE(replies.ok()) << replies.status();
  GptqOptions options;
  options.act_order = true;
  options.static_groups = true;
  absl::StatusOr<GptqResult> local = GptqQuantize(
      w.data(), *MakeLayout(*ParseScheme("int4_g128"), {kOut, kIn}), Gram(),
      options);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(replies->at(t.name).part(Part::kCodes), local->quantized.codes);
}

}  // namespace
}  // namespace quantd

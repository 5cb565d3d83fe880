// Calibration sets end to end through the real server on loopback and the
// C++ client: activations streamed in many chunks give output metrics equal
// to ‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖ computed here from the whole X, for int and ggml
// schemes alike, one set serving several tensors; GRAM and IMPORTANCE sets;
// every malformed set gets its status naming the set (or the tensor and the
// set) while the server keeps serving; the budget is back to zero after.
#include <algorithm>
#include <cmath>
#include <limits>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/crc32c.h"
#include "client/quantd_client.h"
#include "gtest/gtest.h"
#include "kernels/calibration_stats.h"
#include "kernels/convert.h"
#include "kernels/ggml_formats.h"
#include "kernels/output_error.h"
#include "kernels/range_estimators.h"
#include "tests/e2e/client_job.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

using testing::AppendTensor;
using testing::AsBytes;
using testing::ChannelTo;
using testing::Floats;
using testing::RandomWeights;
using testing::RunRawStream;
using testing::StartRequest;
using testing::StartTestServer;

constexpr uint32_t kSeed = 20250613;

// Activations with a few hot features, as LLM inputs have.
std::vector<float> RandomActivations(int64_t tokens, int64_t features,
                                     uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(tokens * features));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t f = 0; f < features; ++f) {
      x[static_cast<size_t>(t * features + f)] =
          dist(rng) * (f % 13 == 0 ? 8.0f : 1.0f);
    }
  }
  return x;
}

// ‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖ straight from X, in f64.
struct Direct {
  double relative_error;
  double sqnr_db;
};
Direct DirectOutputError(const std::vector<float>& x, int64_t tokens,
                         const std::vector<float>& w,
                         const std::vector<float>& w_hat, int64_t out,
                         int64_t in) {
  double err = 0, sig = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * in;
    for (int64_t o = 0; o < out; ++o) {
      double y = 0, y_hat = 0;
      for (int64_t i = 0; i < in; ++i) {
        y += double{xt[i]} * w[static_cast<size_t>(o * in + i)];
        y_hat += double{xt[i]} * w_hat[static_cast<size_t>(o * in + i)];
      }
      err += (y - y_hat) * (y - y_hat);
      sig += y * y;
    }
  }
  return {std::sqrt(err / sig), 10 * std::log10(sig / err)};
}

class CalibrationE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.workers = 2;
    server_ = StartTestServer(options);
    ASSERT_NE(server_, nullptr);
    channel_ = ChannelTo(*server_);
    stub_ = v1::Quantizer::NewStub(channel_);
  }

  // Runs one job; the replies by name, or the job's error.
  absl::StatusOr<std::map<std::string, TensorReply>> Run(
      const JobConfig& config, const std::vector<TensorRequest>& tensors) {
    return testing::RunClientJob(channel_, config, tensors);
  }

  void ExpectBudgetBackToZero() {
    for (int i = 0; i < 500 && server_->service().budget().reserved_bytes() != 0; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_EQ(server_->service().budget().reserved_bytes(), 0);
  }

  std::unique_ptr<QuantdServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Quantizer::Stub> stub_;
};

TEST_F(CalibrationE2eTest, ChunkedActivationsGiveTheOutputErrorOfTheWholeX) {
  constexpr int64_t kTokens = 1000, kIn = 64, kOut = 48;
  const std::vector<float> x = RandomActivations(kTokens, kIn, kSeed);
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 1);
  JobConfig config;
  config.scheme = *ParseScheme("int4_g32");
  config.output = v1::OUTPUT_KIND_BOTH;
  config.chunk_bytes = 4096;  // 16 rows a chunk: 63 chunks
  config.calibration_sets.push_back(
      {"blk.0.attn_in", v1::CALIBRATION_KIND_ACTIVATIONS, DType::kF32, kIn, 0,
       AsBytes(x.data(), x.size() * 4), false});
  std::vector<TensorRequest> tensors(3);
  tensors[0].name = "blk.0.attn_q";
  tensors[1].name = "blk.0.attn_k";
  tensors[1].scheme = *ParseScheme("int8");
  tensors[2].name = "blk.0.attn_v";
  tensors[2].scheme = *ParseScheme("Q4_0");
  for (TensorRequest& t : tensors) {
    t.shape = {kOut, kIn};
    t.data = AsBytes(w.data(), w.size() * 4);
    t.calibration = "blk.0.attn_in";
  }
  auto replies = Run(config, tensors);
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 3u);

  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  for (const TensorRequest& t : tensors) {
    SCOPED_TRACE(t.name);
    const TensorReply& r = replies->at(t.name);
    ASSERT_TRUE(r.output_metrics.has_value());
    EXPECT_EQ(r.output_metrics->calibration(), "blk.0.attn_in");
    EXPECT_EQ(r.output_metrics->tokens(), static_cast<uint64_t>(kTokens));
    const Direct d =
        DirectOutputError(x, kTokens, w, Floats(r.part(Part::kFakeQuant)), kOut, kIn);
    EXPECT_NEAR(r.output_metrics->relative_error(), d.relative_error,
                1e-4 * d.relative_error);
    EXPECT_NEAR(r.output_metrics->sqnr_db(), d.sqnr_db, 1e-3);
    EXPECT_GT(r.output_metrics->relative_error(), 0);
    // The static activation range (min-max, symmetric by default).
    ASSERT_TRUE(r.activation_range.has_value());
    EXPECT_EQ(r.activation_range->method(), v1::RANGE_METHOD_MINMAX);
    EXPECT_TRUE(r.activation_range->symmetric());
    EXPECT_EQ(r.activation_range->hi(), amax);
    EXPECT_FLOAT_EQ(r.activation_range->scale(), amax / 127);
  }
  // int8 is closer in output space than int4.
  EXPECT_LT(replies->at("blk.0.attn_k").output_metrics->relative_error(),
            replies->at("blk.0.attn_q").output_metrics->relative_error());
  // Q4_0 took the set's Σx²/tokens as its importance weights: the local
  // kernels with those weights give the same bytes.
  const TensorReply& v = replies->at("blk.0.attn_v");
  EXPECT_TRUE(v.importance_from_calibration);
  auto acc = CalibrationAccumulator::Create("local", kIn);
  ASSERT_TRUE(acc.ok());
  ASSERT_TRUE(acc->Add(x.data(), kTokens, kIn).ok());
  const std::vector<float> importance = *acc->Importance();
  const GgmlFormatTraits* q4_0 = FindGgmlFormat("Q4_0");
  ASSERT_NE(q4_0, nullptr);
  std::vector<uint8_t> local(static_cast<size_t>(kOut * kIn / 32 * q4_0->block_bytes));
  ASSERT_TRUE(GgmlQuantize(*q4_0, w.data(), kOut, kIn, importance.data(),
                           local.data()).ok());
  EXPECT_EQ(v.part(Part::kCodes), local);
  EXPECT_FALSE(replies->at("blk.0.attn_q").importance_from_calibration);
  ExpectBudgetBackToZero();
}

TEST_F(CalibrationE2eTest, RangeMethodsFromJobAndTensorAndHalfPrecisionSets) {
  constexpr int64_t kTokens = 400, kIn = 32;
  std::vector<float> x = RandomActivations(kTokens, kIn, kSeed + 2);
  std::vector<uint16_t> x16(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    x16[i] = FloatToBFloat16(x[i]);
    x[i] = BFloat16ToFloat(x16[i]);
  }
  const std::vector<float> w = RandomWeights(8 * kIn, kSeed + 3);
  JobConfig config;
  config.scheme = *ParseScheme("int8");
  config.activation_range.set_method(v1::RANGE_METHOD_KL);
  config.calibration_sets.push_back({"x", v1::CALIBRATION_KIND_ACTIVATIONS,
                                     DType::kBF16, kIn, 0,
                                     AsBytes(x16.data(), x16.size() * 2), false});
  std::vector<TensorRequest> tensors(2);
  for (int i = 0; i < 2; ++i) {
    tensors[i].name = absl::StrCat("w", i);
    tensors[i].shape = {8, kIn};
    tensors[i].data = AsBytes(w.data(), w.size() * 4);
    tensors[i].calibration = "x";
  }
  v1::ActivationRangeOptions percentile;
  percentile.set_method(v1::RANGE_METHOD_PERCENTILE);
  percentile.set_percentile(99);
  percentile.set_asymmetric(true);
  tensors[1].activation_range = percentile;
  auto replies = Run(config, tensors);
  ASSERT_TRUE(replies.ok()) << replies.status();
  auto acc = CalibrationAccumulator::Create("x", kIn);
  ASSERT_TRUE(acc.ok());
  ASSERT_TRUE(acc->Add(x.data(), kTokens, kIn).ok());
  RangeOptions kl{.method = RangeMethod::kKl};
  RangeOptions pct{.method = RangeMethod::kPercentile, .symmetric = false,
                   .percentile = 99};
  const ActivationRange want0 = *EstimateTensorRange(*acc, kl);
  const ActivationRange want1 = *EstimateTensorRange(*acc, pct);
  const v1::ActivationRange& got0 = *replies->at("w0").activation_range;
  const v1::ActivationRange& got1 = *replies->at("w1").activation_range;
  EXPECT_EQ(got0.method(), v1::RANGE_METHOD_KL);
  EXPECT_EQ(got0.hi(), want0.hi);
  EXPECT_EQ(got0.scale(), want0.scale);
  EXPECT_EQ(got1.method(), v1::RANGE_METHOD_PERCENTILE);
  EXPECT_FALSE(got1.symmetric());
  EXPECT_EQ(got1.lo(), want1.lo);
  EXPECT_EQ(got1.hi(), want1.hi);
  EXPECT_EQ(got1.zero_point(), want1.zero_point);
}

TEST_F(CalibrationE2eTest, GramAndImportanceSets) {
  constexpr int64_t kTokens = 300, kIn = 256, kOut = 16;
  const std::vector<float> x = RandomActivations(kTokens, kIn, kSeed + 4);
  const std::vector<float> w = RandomWeights(kOut * kIn, kSeed + 5);
  // G = XᵀX and Σx²/tokens computed here, in f64.
  std::vector<double> g(static_cast<size_t>(kIn * kIn), 0.0);
  std::vector<float> importance(static_cast<size_t>(kIn));
  for (int64_t i = 0; i < kIn; ++i) {
    for (int64_t j = 0; j < kIn; ++j) {
      double s = 0;
      for (int64_t t = 0; t < kTokens; ++t) {
        s += double{x[static_cast<size_t>(t * kIn + i)]} * x[static_cast<size_t>(t * kIn + j)];
      }
      g[static_cast<size_t>(i * kIn + j)] = s;
    }
    importance[static_cast<size_t>(i)] =
        static_cast<float>(g[static_cast<size_t>(i * kIn + i)] / kTokens);
  }
  JobConfig config;
  config.scheme = *ParseScheme("int4_g64");
  config.output = v1::OUTPUT_KIND_BOTH;
  config.chunk_bytes = 100000;  // G's 512 KiB in 6 chunks
  config.calibration_sets.push_back({"g", v1::CALIBRATION_KIND_GRAM, DType::kF32,
                                     kIn, kTokens, AsBytes(g.data(), g.size() * 8),
                                     false});
  config.calibration_sets.push_back({"imat", v1::CALIBRATION_KIND_IMPORTANCE,
                                     DType::kF32, kIn, kTokens,
                                     AsBytes(importance.data(), importance.size() * 4),
                                     false});
  std::vector<TensorRequest> tensors(3);
  tensors[0].name = "int4";
  tensors[0].calibration = "g";
  tensors[1].name = "q4_k.imat_set";
  tensors[1].scheme = *ParseScheme("Q4_K");
  tensors[1].calibration = "imat";
  tensors[2].name = "q4_k.header";
  tensors[2].scheme = *ParseScheme("Q4_K");
  tensors[2].importance = importance;
  for (TensorRequest& t : tensors) {
    t.shape = {kOut, kIn};
    t.data = AsBytes(w.data(), w.size() * 4);
  }
  auto replies = Run(config, tensors);
  ASSERT_TRUE(replies.ok()) << replies.status();
  const TensorReply& r = replies->at("int4");
  ASSERT_TRUE(r.output_metrics.has_value());
  EXPECT_EQ(r.output_metrics->tokens(), static_cast<uint64_t>(kTokens));
  const Direct d = DirectOutputError(x, kTokens, w, Floats(r.part(Part::kFakeQuant)), kOut, kIn);
  EXPECT_NEAR(r.output_metrics->relative_error(), d.relative_error,
              1e-4 * d.relative_error);
  EXPECT_FALSE(r.activation_range.has_value());  // G has no ranges
  // An imatrix set stands in for the header's weights: the same bytes.
  const TensorReply& from_set = replies->at("q4_k.imat_set");
  const TensorReply& from_header = replies->at("q4_k.header");
  EXPECT_TRUE(from_set.importance_from_calibration);
  EXPECT_FALSE(from_set.output_metrics.has_value());
  EXPECT_FALSE(from_header.importance_from_calibration);
  EXPECT_EQ(from_set.part(Part::kCodes), from_header.part(Part::kCodes));
  ExpectBudgetBackToZero();
}

struct BadSet {
  const char* name;
  std::vector<v1::QuantizeRequest> requests;
  grpc::StatusCode code;
  std::vector<std::string> message_parts;
};

v1::QuantizeRequest SetHeader(const std::string& name, uint64_t features,
                              v1::CalibrationKind kind = v1::CALIBRATION_KIND_ACTIVATIONS,
                              uint64_t tokens = 0) {
  v1::QuantizeRequest r;
  auto* h = r.mutable_calibration_header();
  h->set_name(name);
  h->set_kind(kind);
  if (kind == v1::CALIBRATION_KIND_ACTIVATIONS) h->set_dtype(v1::DTYPE_F32);
  h->set_features(features);
  h->set_tokens(tokens);
  return r;
}

void AppendSet(std::vector<v1::QuantizeRequest>& requests, const std::string& name,
               uint64_t features, const void* data, size_t bytes,
               size_t chunk_bytes,
               v1::CalibrationKind kind = v1::CALIBRATION_KIND_ACTIVATIONS,
               uint64_t tokens = 0) {
  requests.push_back(SetHeader(name, features, kind, tokens));
  for (size_t offset = 0; offset < bytes; offset += chunk_bytes) {
    v1::QuantizeRequest r;
    r.mutable_calibration_chunk()->set_offset(offset);
    r.mutable_calibration_chunk()->set_data(static_cast<const char*>(data) + offset,
                                            std::min(chunk_bytes, bytes - offset));
    requests.push_back(std::move(r));
  }
  requests.emplace_back();
  requests.back().mutable_calibration_end();
}

TEST_F(CalibrationE2eTest, EveryBadSetGetsItsStatusAndTheServerKeepsServing) {
  const std::vector<float> x = RandomActivations(20, 8, kSeed + 6);
  const std::vector<float> w = RandomWeights(4 * 8, kSeed + 7);
  std::vector<float> nan_x = x;
  nan_x[8 * 13 + 5] = std::numeric_limits<float>::quiet_NaN();
  std::vector<double> nan_g(64, 1.0);
  nan_g[9] = std::numeric_limits<double>::infinity();
  const std::vector<float> negative_importance(8, -1.0f);
  auto start = [] { return StartRequest("int8", true, v1::GRANULARITY_PER_CHANNEL); };
  auto tensor_using = [&](std::vector<v1::QuantizeRequest>& r, const std::string& name,
                          int64_t row, const std::string& set) {
    AppendTensor(r, name, {static_cast<int64_t>(w.size()) / row, row}, w.data(),
                 w.size() * 4);
    for (auto it = r.rbegin(); it != r.rend(); ++it) {
      if (it->has_header()) {
        it->mutable_header()->set_calibration(set);
        break;
      }
    }
  };
  std::vector<BadSet> cases;
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendSet(r, "x", 8, x.data(), x.size() * 4, 64);
    AppendSet(r, "x", 8, x.data(), x.size() * 4, 64);
    cases.push_back({"duplicate set", r, grpc::StatusCode::INVALID_ARGUMENT,
                     {"calibration set 'x'", "twice"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    tensor_using(r, "w.q", 8, "missing");
    cases.push_back({"unknown set", r, grpc::StatusCode::INVALID_ARGUMENT,
                     {"tensor w.q", "calibration set 'missing'"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendSet(r, "x", 8, x.data(), x.size() * 4, 64);
    tensor_using(r, "w.wide", 16, "x");
    cases.push_back({"features differ", r, grpc::StatusCode::INVALID_ARGUMENT,
                     {"tensor w.wide", "calibration set 'x'", "16", "8 features"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendSet(r, "x", 8, x.data(), x.size() * 4, 64);
    r[3].mutable_calibration_chunk()->set_crc32c(
        Crc32c(r[3].calibration_chunk().data().data(), 64) ^ 8);
    cases.push_back({"chunk crc", r, grpc::StatusCode::DATA_LOSS,
                     {"calibration set 'x'", "offset 64"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendSet(r, "x", 8, x.data(), x.size() * 4, 64);
    r.back().mutable_calibration_end()->set_crc32c(Crc32c(x.data(), x.size() * 4) + 1);
    cases.push_back({"whole-set crc", r, grpc::StatusCode::DATA_LOSS,
                     {"calibration set 'x'", "whole set"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendSet(r, "x", 8, nan_x.data(), nan_x.size() * 4, 64);
    cases.push_back({"NaN row", r, grpc::StatusCode::INVALID_ARGUMENT,
                     {"calibration set 'x'", "token 13", "column 5"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendSet(r, "x", 8, x.data(), 0, 64);
    cases.push_back({"no rows", r, grpc::StatusCode::INVALID_ARGUMENT,
                     {"calibration set 'x'", "no rows"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendSet(r, "x", 8, x.data(), x.size() * 4, 40);
    cases.push_back({"not whole rows", r, grpc::StatusCode::INVALID_ARGUMENT,
                     {"calibration set 'x'", "whole rows"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendSet(r, "g", 8, nan_g.data(), nan_g.size() * 8, 100, v1::CALIBRATION_KIND_GRAM, 5);
    tensor_using(r, "w.g", 8, "g");
    cases.push_back({"non-finite G (found by the worker)", r,
                     grpc::StatusCode::INVALID_ARGUMENT,
                     {"calibration set 'g'", "not finite"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendSet(r, "imat", 8, negative_importance.data(), 32, 32,
              v1::CALIBRATION_KIND_IMPORTANCE, 5);
    cases.push_back({"negative importance", r, grpc::StatusCode::INVALID_ARGUMENT,
                     {"calibration set 'imat'"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendSet(r, "x", 8, x.data(), x.size() * 4, 64);
    r.pop_back();  // no CalibrationEnd, then half-close
    cases.push_back({"truncated set", r, grpc::StatusCode::INVALID_ARGUMENT,
                     {"calibration set 'x'", "truncated"}});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start(), SetHeader("huge", 1 << 20)};
    cases.push_back({"over the memory budget", r, grpc::StatusCode::RESOURCE_EXHAUSTED,
                     {"calibration set 'huge'", "memory_budget_bytes="}});
  }
  for (const BadSet& c : cases) {
    SCOPED_TRACE(c.name);
    testing::StreamResult r = RunRawStream(*stub_, c.requests);
    EXPECT_EQ(r.status.error_code(), c.code) << r.status.error_message();
    for (const std::string& part : c.message_parts) {
      EXPECT_NE(r.status.error_message().find(part), std::string::npos)
          << r.status.error_message();
    }
    // A good request with a set on the same server succeeds.
    std::vector<v1::QuantizeRequest> good = {start()};
    AppendSet(good, "x", 8, x.data(), x.size() * 4, 64);
    tensor_using(good, "w.good", 8, "x");
    testing::StreamResult ok = RunRawStream(*stub_, good);
    ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
    ASSERT_FALSE(ok.responses.empty());
    EXPECT_TRUE(ok.responses.back().result().has_output_metrics());
  }
  ExpectBudgetBackToZero();
}

}  // namespace
}  // namespace quantd

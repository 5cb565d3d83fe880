// Chaos against the real server on loopback: clients that vanish mid-upload
// and mid-download and deadlines that expire mid-job. After each, the
// server holds no memory and no stream, and still serves a good request.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

using testing::AppendTensor;
using testing::ChannelTo;
using testing::RandomWeights;
using testing::RunRawStream;
using testing::StartRequest;

class ChaosTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.workers = 2;
    server_ = testing::StartTestServer(options);
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Quantizer::NewStub(ChannelTo(*server_));
  }

  // Waits (bounded) until the server holds nothing, then checks it serves.
  void ExpectCleanAndServing() {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline &&
           (server_->service().budget().reserved_bytes() != 0 ||
            server_->service().active_streams() != 0 ||
            server_->service().pool().busy_workers() != 0)) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    EXPECT_EQ(server_->service().budget().reserved_bytes(), 0);
    EXPECT_EQ(server_->service().active_streams(), 0);
    EXPECT_EQ(server_->service().pool().busy_workers(), 0);
    const std::vector<float> w = RandomWeights(16 * 16, 3);
    std::vector<v1::QuantizeRequest> reqs = {
        StartRequest("int8", true, v1::GRANULARITY_PER_CHANNEL)};
    AppendTensor(reqs, "after", {16, 16}, w.data(), w.size() * 4);
    EXPECT_TRUE(RunRawStream(*stub_, reqs).status.ok());
  }

  std::unique_ptr<QuantdServer> server_;
  std::unique_ptr<v1::Quantizer::Stub> stub_;
};

TEST_F(ChaosTest, ClientsThatCancelMidUpload) {
  const std::vector<float> w = RandomWeights(1024 * 1024, 1);  // 4 MiB
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int4", true, v1::GRANULARITY_PER_GROUP, 128)};
  AppendTensor(reqs, "big", {1024, 1024}, w.data(), w.size() * 4,
               v1::DTYPE_F32, 256 << 10);
  for (int round = 0; round < 10; ++round) {
    SCOPED_TRACE(round);
    grpc::ClientContext ctx;
    auto stream = stub_->Quantize(&ctx);
    // The start, the header and a varying part of the chunks.
    const size_t sent = 2 + static_cast<size_t>(round) % 8;
    for (size_t i = 0; i < sent; ++i) ASSERT_TRUE(stream->Write(reqs[i]));
    ctx.TryCancel();
    v1::QuantizeResponse response;
    while (stream->Read(&response)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  ExpectCleanAndServing();
}

TEST_F(ChaosTest, ClientsThatCancelMidDownload) {
  const std::vector<float> w = RandomWeights(1024 * 1024, 2);
  std::vector<v1::QuantizeRequest> reqs = {StartRequest(
      "int8", true, v1::GRANULARITY_PER_CHANNEL, 0, v1::OUTPUT_KIND_BOTH)};
  for (int i = 0; i < 3; ++i) {
    AppendTensor(reqs, absl::StrCat("t", i), {1024, 1024}, w.data(), w.size() * 4);
  }
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE(round);
    grpc::ClientContext ctx;
    auto stream = stub_->Quantize(&ctx);
    for (const auto& r : reqs) ASSERT_TRUE(stream->Write(r));
    stream->WritesDone();
    v1::QuantizeResponse response;
    // Read a few response messages of the first tensor, then vanish.
    for (int i = 0; i <= round && stream->Read(&response); ++i) {
    }
    ctx.TryCancel();
    while (stream->Read(&response)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  ExpectCleanAndServing();
}

TEST_F(ChaosTest, DeadlinesThatExpireMidJob) {
  const std::vector<float> w = RandomWeights(2048 * 2048, 3);  // 16 MiB
  std::vector<v1::QuantizeRequest> reqs = {StartRequest(
      "int3", false, v1::GRANULARITY_PER_GROUP, 64, v1::OUTPUT_KIND_BOTH)};
  for (int i = 0; i < 4; ++i) {
    AppendTensor(reqs, absl::StrCat("t", i), {2048, 2048}, w.data(), w.size() * 4);
  }
  int expired = 0;
  for (int ms : {1, 5, 20, 50, 100}) {
    SCOPED_TRACE(ms);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
    auto stream = stub_->Quantize(&ctx);
    for (const auto& r : reqs) {
      if (!stream->Write(r)) break;
    }
    stream->WritesDone();
    v1::QuantizeResponse response;
    while (stream->Read(&response)) {
    }
    const grpc::StatusCode code = stream->Finish().error_code();
    EXPECT_TRUE(code == grpc::StatusCode::DEADLINE_EXCEEDED ||
                code == grpc::StatusCode::OK)
        << code;
    expired += code == grpc::StatusCode::DEADLINE_EXCEEDED;
  }
  EXPECT_GT(expired, 0);  // 64 MiB of int3 work does not fit in 1 ms
  ExpectCleanAndServing();
}

// Calibration sets cancelled while their chunks are folded, and with
// tensors waiting for a set: every reservation (sets, queued chunks,
// waiting tensors) is returned.
TEST_F(ChaosTest, ClientsThatCancelMidCalibration) {
  constexpr int64_t kFeatures = 512, kTokens = 2048;  // 4 MiB of activations
  const std::vector<float> x = RandomWeights(kFeatures * kTokens, 4);
  const std::vector<float> w = RandomWeights(256 * kFeatures, 5);
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int8", true, v1::GRANULARITY_PER_CHANNEL)};
  {
    v1::QuantizeRequest h;
    h.mutable_calibration_header()->set_name("x");
    h.mutable_calibration_header()->set_dtype(v1::DTYPE_F32);
    h.mutable_calibration_header()->set_features(kFeatures);
    h.mutable_calibration_header()->set_channel_histograms(true);
    reqs.push_back(h);
    const size_t chunk = 64 * kFeatures * 4;
    for (size_t offset = 0; offset < x.size() * 4; offset += chunk) {
      v1::QuantizeRequest c;
      c.mutable_calibration_chunk()->set_offset(offset);
      c.mutable_calibration_chunk()->set_data(
          reinterpret_cast<const char*>(x.data()) + offset, chunk);
      reqs.push_back(std::move(c));
    }
    reqs.emplace_back();
    reqs.back().mutable_calibration_end();
  }
  for (int i = 0; i < 3; ++i) {
    AppendTensor(reqs, absl::StrCat("w", i), {256, kFeatures}, w.data(),
                 w.size() * 4);
    for (auto it = reqs.rbegin(); it != reqs.rend(); ++it) {
      if (it->has_header()) {
        it->mutable_header()->set_calibration("x");
        break;
      }
    }
  }
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE(round);
    grpc::ClientContext ctx;
    auto stream = stub_->Quantize(&ctx);
    // Rounds 0-3 stop among the set's chunks; later ones after its end,
    // with tensors sent that wait for it or run.
    const size_t sent = round < 4 ? 3 + static_cast<size_t>(round) * 9
                                  : 35 + static_cast<size_t>(round - 4) * 4;
    for (size_t i = 0; i < sent && i < reqs.size(); ++i) {
      if (!stream->Write(reqs[i])) break;
    }
    ctx.TryCancel();
    v1::QuantizeResponse response;
    while (stream->Read(&response)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  ExpectCleanAndServing();
}

}  // namespace
}  // namespace quantd

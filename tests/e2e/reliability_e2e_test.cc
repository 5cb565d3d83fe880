// Reliability of the real server on loopback: backpressure on a client that
// does not read, drain on shutdown (finish within the deadline, UNAVAILABLE
// after it), bearer-token auth, and identical bytes for any worker count.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
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
using testing::StartTestServer;

TEST(BackpressureTest, ClientThatDoesNotReadIsNotBufferedWithoutBound) {
  ServiceOptions options;
  options.workers = 2;
  options.max_pending_tensors_per_stream = 2;
  auto server = StartTestServer(options);
  ASSERT_NE(server, nullptr);
  auto stub = v1::Quantizer::NewStub(ChannelTo(*server));

  constexpr int kTensors = 24;
  const std::vector<float> w = RandomWeights(512 * 512, 4);  // 1 MiB each
  std::vector<v1::QuantizeRequest> reqs = {StartRequest(
      "int8", true, v1::GRANULARITY_PER_CHANNEL, 0, v1::OUTPUT_KIND_BOTH)};
  for (int i = 0; i < kTensors; ++i) {
    AppendTensor(reqs, absl::StrCat("t", i), {512, 512}, w.data(), w.size() * 4);
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto stream = stub->Quantize(&ctx);
  std::thread sender([&] {
    for (const auto& r : reqs) {
      if (!stream->Write(r)) return;
    }
    stream->WritesDone();
  });
  // Read nothing for a while: the server must stop reading instead of
  // queueing all 24 tensors and their outputs.
  int64_t max_reserved = 0;
  for (int i = 0; i < 50; ++i) {
    max_reserved = std::max(max_reserved, server->service().budget().reserved_bytes());
    absl::SleepFor(absl::Milliseconds(10));
  }
  // Per tensor: 1 MiB input, 1 MiB dequantized values, codes and scales.
  const int64_t per_tensor = 512 * 512 * (4 + 4 + 1) + 512 * 5;
  EXPECT_GT(max_reserved, 0);
  EXPECT_LE(max_reserved, 3 * per_tensor)
      << "the stream held more than max_pending_tensors_per_stream tensors";
  // Now read everything: all tensors arrive and the stream ends OK.
  v1::QuantizeResponse response;
  int results = 0;
  while (stream->Read(&response)) results += response.has_result() ? 1 : 0;
  sender.join();
  grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(results, kTensors);
  EXPECT_EQ(server->service().budget().reserved_bytes(), 0);
}

TEST(DrainTest, StreamThatFinishesWithinTheDeadlineEndsOk) {
  auto server = StartTestServer();
  ASSERT_NE(server, nullptr);
  auto stub = v1::Quantizer::NewStub(ChannelTo(*server));
  const std::vector<float> w = RandomWeights(256 * 256, 5);
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int4", true, v1::GRANULARITY_PER_GROUP, 64)};
  for (int i = 0; i < 4; ++i) {
    AppendTensor(reqs, absl::StrCat("t", i), {256, 256}, w.data(), w.size() * 4);
  }
  testing::StreamResult result;
  std::thread client([&] { result = RunRawStream(*stub, reqs); });
  // Shut down while the stream may still be running; it has 30 s.
  while (server->service().active_streams() == 0 && result.responses.empty()) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  server->Shutdown(absl::Seconds(30));
  client.join();
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  int results = 0;
  for (const auto& r : result.responses) results += r.has_result() ? 1 : 0;
  EXPECT_EQ(results, 4);
}

TEST(DrainTest, StreamStillOpenAtTheDeadlineEndsUnavailable) {
  auto server = StartTestServer();
  ASSERT_NE(server, nullptr);
  auto stub = v1::Quantizer::NewStub(ChannelTo(*server));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub->Quantize(&ctx);
  const std::vector<float> w = RandomWeights(64 * 64, 6);
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int8", true, v1::GRANULARITY_PER_CHANNEL)};
  AppendTensor(reqs, "done", {64, 64}, w.data(), w.size() * 4);
  for (const auto& r : reqs) ASSERT_TRUE(stream->Write(r));
  // The first tensor is answered; the stream stays open (no half-close),
  // as a client that is still uploading would.
  v1::QuantizeResponse response;
  bool got_result = false;
  while (!got_result && stream->Read(&response)) got_result = response.has_result();
  ASSERT_TRUE(got_result);
  const absl::Time start = absl::Now();
  std::thread shutdown([&] { server->Shutdown(absl::Milliseconds(300)); });
  while (stream->Read(&response)) {
  }
  grpc::Status status = stream->Finish();
  shutdown.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message();
  EXPECT_NE(status.error_message().find("drain deadline"), std::string::npos);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_EQ(server->service().budget().reserved_bytes(), 0);
}

TEST(AuthTest, TokensGuardTheQuantizerButNotHealth) {
  ServiceOptions options;
  options.auth_tokens = {"alpha-token", "beta-token"};
  auto server = StartTestServer(options);
  ASSERT_NE(server, nullptr);
  auto channel = ChannelTo(*server);
  auto stub = v1::Quantizer::NewStub(channel);
  auto info = [&](const std::string& authorization) {
    grpc::ClientContext ctx;
    if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
    v1::ServerInfo out;
    return stub->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &out).error_code();
  };
  EXPECT_EQ(info(""), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(info("Basic abc"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(info("Bearer wrong"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(info("Bearer alpha-tokenX"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(info("Bearer alpha-toke"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(info("Bearer beta-token"), grpc::StatusCode::OK);
  EXPECT_EQ(info("bearer alpha-token"), grpc::StatusCode::OK);

  const std::vector<float> w = RandomWeights(8 * 8, 1);
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int8", true, v1::GRANULARITY_PER_CHANNEL)};
  AppendTensor(reqs, "w", {8, 8}, w.data(), w.size() * 4);
  {
    grpc::ClientContext ctx;
    auto stream = stub->Quantize(&ctx);
    for (const auto& r : reqs) stream->Write(r);
    stream->WritesDone();
    v1::QuantizeResponse response;
    while (stream->Read(&response)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer alpha-token");
    auto stream = stub->Quantize(&ctx);
    for (const auto& r : reqs) stream->Write(r);
    stream->WritesDone();
    v1::QuantizeResponse response;
    int results = 0;
    while (stream->Read(&response)) results += response.has_result() ? 1 : 0;
    EXPECT_TRUE(stream->Finish().ok());
    EXPECT_EQ(results, 1);
  }
}

// Same input and scheme give the same bytes on 1 and 4 workers.
TEST(DeterminismTest, OneAndFourWorkersGiveIdenticalResponses) {
  std::vector<std::vector<float>> tensors;
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int3", false, v1::GRANULARITY_PER_GROUP, 32, v1::OUTPUT_KIND_BOTH)};
  for (int i = 0; i < 8; ++i) {
    tensors.push_back(RandomWeights(96 * 160, 50 + static_cast<uint32_t>(i)));
    AppendTensor(reqs, absl::StrCat("t", i), {96, 160}, tensors.back().data(),
                 tensors.back().size() * 4, v1::DTYPE_F32, 8192);
  }
  std::map<std::string, std::string> by_workers[2];
  int k = 0;
  for (int workers : {1, 4}) {
    ServiceOptions options;
    options.workers = workers;
    auto server = StartTestServer(options);
    ASSERT_NE(server, nullptr);
    auto stub = v1::Quantizer::NewStub(ChannelTo(*server));
    testing::StreamResult r = RunRawStream(*stub, reqs);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    for (const auto& resp : r.responses) {
      if (resp.has_shard()) {
        by_workers[k][resp.shard().tensor()] += resp.shard().data();
      } else {
        v1::TensorResult result = resp.result();
        result.clear_queue_seconds();  // timings differ; everything else may not
        result.clear_compute_seconds();
        by_workers[k][result.tensor()] += result.SerializeAsString();
      }
    }
    ++k;
  }
  ASSERT_EQ(by_workers[0].size(), 8u);
  EXPECT_EQ(by_workers[0], by_workers[1]);
}

}  // namespace
}  // namespace quantd

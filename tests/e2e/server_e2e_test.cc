// End to end through the real server on loopback with raw wire messages:
// output bytes equal the in-process kernel's, many tensors per stream,
// concurrent streams, every bad input gets its status and the server keeps
// serving, health, limits.
#include <grpcpp/generic/generic_stub.h>

#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "gtest/gtest.h"
#include "kernels/convert.h"
#include "kernels/quantize.h"
#include "proto/wire_convert.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

using testing::PartCrc;
using testing::AppendTensor;
using testing::ChannelTo;
using testing::RandomWeights;
using testing::RunRawStream;
using testing::StartRequest;
using testing::StartTestServer;

struct Assembled {
  std::string codes, scales, zero_points, fake_quant;
  v1::TensorResult result;
  bool has_result = false;
};

std::map<std::string, Assembled> Assemble(
    const std::vector<v1::QuantizeResponse>& responses) {
  std::map<std::string, Assembled> out;
  std::string current;  // responses of a tensor are contiguous
  for (const v1::QuantizeResponse& r : responses) {
    const std::string& name =
        r.has_shard() ? r.shard().tensor() : r.result().tensor();
    if (!current.empty() && name != current) {
      EXPECT_TRUE(out[current].has_result) << "responses of " << current
                                           << " interleaved with " << name;
    }
    current = name;
    Assembled& a = out[name];
    EXPECT_FALSE(a.has_result) << "message for " << name << " after its result";
    if (r.has_result()) {
      a.result = r.result();
      a.has_result = true;
      continue;
    }
    std::string* dst = nullptr;
    switch (r.shard().part()) {
      case v1::ShardChunk::PART_CODES: dst = &a.codes; break;
      case v1::ShardChunk::PART_SCALES: dst = &a.scales; break;
      case v1::ShardChunk::PART_ZERO_POINTS: dst = &a.zero_points; break;
      default: dst = &a.fake_quant; break;
    }
    EXPECT_EQ(r.shard().offset(), dst->size());
    dst->append(r.shard().data());
  }
  return out;
}

// What the kernels give in-process for the same input and scheme.
QuantizedTensor Expected(const std::vector<float>& w, const Scheme& scheme,
                         const std::vector<int64_t>& shape) {
  absl::StatusOr<Layout> layout = MakeLayout(scheme, shape);
  EXPECT_TRUE(layout.ok()) << layout.status();
  QuantizedTensor q = AllocateQuantized(*layout);
  EXPECT_TRUE(QuantizeReference(w.data(), q).ok());
  return q;
}

void ExpectSameBytes(const Assembled& a, const QuantizedTensor& q) {
  ASSERT_TRUE(a.has_result);
  EXPECT_EQ(a.codes, std::string(q.codes.begin(), q.codes.end()));
  ASSERT_EQ(a.scales.size(), q.scales.size() * 4);
  EXPECT_EQ(0, std::memcmp(a.scales.data(), q.scales.data(), a.scales.size()));
  EXPECT_EQ(a.zero_points,
            std::string(q.zero_points.begin(), q.zero_points.end()));
  EXPECT_EQ(PartCrc(a.result, v1::ShardChunk::PART_CODES), Crc32c(a.codes.data(), a.codes.size()));
  EXPECT_EQ(PartCrc(a.result, v1::ShardChunk::PART_SCALES), Crc32c(a.scales.data(), a.scales.size()));
}

class ServerE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.workers = 2;
    server_ = StartTestServer(options);
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Quantizer::NewStub(ChannelTo(*server_));
  }

  // One good tensor through a fresh stream; asserts it succeeds.
  void ExpectGoodRequestSucceeds() {
    std::vector<float> w = RandomWeights(64 * 32, 7);
    std::vector<v1::QuantizeRequest> reqs = {
        StartRequest("int4", true, v1::GRANULARITY_PER_GROUP, 16)};
    AppendTensor(reqs, "good", {64, 32}, w.data(), w.size() * 4);
    testing::StreamResult r = RunRawStream(*stub_, reqs);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    auto out = Assemble(r.responses);
    Scheme s{.format = "int4", .symmetric = true,
             .granularity = Granularity::kPerGroup, .group_size = 16};
    ExpectSameBytes(out["good"], Expected(w, s, {64, 32}));
  }

  std::unique_ptr<QuantdServer> server_;
  std::unique_ptr<v1::Quantizer::Stub> stub_;
};

TEST_F(ServerE2eTest, OutputBytesEqualInProcessKernelForEveryScheme) {
  const std::vector<int64_t> shape = {48, 96};
  std::vector<float> w = RandomWeights(48 * 96, 11);
  for (int bits = 2; bits <= 8; ++bits) {
    for (bool symmetric : {true, false}) {
      for (auto [gran, group] :
           std::vector<std::pair<v1::Granularity, uint32_t>>{
               {v1::GRANULARITY_PER_TENSOR, 0},
               {v1::GRANULARITY_PER_CHANNEL, 0},
               {v1::GRANULARITY_PER_GROUP, 32}}) {
        const std::string format = absl::StrCat("int", bits);
        SCOPED_TRACE(absl::StrCat(format, symmetric ? " sym " : " asym ", gran));
        std::vector<v1::QuantizeRequest> reqs = {
            StartRequest(format, symmetric, gran, group)};
        // Small chunks so a tensor spans many messages.
        AppendTensor(reqs, "w", shape, w.data(), w.size() * 4, v1::DTYPE_F32,
                     4096);
        testing::StreamResult r = RunRawStream(*stub_, reqs);
        ASSERT_TRUE(r.status.ok()) << r.status.error_message();
        auto out = Assemble(r.responses);
        ASSERT_EQ(out.size(), 1u);
        Scheme s;
        s.format = format;
        s.symmetric = symmetric;
        s.granularity = gran == v1::GRANULARITY_PER_TENSOR ? Granularity::kPerTensor
                        : gran == v1::GRANULARITY_PER_CHANNEL
                            ? Granularity::kPerChannel
                            : Granularity::kPerGroup;
        s.group_size = group;
        ExpectSameBytes(out["w"], Expected(w, s, shape));
        const v1::Metrics& m = out["w"].result.metrics();
        EXPECT_GT(m.sqnr_db(), 0);
        EXPECT_GT(m.cosine_similarity(), 0.5);
        EXPECT_GT(m.bits_per_weight(), bits);
      }
    }
  }
}

TEST_F(ServerE2eTest, ManyTensorsPerStreamWithOverridesAndDtypes) {
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int8", true, v1::GRANULARITY_PER_CHANNEL)};
  std::map<std::string, std::pair<std::vector<float>, Scheme>> expected;
  std::vector<std::vector<uint16_t>> keep_alive;
  for (int i = 0; i < 12; ++i) {
    const std::string name = absl::StrCat("layers.", i, ".weight");
    const int64_t rows = 8 + i, cols = 64;
    std::vector<float> w = RandomWeights(rows * cols, 100 + static_cast<uint32_t>(i));
    Scheme scheme;  // int8 sym per channel: the job default
    v1::Scheme override_proto;
    const v1::Scheme* override_ptr = nullptr;
    if (i % 3 == 1) {
      scheme = Scheme{.format = "int3", .symmetric = false,
                      .granularity = Granularity::kPerGroup, .group_size = 16};
      SchemeToProto(scheme, &override_proto);
      override_ptr = &override_proto;
    }
    if (i % 2 == 0) {
      // Send as F16: the server converts exactly; the expectation uses the
      // same f16 values widened.
      std::vector<uint16_t> h(w.size());
      for (size_t k = 0; k < w.size(); ++k) {
        h[k] = FloatToHalf(w[k]);
        w[k] = HalfToFloat(h[k]);
      }
      AppendTensor(reqs, name, {rows, cols}, h.data(), h.size() * 2,
                   v1::DTYPE_F16, 1 << 20, override_ptr);
      keep_alive.push_back(std::move(h));
    } else {
      AppendTensor(reqs, name, {rows, cols}, w.data(), w.size() * 4,
                   v1::DTYPE_F32, 1 << 20, override_ptr);
    }
    expected[name] = {w, scheme};
  }
  testing::StreamResult r = RunRawStream(*stub_, reqs);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  auto out = Assemble(r.responses);
  ASSERT_EQ(out.size(), expected.size());
  for (auto& [name, ws] : expected) {
    SCOPED_TRACE(name);
    const v1::Layout& layout = out[name].result.layout();
    std::vector<int64_t> shape(layout.shape().begin(), layout.shape().end());
    ExpectSameBytes(out[name], Expected(ws.first, ws.second, shape));
  }
}

TEST_F(ServerE2eTest, FakeQuantOutputEqualsDequantizedKernelOutput) {
  std::vector<float> w = RandomWeights(16 * 64, 5);
  std::vector<v1::QuantizeRequest> reqs = {StartRequest(
      "int4", false, v1::GRANULARITY_PER_GROUP, 32, v1::OUTPUT_KIND_BOTH)};
  AppendTensor(reqs, "w", {16, 64}, w.data(), w.size() * 4);
  testing::StreamResult r = RunRawStream(*stub_, reqs);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  auto out = Assemble(r.responses);
  QuantizedTensor q = Expected(
      w, Scheme{"int4", false, Granularity::kPerGroup, 32}, {16, 64});
  ExpectSameBytes(out["w"], q);
  std::vector<float> deq(w.size());
  Dequantize(q, deq.data());
  ASSERT_EQ(out["w"].fake_quant.size(), deq.size() * 4);
  EXPECT_EQ(0, std::memcmp(out["w"].fake_quant.data(), deq.data(),
                           out["w"].fake_quant.size()));
  EXPECT_EQ(PartCrc(out["w"].result, v1::ShardChunk::PART_FAKE_QUANT),
            Crc32c(deq.data(), deq.size() * 4));
}

TEST_F(ServerE2eTest, ConcurrentStreamsGetIdenticalResults) {
  std::vector<float> w = RandomWeights(128 * 256, 3);
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int4", true, v1::GRANULARITY_PER_GROUP, 64)};
  for (int i = 0; i < 4; ++i) {
    AppendTensor(reqs, absl::StrCat("t", i), {128, 256}, w.data(), w.size() * 4,
                 v1::DTYPE_F32, 65536);
  }
  constexpr int kStreams = 6;
  std::vector<testing::StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { results[i] = RunRawStream(*stub_, reqs); });
  }
  for (std::thread& t : threads) t.join();
  const QuantizedTensor q =
      Expected(w, Scheme{"int4", true, Granularity::kPerGroup, 64}, {128, 256});
  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    auto out = Assemble(results[i].responses);
    ASSERT_EQ(out.size(), 4u);
    for (auto& [name, a] : out) ExpectSameBytes(a, q);
  }
  EXPECT_EQ(server_->service().budget().reserved_bytes(), 0);
}

struct BadInput {
  const char* name;
  std::vector<v1::QuantizeRequest> requests;
  grpc::StatusCode code;
  const char* message_part;
};

TEST_F(ServerE2eTest, EveryBadInputGetsItsStatusAndServerKeepsServing) {
  const std::vector<float> good = RandomWeights(4 * 8, 1);
  std::vector<float> nan_w = good;
  nan_w[13] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> inf_w = good;
  inf_w[5] = -std::numeric_limits<float>::infinity();
  const std::vector<uint16_t> half_inf(32, 0x7C00);

  auto start = [] { return StartRequest("int8", true, v1::GRANULARITY_PER_CHANNEL); };
  auto with_tensor = [&](const std::string& name, std::vector<int64_t> shape,
                         const void* data, size_t bytes,
                         v1::DType dtype = v1::DTYPE_F32) {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendTensor(r, name, shape, data, bytes, dtype);
    return r;
  };
  std::vector<BadInput> cases;
  cases.push_back({"nan", with_tensor("w.nan", {4, 8}, nan_w.data(), 128),
                   grpc::StatusCode::INVALID_ARGUMENT, "element 13"});
  cases.push_back({"inf", with_tensor("w.inf", {4, 8}, inf_w.data(), 128),
                   grpc::StatusCode::INVALID_ARGUMENT, "tensor w.inf"});
  cases.push_back({"f16 inf", with_tensor("w.h", {4, 8}, half_inf.data(), 64,
                                          v1::DTYPE_F16),
                   grpc::StatusCode::INVALID_ARGUMENT, "tensor w.h"});
  cases.push_back({"wrong byte count", with_tensor("w.short", {4, 8}, good.data(), 100),
                   grpc::StatusCode::INVALID_ARGUMENT, "tensor w.short"});
  cases.push_back({"group does not divide", {}, grpc::StatusCode::INVALID_ARGUMENT,
                   "tensor w.g"});
  {
    v1::Scheme g;
    g.set_format("int4");
    g.set_granularity(v1::GRANULARITY_PER_GROUP);
    g.set_group_size(3);
    cases.back().requests = {start()};
    AppendTensor(cases.back().requests, "w.g", {4, 8}, good.data(), 128,
                 v1::DTYPE_F32, 1 << 20, &g);
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendTensor(r, "w.trunc", {4, 8}, good.data(), 128);
    r.pop_back();  // no TensorEnd, then half-close
    cases.push_back({"truncated", r, grpc::StatusCode::INVALID_ARGUMENT, "truncated"});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendTensor(r, "w.ooo", {4, 8}, good.data(), 128, v1::DTYPE_F32, 32);
    std::swap(r[2], r[3]);
    cases.push_back({"out of order", r, grpc::StatusCode::INVALID_ARGUMENT, "offset 32"});
  }
  {
    std::vector<v1::QuantizeRequest> r;
    AppendTensor(r, "w.nostart", {4, 8}, good.data(), 128);
    cases.push_back({"no JobStart", r, grpc::StatusCode::INVALID_ARGUMENT, "JobStart"});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    r.emplace_back();
    r.back().mutable_header()->set_name("w.dtype");
    r.back().mutable_header()->set_dtype(static_cast<v1::DType>(9));
    r.back().mutable_header()->add_shape(4);
    cases.push_back({"unknown dtype", r, grpc::StatusCode::INVALID_ARGUMENT, "dtype"});
  }
  {
    std::vector<v1::QuantizeRequest> r = {StartRequest("int17", true, v1::GRANULARITY_PER_CHANNEL)};
    cases.push_back({"unknown scheme", r, grpc::StatusCode::INVALID_ARGUMENT, "int17"});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    r.emplace_back();
    r.back().mutable_header()->set_name("w.huge");
    r.back().mutable_header()->set_dtype(v1::DTYPE_F32);
    r.back().mutable_header()->add_shape(uint64_t{1} << 31);
    r.back().mutable_header()->add_shape(uint64_t{1} << 20);
    cases.push_back({"huge declared size", r, grpc::StatusCode::RESOURCE_EXHAUSTED,
                     "max_tensor_bytes="});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    r.emplace_back();
    r.back().mutable_header()->set_name("w.overflow");
    r.back().mutable_header()->set_dtype(v1::DTYPE_F32);
    r.back().mutable_header()->add_shape(uint64_t{1} << 40);
    r.back().mutable_header()->add_shape(uint64_t{1} << 40);
    cases.push_back({"shape overflow", r, grpc::StatusCode::INVALID_ARGUMENT, "w.overflow"});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendTensor(r, "w.dup", {4, 8}, good.data(), 128);
    AppendTensor(r, "w.dup", {4, 8}, good.data(), 128);
    cases.push_back({"duplicate name", r, grpc::StatusCode::INVALID_ARGUMENT, "twice"});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendTensor(r, "w.a", {4, 8}, good.data(), 128);
    r.pop_back();
    AppendTensor(r, "w.b", {4, 8}, good.data(), 128);
    cases.push_back({"two headers", r, grpc::StatusCode::INVALID_ARGUMENT, "w.b"});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendTensor(r, "w.crc", {4, 8}, good.data(), 128, v1::DTYPE_F32, 64);
    r[2].mutable_chunk()->set_crc32c(Crc32c(r[2].chunk().data().data(), 64));
    r[3].mutable_chunk()->set_crc32c(Crc32c(r[3].chunk().data().data(), 64) ^ 4);
    cases.push_back({"corrupted chunk", r, grpc::StatusCode::DATA_LOSS,
                     "tensor w.crc: chunk at offset 64"});
  }
  {
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendTensor(r, "w.crc2", {4, 8}, good.data(), 128);
    r.back().mutable_end()->set_crc32c(Crc32c(good.data(), 128) + 1);
    cases.push_back({"whole-tensor checksum", r, grpc::StatusCode::DATA_LOSS,
                     "tensor w.crc2: crc32c of the whole tensor"});
  }
  {
    // Calibration for an unknown set: the tensor names a set this stream
    // never sent.
    std::vector<v1::QuantizeRequest> r = {start()};
    AppendTensor(r, "w.calib", {4, 8}, good.data(), 128);
    r[1].mutable_header()->set_calibration("blk.9.attn_in");
    cases.push_back({"calibration for an unknown set", r,
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "tensor w.calib: calibration set 'blk.9.attn_in' is unknown"});
  }
  for (const BadInput& c : cases) {
    SCOPED_TRACE(c.name);
    testing::StreamResult r = RunRawStream(*stub_, c.requests);
    EXPECT_EQ(r.status.error_code(), c.code) << r.status.error_message();
    EXPECT_NE(r.status.error_message().find(c.message_part), std::string::npos)
        << r.status.error_message();
    ExpectGoodRequestSucceeds();
  }
  // Every reservation was returned.
  for (int i = 0; i < 100 && server_->service().budget().reserved_bytes() != 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(server_->service().budget().reserved_bytes(), 0);
}

TEST(ServerLimitsTest, OverMemoryBudgetIsResourceExhaustedNamingTheLimit) {
  ServiceOptions options;
  options.memory_budget_bytes = 64 << 10;
  auto server = StartTestServer(options);
  ASSERT_NE(server, nullptr);
  auto stub = v1::Quantizer::NewStub(ChannelTo(*server));
  std::vector<float> w = RandomWeights(64 * 256, 2);  // 64 KiB of input alone
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int8", true, v1::GRANULARITY_PER_CHANNEL)};
  AppendTensor(reqs, "big", {64, 256}, w.data(), w.size() * 4);
  testing::StreamResult r = RunRawStream(*stub, reqs);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(r.status.error_message().find("memory_budget_bytes=65536"),
            std::string::npos)
      << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("big"), std::string::npos);
  // A tensor that fits still goes through.
  std::vector<v1::QuantizeRequest> small = {
      StartRequest("int8", true, v1::GRANULARITY_PER_CHANNEL)};
  AppendTensor(small, "small", {8, 64}, w.data(), 8 * 64 * 4);
  EXPECT_TRUE(RunRawStream(*stub, small).status.ok());
}

TEST(ServerInfoTest, ReportsFormatsLimitsAndWorkers) {
  ServiceOptions options;
  options.workers = 3;
  options.limits.max_tensor_bytes = 12345678;
  auto server = StartTestServer(options);
  ASSERT_NE(server, nullptr);
  auto stub = v1::Quantizer::NewStub(ChannelTo(*server));
  grpc::ClientContext ctx;
  v1::ServerInfo info;
  ASSERT_TRUE(stub->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info).ok());
  EXPECT_EQ(info.workers(), 3u);
  EXPECT_EQ(info.limits().max_tensor_bytes(), 12345678u);
  EXPECT_EQ(info.limits().max_chunk_bytes(), 1u << 20);
  EXPECT_EQ(info.dtypes_size(), 3);
  std::vector<std::string> names;
  for (const auto& f : info.formats()) names.push_back(f.name());
  for (int b = 2; b <= 8; ++b) {
    EXPECT_NE(std::find(names.begin(), names.end(), absl::StrCat("int", b)),
              names.end());
  }
  EXPECT_FALSE(info.version().empty());
  EXPECT_FALSE(info.kernel_isa().empty());
}

// grpc.health.v1.Health/Check through a generic call (the health messages
// are two tiny protobufs: request {string service = 1}, response
// {ServingStatus status = 1}, SERVING = 1, NOT_SERVING = 2).
int HealthStatus(grpc::Channel& channel, const std::string& service) {
  grpc::GenericStub stub(channel.shared_from_this());
  std::string req;
  if (!service.empty()) {
    req.push_back(0x0a);
    req.push_back(static_cast<char>(service.size()));
    req += service;
  }
  grpc::Slice slice(req);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                 &request, &response, [&](grpc::Status s) {
                   std::lock_guard<std::mutex> lock(mu);
                   status = s;
                   done = true;
                   cv.notify_one();
                 });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  if (!status.ok()) return -static_cast<int>(status.error_code());
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (bytes.size() == 2 && bytes[0] == 0x08) return bytes[1];
  return 0;  // UNKNOWN (field absent)
}

TEST(HealthTest, LivenessAndReadinessFlipOnShutdown) {
  auto server = StartTestServer();
  ASSERT_NE(server, nullptr);
  auto channel = ChannelTo(*server);
  EXPECT_EQ(HealthStatus(*channel, ""), 1);
  EXPECT_EQ(HealthStatus(*channel, "quantd.v1.Quantizer"), 1);
  EXPECT_EQ(HealthStatus(*channel, "no.such.Service"),
            -static_cast<int>(grpc::StatusCode::NOT_FOUND));
  server->service().StartDraining();
  auto stub = v1::Quantizer::NewStub(channel);
  std::vector<float> w = RandomWeights(8, 1);
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int8", true, v1::GRANULARITY_PER_CHANNEL)};
  AppendTensor(reqs, "w", {8}, w.data(), 32);
  EXPECT_EQ(RunRawStream(*stub, reqs).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace quantd

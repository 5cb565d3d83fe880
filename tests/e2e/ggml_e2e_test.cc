// ggml block formats end to end through the real server on loopback, for
// every format of GgmlFormatTable(): the CODES part is exactly GgmlQuantize's
// bytes (what a GGUF holds), FAKE_QUANT exactly GgmlDequantize of them, the
// metrics those of the round trip; importance weights sent with the C++
// client give the local kernels' bytes; bad weights and rows that are not
// whole blocks are INVALID_ARGUMENT naming the tensor, and the server keeps
// serving.
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "client/quantd_client.h"
#include "gtest/gtest.h"
#include "kernels/convert.h"
#include "kernels/ggml_formats.h"
#include "kernels/metrics.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

using testing::PartCrc;
using testing::AppendTensor;
using testing::ChannelTo;
using testing::RandomWeights;
using testing::RunRawStream;
using testing::StartTestServer;

constexpr uint32_t kSeed = 20250612;

struct Assembled {
  std::string codes, scales, zero_points, fake_quant;
  v1::TensorResult result;
  bool has_result = false;
};

std::map<std::string, Assembled> Assemble(
    const std::vector<v1::QuantizeResponse>& responses) {
  std::map<std::string, Assembled> out;
  for (const v1::QuantizeResponse& r : responses) {
    if (r.has_result()) {
      Assembled& a = out[r.result().tensor()];
      a.result = r.result();
      a.has_result = true;
      continue;
    }
    Assembled& a = out[r.shard().tensor()];
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

v1::QuantizeRequest Start(const std::string& format, v1::OutputKind output) {
  v1::QuantizeRequest r;
  r.mutable_start()->mutable_scheme()->set_format(format);
  r.mutable_start()->mutable_options()->set_output(output);
  r.mutable_start()->set_client("ggml-e2e-test");
  return r;
}

// The local kernels' bytes for `w` (rows x row_length), or their error.
absl::StatusOr<std::vector<uint8_t>> LocalBytes(
    const GgmlFormatTraits& f, const std::vector<float>& w, int64_t rows,
    int64_t row_length, const std::vector<float>& importance) {
  absl::StatusOr<int64_t> row_bytes = GgmlRowBytes(f, row_length);
  if (!row_bytes.ok()) return row_bytes.status();
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * *row_bytes));
  absl::Status s =
      GgmlQuantize(f, w.data(), rows, row_length,
                   importance.empty() ? nullptr : importance.data(),
                   bytes.data());
  if (!s.ok()) return s;
  return bytes;
}

std::vector<float> Dequantized(const GgmlFormatTraits& f,
                               const std::vector<uint8_t>& bytes, int64_t rows,
                               int64_t row_length) {
  std::vector<float> out(static_cast<size_t>(rows * row_length));
  EXPECT_TRUE(
      GgmlDequantize(f, bytes.data(), rows, row_length, out.data()).ok());
  return out;
}

// Column weights that differ enough to move a weighted search.
std::vector<float> ColumnWeights(int64_t row_length) {
  std::vector<float> w(static_cast<size_t>(row_length));
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = i % 5 == 0 ? 40.0f : 0.05f + 0.01f * static_cast<float>(i % 7);
  }
  return w;
}

class GgmlE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.workers = 2;
    server_ = StartTestServer(options);
    ASSERT_NE(server_, nullptr);
    channel_ = ChannelTo(*server_);
    stub_ = v1::Quantizer::NewStub(channel_);
  }

  // One tensor through QuantdClient; the reply or the stream's error.
  absl::StatusOr<TensorReply> ViaClient(const std::string& scheme,
                                        const std::string& name,
                                        std::vector<int64_t> shape,
                                        const std::vector<float>& w,
                                        std::vector<float> importance,
                                        v1::OutputKind output =
                                            v1::OUTPUT_KIND_PACKED) {
    QuantdClient client(channel_);
    JobConfig job;
    absl::StatusOr<Scheme> parsed = ParseScheme(scheme);
    if (!parsed.ok()) return parsed.status();
    job.scheme = *parsed;
    job.output = output;
    job.chunk_bytes = 8192;  // a tensor spans many chunks
    std::optional<TensorRequest> next = TensorRequest{};
    next->name = name;
    next->shape = std::move(shape);
    next->data = absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(w.data()), w.size() * sizeof(float));
    next->importance = std::move(importance);
    std::optional<absl::StatusOr<TensorReply>> reply;
    absl::Status s = client.RunJob(
        job,
        [&]() {
          std::optional<TensorRequest> out = std::move(next);
          next.reset();
          return out;
        },
        [&](const std::string&, absl::StatusOr<TensorReply> r) {
          reply = std::move(r);
        });
    if (!s.ok()) return s;
    if (!reply.has_value()) return absl::InternalError("no reply");
    return *std::move(reply);
  }

  std::unique_ptr<QuantdServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Quantizer::Stub> stub_;
};

TEST_F(GgmlE2eTest, EveryFormatGivesTheKernelsBytesAndDequantizedValues) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  ASSERT_FALSE(GgmlFormatTable().empty());
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const int64_t rows = 7;
    const int64_t row_length = int64_t{3} * f.block_size;
    const std::vector<float> w = RandomWeights(rows * row_length, kSeed);
    absl::StatusOr<std::vector<uint8_t>> want =
        LocalBytes(f, w, rows, row_length, {});
    ASSERT_TRUE(want.ok()) << want.status();
    // The fast path the server runs is the reference, byte for byte.
    std::vector<uint8_t> reference(want->size());
    ASSERT_TRUE(GgmlQuantizeReference(f, w.data(), rows, row_length, nullptr,
                                      reference.data())
                    .ok());
    EXPECT_EQ(*want, reference);
    const std::vector<float> want_hat = Dequantized(f, *want, rows, row_length);

    // Lower-case name on the wire; small chunks so the tensor spans many.
    std::vector<v1::QuantizeRequest> reqs = {
        Start(absl::AsciiStrToLower(f.name), v1::OUTPUT_KIND_BOTH)};
    AppendTensor(reqs, "blk.0.ffn_up.weight", {rows, row_length}, w.data(),
                 w.size() * 4, v1::DTYPE_F32, 4096);
    testing::StreamResult r = RunRawStream(*stub_, reqs);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    auto out = Assemble(r.responses);
    ASSERT_EQ(out.size(), 1u);
    const Assembled& a = out["blk.0.ffn_up.weight"];
    ASSERT_TRUE(a.has_result);
    EXPECT_EQ(a.codes, std::string(want->begin(), want->end()));
    EXPECT_TRUE(a.scales.empty());
    EXPECT_TRUE(a.zero_points.empty());
    ASSERT_EQ(a.fake_quant.size(), want_hat.size() * 4);
    EXPECT_EQ(0, std::memcmp(a.fake_quant.data(), want_hat.data(),
                             a.fake_quant.size()));

    const v1::Layout& l = a.result.layout();
    EXPECT_EQ(l.scheme().format(), f.name);
    EXPECT_EQ(l.rows(), static_cast<uint64_t>(rows));
    EXPECT_EQ(l.row_length(), static_cast<uint64_t>(row_length));
    EXPECT_EQ(l.packed_bytes(), want->size());
    EXPECT_EQ(l.block_size(), static_cast<uint32_t>(f.block_size));
    EXPECT_EQ(l.block_bytes(), static_cast<uint32_t>(f.block_bytes));
    EXPECT_EQ(l.ggml_type(), static_cast<uint32_t>(f.type));
    EXPECT_EQ(l.num_scales(), 0u);
    EXPECT_FALSE(l.has_zero_points());
    EXPECT_EQ(PartCrc(a.result, v1::ShardChunk::PART_CODES), Crc32c(want->data(), want->size()));
    EXPECT_EQ(PartCrc(a.result, v1::ShardChunk::PART_FAKE_QUANT),
              Crc32c(a.fake_quant.data(), a.fake_quant.size()));

    // The kernels' fused measure (tested against ComputeErrorMetrics in
    // tests/kernels) is what the server reports.
    const absl::StatusOr<ErrorMetrics> measured = GgmlDequantizeAndMeasure(
        f, want->data(), rows, row_length, w.data(), nullptr);
    ASSERT_TRUE(measured.ok()) << measured.status();
    const ErrorMetrics& m = *measured;
    const v1::Metrics& got = a.result.metrics();
    EXPECT_EQ(got.mse(), m.mse);
    EXPECT_EQ(got.rmse(), m.rmse);
    EXPECT_EQ(got.max_abs_error(), m.max_abs_error);
    EXPECT_EQ(got.sqnr_db(), m.sqnr_db);
    EXPECT_EQ(got.cosine_similarity(), m.cosine_similarity);
    EXPECT_DOUBLE_EQ(got.bits_per_weight(),
                     8.0 * f.block_bytes / f.block_size);
    EXPECT_EQ(a.result.bytes_out(), want->size() + w.size() * 4);
  }
}

TEST_F(GgmlE2eTest, HalfPrecisionInputAndPerTensorOverridesInOneStream) {
  // An int8 job whose tensors override to block formats, one of them F16.
  const GgmlFormatTraits& q8 = *FindGgmlFormat("Q8_0");
  const GgmlFormatTraits& q4 = *FindGgmlFormat("Q4_0");
  const std::vector<float> w = RandomWeights(16 * 64, kSeed + 1);
  std::vector<uint16_t> half(w.size());
  std::vector<float> widened(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    half[i] = FloatToHalf(w[i]);
    widened[i] = HalfToFloat(half[i]);
  }
  std::vector<v1::QuantizeRequest> reqs = {
      Start("int8", v1::OUTPUT_KIND_PACKED)};
  reqs[0].mutable_start()->mutable_scheme()->set_symmetric(true);
  v1::Scheme q8_scheme;
  q8_scheme.set_format("Q8_0");
  v1::Scheme q4_scheme;
  q4_scheme.set_format("q4_0");
  AppendTensor(reqs, "f16", {16, 64}, half.data(), half.size() * 2,
               v1::DTYPE_F16, 1 << 20, &q8_scheme);
  AppendTensor(reqs, "f32", {16, 64}, w.data(), w.size() * 4, v1::DTYPE_F32,
               1 << 20, &q4_scheme);
  AppendTensor(reqs, "int", {16, 64}, w.data(), w.size() * 4);
  testing::StreamResult r = RunRawStream(*stub_, reqs);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  auto out = Assemble(r.responses);
  ASSERT_EQ(out.size(), 3u);
  auto want_q8 = LocalBytes(q8, widened, 16, 64, {});
  auto want_q4 = LocalBytes(q4, w, 16, 64, {});
  ASSERT_TRUE(want_q8.ok() && want_q4.ok());
  EXPECT_EQ(out["f16"].codes, std::string(want_q8->begin(), want_q8->end()));
  EXPECT_EQ(out["f32"].codes, std::string(want_q4->begin(), want_q4->end()));
  EXPECT_EQ(out["f32"].result.layout().scheme().format(), "Q4_0");
  // The int tensor still has its scales.
  EXPECT_EQ(out["int"].result.layout().block_size(), 0u);
  EXPECT_EQ(out["int"].scales.size(), 16u * 4);
}

TEST_F(GgmlE2eTest, ImportanceWeightsGiveTheKernelsBytes) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const int64_t rows = 6;
    const int64_t row_length = int64_t{2} * f.block_size;
    const std::vector<float> w = RandomWeights(rows * row_length, kSeed + 2);
    const std::vector<float> importance = ColumnWeights(row_length);
    const std::string name = absl::StrCat("blk.3.", f.name, ".weight");
    absl::StatusOr<std::vector<uint8_t>> want =
        LocalBytes(f, w, rows, row_length, importance);
    absl::StatusOr<TensorReply> reply =
        ViaClient(f.name, name, {rows, row_length}, w, importance,
                  v1::OUTPUT_KIND_BOTH);
    if (!want.ok()) {
      // A format whose importance path the kernels lack: the same code, the
      // tensor named.
      ASSERT_EQ(reply.status().code(), want.status().code()) << reply.status();
      EXPECT_NE(reply.status().message().find(name), std::string::npos)
          << reply.status();
      continue;
    }
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->part(Part::kCodes), *want);
    const std::vector<float> want_hat = Dequantized(f, *want, rows, row_length);
    ASSERT_EQ(reply->part(Part::kFakeQuant).size(), want_hat.size() * 4);
    EXPECT_EQ(0, std::memcmp(reply->part(Part::kFakeQuant).data(), want_hat.data(),
                             reply->part(Part::kFakeQuant).size()));
    absl::StatusOr<std::vector<uint8_t>> plain =
        LocalBytes(f, w, rows, row_length, {});
    ASSERT_TRUE(plain.ok()) << plain.status();
    if (f.uses_importance) {
      EXPECT_NE(reply->part(Part::kCodes), *plain) << "weights did not change the result";
    } else {
      EXPECT_EQ(reply->part(Part::kCodes), *plain) << "weights must be ignored";
    }
  }
}

TEST_F(GgmlE2eTest, BadImportanceWeightsAreInvalidArgumentNamingTheTensor) {
  const std::vector<float> w = RandomWeights(4 * 64, kSeed + 3);
  std::vector<float> nan_weights(64, 1.0f);
  nan_weights[9] = std::nanf("");
  std::vector<float> negative(64, 1.0f);
  negative[0] = -1.0f;
  std::vector<float> inf_weights(64, 1.0f);
  inf_weights[63] = HUGE_VALF;
  struct Case {
    const char* what;
    std::string scheme;
    std::vector<float> importance;
    const char* message_part;
  };
  const Case cases[] = {
      {"count below the row length", "IQ4_NL", std::vector<float>(63, 1.0f),
       "63 importance"},
      {"one per element instead of per column", "Q8_0",
       std::vector<float>(4 * 64, 1.0f), "row length is 64"},
      {"NaN", "IQ4_NL", nan_weights, "weight 9"},
      {"negative", "Q8_0", negative, "weight 0"},
      {"Inf", "IQ4_NL", inf_weights, "weight 63"},
      {"int scheme", "int4_g32", std::vector<float>(64, 1.0f),
       "only ggml block formats"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    absl::StatusOr<TensorReply> reply =
        ViaClient(c.scheme, "blk.9.attn_k.weight", {4, 64}, w, c.importance);
    ASSERT_EQ(reply.status().code(), absl::StatusCode::kInvalidArgument)
        << reply.status();
    EXPECT_NE(reply.status().message().find("blk.9.attn_k.weight"),
              std::string::npos)
        << reply.status();
    EXPECT_NE(reply.status().message().find(c.message_part), std::string::npos)
        << reply.status();
  }
  // The server keeps serving.
  absl::StatusOr<TensorReply> good =
      ViaClient("Q8_0", "after", {4, 64}, w, std::vector<float>(64, 1.0f));
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->part(Part::kCodes), *LocalBytes(*FindGgmlFormat("Q8_0"), w, 4, 64, {}));
}

TEST_F(GgmlE2eTest, RowNotWholeBlocksIsInvalidArgumentNamingTheTensor) {
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const int64_t row_length = f.block_size + 8;
    const std::vector<float> w = RandomWeights(2 * row_length, kSeed + 4);
    absl::StatusOr<TensorReply> reply =
        ViaClient(f.name, "token_embd.weight", {2, row_length}, w, {});
    ASSERT_EQ(reply.status().code(), absl::StatusCode::kInvalidArgument)
        << reply.status();
    const std::string message(reply.status().message());
    EXPECT_NE(message.find("token_embd.weight"), std::string::npos) << message;
    EXPECT_NE(message.find(absl::StrCat(row_length)), std::string::npos)
        << message;
    EXPECT_NE(message.find(absl::StrCat(f.block_size)), std::string::npos)
        << message;
  }
}

TEST_F(GgmlE2eTest, NonFiniteInputIsInvalidArgumentNamingTheTensor) {
  std::vector<float> w = RandomWeights(2 * 32, kSeed + 5);
  w[33] = HUGE_VALF;
  absl::StatusOr<TensorReply> reply =
      ViaClient("Q4_0", "output.weight", {2, 32}, w, {});
  ASSERT_EQ(reply.status().code(), absl::StatusCode::kInvalidArgument)
      << reply.status();
  EXPECT_NE(reply.status().message().find("output.weight"), std::string::npos)
      << reply.status();
}

TEST_F(GgmlE2eTest, ServerInfoListsEveryBlockFormat) {
  QuantdClient client(channel_);
  absl::StatusOr<v1::ServerInfo> info = client.GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  std::map<std::string, v1::FormatInfo> by_name;
  for (const v1::FormatInfo& fi : info->formats()) by_name[fi.name()] = fi;
  EXPECT_EQ(by_name["int4"].block_size(), 0u);
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    ASSERT_EQ(by_name.count(f.name), 1u);
    const v1::FormatInfo& fi = by_name[f.name];
    EXPECT_EQ(fi.block_size(), static_cast<uint32_t>(f.block_size));
    EXPECT_EQ(fi.block_bytes(), static_cast<uint32_t>(f.block_bytes));
    EXPECT_EQ(fi.ggml_type(), static_cast<uint32_t>(f.type));
    EXPECT_EQ(fi.uses_importance(), f.uses_importance);
    EXPECT_DOUBLE_EQ(fi.bits_per_weight(), 8.0 * f.block_bytes / f.block_size);
    EXPECT_EQ(fi.granularities_size(), 0);
  }
}

}  // namespace
}  // namespace quantd

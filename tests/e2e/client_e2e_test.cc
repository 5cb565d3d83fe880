// The C++ client library against the real server on loopback: QuantizeModel
// (what quantctl runs) over two real servers writes a file whose codes,
// scales and zero points equal the in-process kernels' for every tensor, and
// the same file for any number of streams.
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/json.h"
#include "client/load_generator.h"
#include "client/quantize_model.h"
#include "client/safetensors.h"
#include "gtest/gtest.h"
#include "kernels/convert.h"
#include "kernels/ggml_formats.h"
#include "kernels/quantize.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;

struct ModelTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<float> values;  // exactly representable in `dtype`
};

std::vector<uint8_t> Encode(const ModelTensor& t) {
  std::vector<uint8_t> bytes;
  if (t.dtype == "F32") {
    bytes.resize(t.values.size() * 4);
    std::memcpy(bytes.data(), t.values.data(), bytes.size());
  } else {
    bytes.resize(t.values.size() * 2);
    for (size_t i = 0; i < t.values.size(); ++i) {
      const uint16_t h = t.dtype == "F16" ? FloatToHalf(t.values[i])
                                          : FloatToBFloat16(t.values[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  return bytes;
}

std::vector<ModelTensor> MakeModel() {
  std::vector<ModelTensor> model = {
      {"blk.0.attn_q.weight", "F32", {64, 128}, {}},
      {"blk.0.ffn_up.weight", "F16", {96, 128}, {}},
      {"blk.0.ffn_down.weight", "BF16", {128, 96}, {}},
      {"blk.0.attn_norm.weight", "F32", {128}, {}},
      {"output.weight", "F32", {40, 128}, {}},
  };
  uint32_t seed = 1;
  for (ModelTensor& t : model) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    t.values = testing::RandomWeights(n, seed++);
    for (float& v : t.values) {  // round to what the file can hold
      if (t.dtype == "F16") v = HalfToFloat(FloatToHalf(v));
      if (t.dtype == "BF16") v = BFloat16ToFloat(FloatToBFloat16(v));
    }
  }
  return model;
}

std::string WriteModel(const std::vector<ModelTensor>& model,
                       const std::string& path) {
  std::vector<SafetensorsWriter::Entry> entries;
  for (const ModelTensor& t : model)
    entries.push_back({t.name, t.dtype, t.shape});
  auto writer = SafetensorsWriter::Create(path, entries, {{"format", "pt"}});
  EXPECT_TRUE(writer.ok()) << writer.status();
  for (const ModelTensor& t : model) {
    const std::vector<uint8_t> bytes = Encode(t);
    EXPECT_TRUE((*writer)->Write(t.name, 0, bytes).ok());
  }
  EXPECT_TRUE((*writer)->Finish().ok());
  return path;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

TEST(ClientE2eTest, QuantizeModelOverTwoServersMatchesKernels) {
  auto a = testing::StartTestServer();
  auto b = testing::StartTestServer();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const std::string dir = ::testing::TempDir() + "/client_e2e";
  fs::create_directories(dir);
  const std::vector<ModelTensor> model = MakeModel();
  const std::string input = WriteModel(model, dir + "/model.safetensors");

  std::vector<std::string> outputs;
  for (int streams : {1, 3}) {
    SCOPED_TRACE(streams);
    QuantizeModelOptions options;
    options.model = input;
    options.output = absl::StrCat(dir, "/out", streams, ".safetensors");
    options.scheme = "int4_asym_g32";
    options.overrides = {"^output\\.weight$=int8"};
    options.servers = {absl::StrCat("127.0.0.1:", a->grpc_port()),
                       absl::StrCat("127.0.0.1:", b->grpc_port())};
    options.streams_per_server = streams;
    options.progress = ProgressStyle::kNone;
    absl::StatusOr<RunSummary> summary = QuantizeModel(options);
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->num_failed, 0);
    EXPECT_EQ(summary->num_quantized, 4);
    EXPECT_EQ(summary->num_copied, 1);
    outputs.push_back(ReadAll(options.output));

    auto out = SafetensorsFile::Open(options.output);
    ASSERT_TRUE(out.ok()) << out.status();
    for (const ModelTensor& t : model) {
      SCOPED_TRACE(t.name);
      if (t.shape.size() < 2) {
        const SafetensorsTensor* copied = (*out)->Find(t.name);
        ASSERT_NE(copied, nullptr);
        const std::vector<uint8_t> bytes = Encode(t);
        EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), copied->data.begin(),
                               copied->data.end()));
        continue;
      }
      Scheme scheme = t.name == "output.weight"
                          ? Scheme{}
                          : Scheme{"int4", false, Granularity::kPerGroup, 32};
      absl::StatusOr<Layout> layout = MakeLayout(scheme, t.shape);
      ASSERT_TRUE(layout.ok());
      QuantizedTensor q = AllocateQuantized(*layout);
      ASSERT_TRUE(QuantizeReference(t.values.data(), q).ok());
      const SafetensorsTensor* codes = (*out)->Find(t.name + ".qweight");
      const SafetensorsTensor* scales = (*out)->Find(t.name + ".scales");
      ASSERT_NE(codes, nullptr);
      ASSERT_NE(scales, nullptr);
      EXPECT_TRUE(std::equal(q.codes.begin(), q.codes.end(),
                             codes->data.begin(), codes->data.end()));
      ASSERT_EQ(scales->data.size(), q.scales.size() * 4);
      EXPECT_EQ(0, std::memcmp(scales->data.data(), q.scales.data(),
                               scales->data.size()));
      const SafetensorsTensor* zps = (*out)->Find(t.name + ".zero_points");
      if (scheme.symmetric) {
        EXPECT_EQ(zps, nullptr);
      } else {
        ASSERT_NE(zps, nullptr);
        EXPECT_TRUE(std::equal(q.zero_points.begin(), q.zero_points.end(),
                               zps->data.begin(), zps->data.end()));
      }
    }
    // Every tensor was answered by one of the two servers. (Which one is a
    // matter of timing: streams take tensors from one queue as they free up.)
    const std::string addr_a = absl::StrCat("127.0.0.1:", a->grpc_port());
    const std::string addr_b = absl::StrCat("127.0.0.1:", b->grpc_port());
    int answered = 0;
    for (const TensorSummary& t : summary->tensors) {
      if (t.action != TensorAction::kQuantized) continue;
      EXPECT_TRUE(t.server == addr_a || t.server == addr_b) << t.server;
      ++answered;
    }
    EXPECT_EQ(answered, 4);
  }
  EXPECT_EQ(outputs[0], outputs[1]) << "output depends on the stream count";
}

// A ggml block scheme in a safetensors run: NAME.qweight holds exactly the
// kernel's ggml blocks (no scales tensors), and the metadata describes the
// block format.
TEST(ClientE2eTest, BlockSchemesWriteGgmlBlocks) {
  auto server = testing::StartTestServer();
  const std::string dir = ::testing::TempDir() + "/client_e2e_ggml";
  fs::create_directories(dir);
  const std::vector<ModelTensor> model = MakeModel();
  const std::string input = WriteModel(model, dir + "/model.safetensors");
  QuantizeModelOptions options;
  options.model = input;
  options.output = dir + "/q4k.safetensors";
  options.scheme = "q4_0";
  options.overrides = {"^blk\\.0\\.ffn_down\\.weight$=Q8_0"};
  options.servers = {absl::StrCat("127.0.0.1:", server->grpc_port())};
  options.progress = ProgressStyle::kNone;
  absl::StatusOr<RunSummary> summary = QuantizeModel(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->num_failed, 0);
  auto out = SafetensorsFile::Open(options.output);
  ASSERT_TRUE(out.ok()) << out.status();
  for (const ModelTensor& t : model) {
    if (t.shape.size() < 2) continue;
    SCOPED_TRACE(t.name);
    const GgmlFormatTraits* format =
        FindGgmlFormat(t.name == "blk.0.ffn_down.weight" ? "Q8_0" : "Q4_0");
    ASSERT_NE(format, nullptr);
    const int64_t rows = t.shape[0];
    const int64_t row_length = t.shape[1];
    absl::StatusOr<int64_t> row_bytes = GgmlRowBytes(*format, row_length);
    ASSERT_TRUE(row_bytes.ok());
    std::vector<uint8_t> want(static_cast<size_t>(rows * *row_bytes));
    ASSERT_TRUE(GgmlQuantizeReference(*format, t.values.data(), rows,
                                      row_length, nullptr, want.data())
                    .ok());
    const SafetensorsTensor* codes = (*out)->Find(t.name + ".qweight");
    ASSERT_NE(codes, nullptr);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), codes->data.begin(),
                           codes->data.end()));
    EXPECT_EQ((*out)->Find(t.name + ".scales"), nullptr);
    EXPECT_EQ((*out)->Find(t.name + ".zero_points"), nullptr);
    absl::StatusOr<Json> meta =
        ParseJson((*out)->metadata().at("quantd." + t.name));
    ASSERT_TRUE(meta.ok());
    EXPECT_EQ((*meta)["ggml_type"], static_cast<int>(format->type));
    EXPECT_EQ((*meta)["block_size"], format->block_size);
    EXPECT_FALSE(meta->contains("num_scales"));
  }
}

// The load generator against the real server: good tensors are all
// answered and timed, every kind of bad request gets the status a correct
// server gives, and the server still serves afterwards.
TEST(LoadGeneratorE2eTest, GoodAndBadLoadGetTheRightAnswers) {
  auto server = testing::StartTestServer();
  LoadOptions options;
  options.channel = testing::ChannelTo(*server);
  options.target = "test";
  options.concurrency = 3;
  options.duration = absl::Seconds(2);
  options.shape = {256, 512};
  options.scheme = "int4_asym_g64";
  options.tensors_per_stream = 4;
  options.bad_fraction = 0.5;
  options.seed = 7;
  absl::StatusOr<LoadReport> report = RunLoad(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_GT(report->good_ok, 0);
  EXPECT_EQ(report->good_failed, 0);
  EXPECT_EQ(report->good_ok, report->good_sent);
  EXPECT_EQ(static_cast<int64_t>(report->latencies_ms.size()), report->good_ok);
  EXPECT_EQ(report->unexpected, 0) << FormatLoadReport(*report);
  int64_t bad = 0;
  for (const auto& [kind, counts] : report->bad) {
    EXPECT_EQ(counts.expected, counts.sent) << kind;
    bad += counts.sent;
  }
  EXPECT_GT(bad, 0);
  EXPECT_LE(report->p50_ms, report->p99_ms);
  EXPECT_LE(report->p99_ms, report->max_ms);
  EXPECT_EQ(report->tensor_bytes, 256 * 512 * 4);
  const std::string table = FormatLoadReport(*report);
  EXPECT_NE(table.find("p99"), std::string::npos);
  EXPECT_NE(table.find("unexpected:   0"), std::string::npos);
  EXPECT_EQ(LoadReportToJson(*report)["unexpected"], 0);

  // Options it refuses.
  options.scheme = "int4_g100";  // 100 does not divide 512
  EXPECT_EQ(RunLoad(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.scheme = "int8";
  options.concurrency = 0;
  EXPECT_EQ(RunLoad(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantd

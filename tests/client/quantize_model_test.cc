// QuantdClient and QuantizeModel against an in-process fake Quantizer: a
// small synchronous service that quantizes with the kernels (the reference
// of what a server returns) and misbehaves on request, so the client's
// streaming, assembly, retries, output file and report are tested without
// the real server (which tests/e2e covers).
#include "client/quantize_model.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/crc32c.h"
#include "client/json.h"
#include "client/quantd_client.h"
#include "client/safetensors.h"
#include "kernels/convert.h"
#include "kernels/quantize.h"
#include "proto/wire_convert.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;

// Quantizes each tensor when its TensorEnd arrives. A tensor whose name
// contains "bad" fails the stream with INVALID_ARGUMENT; one containing
// "flaky" fails it with UNAVAILABLE the first time it is seen; one
// containing "corrupt" gets a wrong codes crc32c the first time.
class FakeQuantizer final : public v1::Quantizer::Service {
 public:
  grpc::Status GetServerInfo(grpc::ServerContext*,
                             const v1::GetServerInfoRequest*,
                             v1::ServerInfo* info) override {
    info->set_version("fake");
    info->set_kernel_isa("scalar");
    info->set_workers(1);
    info->mutable_limits()->set_max_chunk_bytes(max_chunk_bytes);
    info->mutable_limits()->set_max_tensor_bytes(max_tensor_bytes);
    return grpc::Status::OK;
  }

  grpc::Status Quantize(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::QuantizeResponse, v1::QuantizeRequest>*
          stream) override {
    streams_.fetch_add(1);
    v1::QuantizeRequest request;
    Scheme job_scheme;
    v1::OutputKind output = v1::OUTPUT_KIND_PACKED;
    v1::TensorHeader header;
    std::string data;
    while (stream->Read(&request)) {
      if (request.has_start()) {
        job_scheme = *SchemeFromProto(request.start().scheme());
        output = request.start().options().output();
      } else if (request.has_header()) {
        header = request.header();
        data.clear();
      } else if (request.has_chunk()) {
        if (request.chunk().offset() != data.size() ||
            request.chunk().data().size() > max_chunk_bytes) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "chunk");
        }
        data += request.chunk().data();
      } else if (request.has_end()) {
        const std::string& name = header.name();
        CountEnd(name);
        if (draining.load()) {
          return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "server is draining");
        }
        if (absl::StrContains(name, "bad") || Refused(name)) {
          return grpc::Status(
              grpc::StatusCode::INVALID_ARGUMENT,
              absl::StrCat("tensor ", name, ": element 3 is NaN"));
        }
        bool first = FirstTime(name);
        if (absl::StrContains(name, "flaky") && first) {
          return grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining");
        }
        if (const int ms = answer_delay_ms.load(); ms > 0) {
          absl::SleepFor(absl::Milliseconds(ms));
        }
        Scheme scheme = header.has_scheme() ? *SchemeFromProto(header.scheme())
                                            : job_scheme;
        if (!Answer(stream, header, scheme, output, data,
                    absl::StrContains(name, "corrupt") && first)) {
          return grpc::Status(grpc::StatusCode::INTERNAL, "fake failed");
        }
      }
    }
    return grpc::Status::OK;
  }

  int streams() const { return streams_.load(); }
  // Tensors whose name contains `text` fail with INVALID_ARGUMENT ("": none).
  void Refuse(const std::string& text) {
    absl::MutexLock lock(&mu_);
    refuse_ = text;
  }
  // TensorEnds received for `name` so far.
  int Received(const std::string& name) {
    absl::MutexLock lock(&mu_);
    return received_[name];
  }
  uint64_t max_chunk_bytes = 1 << 20;
  uint64_t max_tensor_bytes = 0;  // 0: no limit
  // Every stream fails UNAVAILABLE when its first tensor has arrived.
  std::atomic<bool> draining{false};
  // Each answer waits this long first (a slow server).
  std::atomic<int> answer_delay_ms{0};

 private:
  void CountEnd(const std::string& name) {
    absl::MutexLock lock(&mu_);
    ++received_[name];
  }
  bool Refused(const std::string& name) {
    absl::MutexLock lock(&mu_);
    return !refuse_.empty() && absl::StrContains(name, refuse_);
  }
  bool FirstTime(const std::string& name) {
    absl::MutexLock lock(&mu_);
    return ++seen_[name] == 1;
  }

  static bool Answer(grpc::ServerReaderWriter<v1::QuantizeResponse,
                                              v1::QuantizeRequest>* stream,
                     const v1::TensorHeader& header, const Scheme& scheme,
                     v1::OutputKind output, const std::string& data,
                     bool corrupt) {
    std::vector<int64_t> shape(header.shape().begin(), header.shape().end());
    absl::StatusOr<Layout> layout = MakeLayout(scheme, shape);
    absl::StatusOr<DType> dtype = DTypeFromProto(header.dtype());
    if (!layout.ok() || !dtype.ok()) return false;
    size_t n = static_cast<size_t>(layout->num_elements);
    std::vector<float> w(n), w_hat(n);
    if (!ConvertToF32(*dtype, data.data(), n, w.data()).ok()) return false;
    QuantizedTensor q = AllocateQuantized(*layout);
    if (!quantd::Quantize(w.data(), q).ok()) return false;
    Dequantize(q, w_hat.data());
    v1::TensorResult result;
    result.set_tensor(header.name());
    LayoutToProto(*layout, result.mutable_layout());
    ErrorMetrics metrics = ComputeErrorMetrics(w.data(), w_hat.data(), n);
    metrics.bits_per_weight = layout->BitsPerWeight();
    MetricsToProto(metrics, result.mutable_metrics());
    result.set_bytes_in(data.size());
    auto send = [&](v1::ShardChunk::Part part, const void* p, size_t size) {
      const char* bytes = static_cast<const char*>(p);
      for (size_t off = 0; off < size; off += 1000) {  // small chunks
        v1::QuantizeResponse response;
        v1::ShardChunk* shard = response.mutable_shard();
        shard->set_tensor(header.name());
        shard->set_part(part);
        shard->set_offset(off);
        shard->set_data(bytes + off, std::min<size_t>(1000, size - off));
        shard->set_crc32c(Crc32c(shard->data().data(), shard->data().size()));
        stream->Write(response);
      }
      if (size > 0) {  // the result lists every part sent
        v1::PartInfo* info = result.add_parts();
        info->set_part(part);
        info->set_bytes(size);
        info->set_crc32c(Crc32c(p, size));
      }
    };
    if (output != v1::OUTPUT_KIND_FAKE_QUANT) {
      send(v1::ShardChunk::PART_CODES, q.codes.data(), q.codes.size());
      if (corrupt) {
        v1::PartInfo* codes = result.mutable_parts(0);
        codes->set_crc32c(codes->crc32c() ^ 1u);
      }
      send(v1::ShardChunk::PART_SCALES,
                                    q.scales.data(), q.scales.size() * 4);
      send(v1::ShardChunk::PART_ZERO_POINTS,
                                         q.zero_points.data(),
                                         q.zero_points.size());
    }
    if (output == v1::OUTPUT_KIND_FAKE_QUANT ||
        output == v1::OUTPUT_KIND_BOTH) {
      send(v1::ShardChunk::PART_FAKE_QUANT, w_hat.data(), n * 4);
    }
    v1::QuantizeResponse response;
    *response.mutable_result() = result;
    return stream->Write(response);
  }

  std::atomic<int> streams_{0};
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> received_ ABSL_GUARDED_BY(mu_);
  std::string refuse_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> seen_ ABSL_GUARDED_BY(mu_);
};

std::string Le(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

class QuantizeModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() / (std::string("quantd_qm_") + info->name() +
                                     "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    server_->Shutdown();
    fs::remove_all(dir_);
  }

  std::shared_ptr<grpc::Channel> Channel() {
    return server_->InProcessChannel(grpc::ChannelArguments());
  }

  std::string Path(const std::string& name) const {
    return (dir_ / name).string();
  }

  // Writes a model whose float tensors hold seeded random values.
  struct Spec {
    std::string name, dtype;
    std::vector<int64_t> shape;
  };
  std::string WriteModel(const std::vector<Spec>& specs, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<SafetensorsWriter::Entry> entries;
    std::vector<std::string> data;
    for (const Spec& s : specs) {
      entries.push_back({s.name, s.dtype, s.shape});
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      std::string bytes;
      for (int64_t i = 0; i < n; ++i) {
        float x = normal(rng);
        if (s.dtype == "F32") {
          bytes.append(reinterpret_cast<const char*>(&x), 4);
        } else if (s.dtype == "BF16" || s.dtype == "F16") {
          uint16_t h = s.dtype == "BF16" ? FloatToBFloat16(x) : FloatToHalf(x);
          bytes.append(reinterpret_cast<const char*>(&h), 2);
        } else {  // I64
          int64_t v = i;
          bytes.append(reinterpret_cast<const char*>(&v), 8);
        }
      }
      data.push_back(bytes);
    }
    std::string path = Path("model.safetensors");
    auto writer = SafetensorsWriter::Create(path, entries, {{"format", "pt"}});
    EXPECT_TRUE(writer.ok()) << writer.status();
    for (size_t i = 0; i < specs.size(); ++i) {
      const auto* p = reinterpret_cast<const uint8_t*>(data[i].data());
      EXPECT_TRUE((*writer)->Write(specs[i].name, 0, {p, data[i].size()}).ok());
    }
    EXPECT_TRUE((*writer)->Finish().ok());
    return path;
  }

  QuantizeModelOptions Options(const std::string& model,
                               const std::string& out) {
    QuantizeModelOptions options;
    options.model = model;
    options.output = Path(out);
    options.channels = {Channel()};
    options.progress = ProgressStyle::kNone;
    return options;
  }

  const std::vector<Spec> kSpecs = {
      {"layers.0.mlp.weight", "F32", {64, 256}},
      {"layers.0.attn.weight", "BF16", {32, 128}},
      {"layers.0.norm.weight", "F32", {256}},
      {"embed.weight", "F16", {16, 384}},
      {"position_ids", "I64", {1, 10}},
      {"lm_head.weight", "F32", {8, 128}},
  };

  fs::path dir_;
  FakeQuantizer service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(QuantizeModelTest, WritesQuantizedModelAndReport) {
  std::string model = WriteModel(kSpecs, 7);
  QuantizeModelOptions options = Options(model, "out.safetensors");
  options.scheme = "int4_asym_g128";
  options.overrides = {"^lm_head=skip", "attn=int8"};
  absl::StatusOr<RunSummary> summary = QuantizeModel(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->num_failed, 0);
  EXPECT_EQ(summary->num_quantized, 3);
  EXPECT_EQ(summary->num_copied, 3);
  EXPECT_EQ(summary->output, options.output);

  auto out = SafetensorsFile::Open(options.output);
  ASSERT_TRUE(out.ok()) << out.status();
  auto in = SafetensorsFile::Open(model);
  ASSERT_TRUE(in.ok());
  // Quantized, asymmetric per group: qweight, scales, zero_points.
  const SafetensorsTensor* q = (*out)->Find("layers.0.mlp.weight.qweight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, "U8");
  EXPECT_EQ(q->shape, (std::vector<int64_t>{64 * 256 / 2}));
  const SafetensorsTensor* s = (*out)->Find("layers.0.mlp.weight.scales");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->dtype, "F32");
  EXPECT_EQ(s->shape, (std::vector<int64_t>{64, 2}));
  const SafetensorsTensor* z = (*out)->Find("layers.0.mlp.weight.zero_points");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->shape, (std::vector<int64_t>{64, 2}));
  EXPECT_EQ((*out)->Find("layers.0.mlp.weight"), nullptr);
  // Override: int8 symmetric per channel, no zero points.
  EXPECT_NE((*out)->Find("layers.0.attn.weight.qweight"), nullptr);
  const SafetensorsTensor* as = (*out)->Find("layers.0.attn.weight.scales");
  ASSERT_NE(as, nullptr);
  EXPECT_EQ(as->shape, (std::vector<int64_t>{32, 1}));
  EXPECT_EQ((*out)->Find("layers.0.attn.weight.zero_points"), nullptr);
  // Copied unchanged: 1-D, I64, skipped by override.
  for (const char* name :
       {"layers.0.norm.weight", "position_ids", "lm_head.weight"}) {
    SCOPED_TRACE(name);
    const SafetensorsTensor* a = (*in)->Find(name);
    const SafetensorsTensor* b = (*out)->Find(name);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(a->dtype, b->dtype);
    EXPECT_EQ(a->shape, b->shape);
    ASSERT_EQ(a->data.size(), b->data.size());
    EXPECT_EQ(std::memcmp(a->data.data(), b->data.data(), a->data.size()), 0);
  }
  // Metadata.
  const auto& meta = (*out)->metadata();
  EXPECT_EQ(meta.at("format"), "pt");
  EXPECT_EQ(meta.at("quantd.format_version"), "2");
  EXPECT_TRUE(meta.contains("quantd.version"));
  absl::StatusOr<Json> layout =
      ParseJson(meta.at("quantd.layers.0.mlp.weight"));
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ((*layout)["scheme"], "int4_asym_g128");
  EXPECT_EQ((*layout)["bits"], 4);
  EXPECT_EQ((*layout)["group_size"], 128);
  EXPECT_EQ((*layout)["symmetric"], false);
  EXPECT_EQ((*layout)["shape"], Json({64, 256}));
  EXPECT_FALSE(meta.contains("quantd.lm_head.weight"));

  // The codes decode to what the kernels produce from the input.
  const SafetensorsTensor* w = (*in)->Find("layers.0.mlp.weight");
  auto want_layout = MakeLayout(*ParseScheme("int4_asym_g128"), w->shape);
  ASSERT_TRUE(want_layout.ok());
  QuantizedTensor want = AllocateQuantized(*want_layout);
  std::vector<float> f32(static_cast<size_t>(w->num_elements));
  std::memcpy(f32.data(), w->data.data(), w->data.size());
  ASSERT_TRUE(quantd::Quantize(f32.data(), want).ok());
  ASSERT_EQ(q->data.size(), want.codes.size());
  EXPECT_EQ(std::memcmp(q->data.data(), want.codes.data(), want.codes.size()),
            0);

  // Summary rows and report.
  ASSERT_EQ(summary->tensors.size(), kSpecs.size());
  EXPECT_EQ(summary->tensors.front().name, "embed.weight");  // name order
  for (const TensorSummary& t : summary->tensors) {
    if (t.action != TensorAction::kQuantized) continue;
    SCOPED_TRACE(t.name);
    EXPECT_GT(t.metrics.sqnr_db(), 10);
    EXPECT_GT(t.metrics.cosine_similarity(), 0.9);
    EXPECT_EQ(t.attempts, 1);
  }
  absl::StatusOr<Json> report =
      ParseJson(ReadFile(options.output + ".report.json"));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ((*report)["totals"]["tensors"], 6);
  EXPECT_EQ((*report)["totals"]["failed"], 0);
  EXPECT_EQ((*report)["tensors"].size(), 6u);
  EXPECT_EQ((*report)["servers"][0]["version"], "fake");
  std::string table = FormatSummaryTable(*summary);
  EXPECT_NE(table.find("int4_asym_g128"), std::string::npos) << table;
  EXPECT_NE(table.find("copy I64"), std::string::npos) << table;
  EXPECT_NE(table.find("tensors: 6 (3 quantized, 3 copied, 0 failed)"),
            std::string::npos)
      << table;
}

TEST_F(QuantizeModelTest, OutputIsTheSameForAnyStreamCount) {
  std::string model = WriteModel(kSpecs, 11);
  std::string first;
  for (int streams : {1, 3}) {
    for (int in_flight : {1, 4}) {
      SCOPED_TRACE(testing::Message()
                   << streams << " streams, " << in_flight << " in flight");
      QuantizeModelOptions options = Options(model, "o.safetensors");
      options.scheme = "int3_g64";
      options.streams_per_server = streams;
      options.max_in_flight_tensors = in_flight;
      options.channels = {Channel(), Channel()};  // two "servers"
      absl::StatusOr<RunSummary> summary = QuantizeModel(options);
      ASSERT_TRUE(summary.ok()) << summary.status();
      ASSERT_EQ(summary->num_failed, 0);
      std::string bytes = ReadFile(options.output);
      if (first.empty()) {
        first = bytes;
      } else {
        EXPECT_TRUE(bytes == first);
      }
    }
  }
}

TEST_F(QuantizeModelTest, FakeQuantWritesF32UnderTheOriginalNames) {
  std::string model = WriteModel(kSpecs, 3);
  QuantizeModelOptions options = Options(model, "fq.safetensors");
  options.scheme = "int8";
  options.fake_quant = true;
  absl::StatusOr<RunSummary> summary = QuantizeModel(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->num_failed, 0);
  auto out = SafetensorsFile::Open(options.output);
  ASSERT_TRUE(out.ok()) << out.status();
  const SafetensorsTensor* t = (*out)->Find("layers.0.attn.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, "F32");  // was BF16
  EXPECT_EQ(t->shape, (std::vector<int64_t>{32, 128}));
  EXPECT_EQ((*out)->Find("layers.0.attn.weight.qweight"), nullptr);
  EXPECT_EQ((*out)->tensors().size(), kSpecs.size());
}

TEST_F(QuantizeModelTest, BadTensorFailsAloneAndNothingIsWritten) {
  std::vector<Spec> specs = kSpecs;
  specs.push_back({"layers.1.bad.weight", "F32", {16, 128}});
  std::string model = WriteModel(specs, 5);
  QuantizeModelOptions options = Options(model, "bad.safetensors");
  options.max_in_flight_tensors = 4;  // the bad one shares its stream
  absl::StatusOr<RunSummary> summary = QuantizeModel(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->num_failed, 1);
  EXPECT_EQ(summary->num_quantized, 4);
  for (const TensorSummary& t : summary->tensors) {
    SCOPED_TRACE(t.name);
    if (t.name == "layers.1.bad.weight") {
      EXPECT_EQ(t.action, TensorAction::kFailed);
      EXPECT_EQ(t.status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(t.status.message().find("NaN"), std::string::npos);
    } else {
      EXPECT_NE(t.action, TensorAction::kFailed) << t.status;
    }
  }
  EXPECT_TRUE(summary->output.empty());
  EXPECT_FALSE(fs::exists(options.output));
  // Kept, with its manifest, for a rerun to resume.
  EXPECT_EQ(summary->partial, options.output + ".partial");
  EXPECT_TRUE(fs::exists(options.output + ".partial"));
  EXPECT_TRUE(fs::exists(options.output + ".partial.manifest"));
  absl::StatusOr<Json> report = ParseJson(ReadFile(summary->report));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ((*report)["totals"]["failed"], 1);
  bool listed = false;
  for (const Json& t : (*report)["tensors"]) {
    if (t["name"] == "layers.1.bad.weight") {
      listed = true;
      EXPECT_EQ(t["action"], "failed");
      EXPECT_EQ(t["status"], "INVALID_ARGUMENT");
    }
  }
  EXPECT_TRUE(listed);
  EXPECT_NE(FormatSummaryTable(*summary).find("FAILED: INVALID_ARGUMENT"),
            std::string::npos);
}

// A run that fails part of its tensors leaves OUTPUT.partial and its
// manifest; the same command again sends only what is missing, and the
// output is byte for byte a clean run's.
TEST_F(QuantizeModelTest, RerunResumesFromThePartialOutput) {
  std::string model = WriteModel(kSpecs, 21);
  QuantizeModelOptions clean = Options(model, "clean.safetensors");
  absl::StatusOr<RunSummary> reference = QuantizeModel(clean);
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_EQ(reference->num_failed, 0);

  QuantizeModelOptions options = Options(model, "resumed.safetensors");
  options.max_in_flight_tensors = 1;
  service_.Refuse("layers.0");
  absl::StatusOr<RunSummary> first = QuantizeModel(options);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->num_failed, 2);  // layers.0.mlp, layers.0.attn
  EXPECT_EQ(first->num_resumed, 0);
  ASSERT_TRUE(fs::exists(options.output + ".partial.manifest"));
  const int embed_sends = service_.Received("embed.weight");
  const int head_sends = service_.Received("lm_head.weight");

  service_.Refuse("");
  absl::StatusOr<RunSummary> second = QuantizeModel(options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->num_failed, 0);
  EXPECT_EQ(second->num_quantized, 4);
  EXPECT_EQ(second->num_resumed, 2);
  // The finished tensors were not sent again.
  EXPECT_EQ(service_.Received("embed.weight"), embed_sends);
  EXPECT_EQ(service_.Received("lm_head.weight"), head_sends);
  for (const TensorSummary& t : second->tensors) {
    SCOPED_TRACE(t.name);
    const bool kept = t.name == "embed.weight" || t.name == "lm_head.weight";
    EXPECT_EQ(t.resumed, kept);
    if (kept) {
      // Metrics come back from the manifest.
      const TensorSummary* before = nullptr;
      for (const TensorSummary& r : reference->tensors) {
        if (r.name == t.name) before = &r;
      }
      ASSERT_NE(before, nullptr);
      EXPECT_DOUBLE_EQ(t.metrics.mse(), before->metrics.mse());
      EXPECT_DOUBLE_EQ(t.metrics.sqnr_db(), before->metrics.sqnr_db());
    }
  }
  EXPECT_NE(FormatSummaryTable(*second).find("2 resumed"), std::string::npos);
  EXPECT_EQ(ReadFile(options.output), ReadFile(clean.output));
  EXPECT_FALSE(fs::exists(options.output + ".partial"));
  EXPECT_FALSE(fs::exists(options.output + ".partial.manifest"));
}

// What the manifest says is checked against the file and the input: a
// damaged part or a changed tensor is sent again; --no-resume starts over.
TEST_F(QuantizeModelTest, ResumeChecksPartsInputsAndCanBeTurnedOff) {
  std::vector<Spec> specs = {{"a.weight", "F32", {8, 64}},
                             {"b.weight", "F32", {8, 64}},
                             {"c.weight", "F32", {8, 64}},
                             {"z.refused.weight", "F32", {8, 64}}};
  std::string model = WriteModel(specs, 5);
  QuantizeModelOptions options = Options(model, "check.safetensors");
  service_.Refuse("refused");
  absl::StatusOr<RunSummary> first = QuantizeModel(options);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->num_failed, 1);

  // Damage a.weight's codes in the partial file: find them by their offsets.
  const std::string partial = options.output + ".partial";
  {
    std::string bytes = ReadFile(partial);
    uint64_t header_size = 0;
    std::memcpy(&header_size, bytes.data(), 8);
    absl::StatusOr<Json> header =
        ParseJson(bytes.substr(8, static_cast<size_t>(header_size)));
    ASSERT_TRUE(header.ok());
    const uint64_t begin =
        (*header)["a.weight.qweight"]["data_offsets"][0].get<uint64_t>();
    bytes[8 + header_size + begin] ^= 0x5a;
    std::ofstream(partial, std::ios::binary | std::ios::trunc) << bytes;
  }
  service_.Refuse("");
  const int a = service_.Received("a.weight");
  const int b = service_.Received("b.weight");
  const int c = service_.Received("c.weight");
  absl::StatusOr<RunSummary> second = QuantizeModel(options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->num_failed, 0);
  EXPECT_EQ(second->num_resumed, 2);  // b and c
  EXPECT_EQ(service_.Received("a.weight"), a + 1);
  EXPECT_EQ(service_.Received("b.weight"), b);
  EXPECT_EQ(service_.Received("c.weight"), c);

  // A finished run leaves nothing to resume: everything is sent again.
  absl::StatusOr<RunSummary> third = QuantizeModel(options);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->num_resumed, 0);
  EXPECT_EQ(service_.Received("b.weight"), b + 1);

  // An interrupted run, then a rerun with different input values (same
  // plan): nothing matches, everything is sent.
  service_.Refuse("refused");
  ASSERT_TRUE(QuantizeModel(options).ok());
  WriteModel(specs, 6);
  service_.Refuse("");
  absl::StatusOr<RunSummary> changed = QuantizeModel(options);
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_EQ(changed->num_resumed, 0);
  EXPECT_EQ(changed->num_failed, 0);

  // --no-resume starts over even when the partial output would match.
  service_.Refuse("refused");
  ASSERT_TRUE(QuantizeModel(options).ok());
  service_.Refuse("");
  options.resume = false;
  absl::StatusOr<RunSummary> fresh = QuantizeModel(options);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->num_resumed, 0);
  EXPECT_EQ(fresh->num_quantized, 4);
}

// A server that refuses every stream (UNAVAILABLE) is marked down and its
// tensors move to the one that works; one that does not answer at start is
// left out. The output is the same as with the good server alone.
TEST_F(QuantizeModelTest, TensorsMoveAwayFromAServerThatIsDown) {
  std::string model = WriteModel(kSpecs, 33);
  QuantizeModelOptions clean = Options(model, "one.safetensors");
  absl::StatusOr<RunSummary> reference = QuantizeModel(clean);
  ASSERT_TRUE(reference.ok()) << reference.status();

  FakeQuantizer draining;
  draining.draining = true;
  grpc::ServerBuilder builder;
  builder.RegisterService(&draining);
  std::unique_ptr<grpc::Server> second = builder.BuildAndStart();
  ASSERT_NE(second, nullptr);
  QuantizeModelOptions options = Options(model, "moved.safetensors");
  options.channels = {
      second->InProcessChannel(grpc::ChannelArguments()), Channel(),
      grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials())};
  options.connect_timeout_seconds = 1;
  options.max_in_flight_tensors = 1;
  // The good server is slow, so its two streams cannot take every tensor
  // before the draining server's streams have each been given one, however
  // the threads are scheduled.
  service_.answer_delay_ms = 300;
  absl::StatusOr<RunSummary> summary = QuantizeModel(options);
  service_.answer_delay_ms = 0;
  second->Shutdown();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->num_failed, 0);
  EXPECT_EQ(summary->num_quantized, 4);
  ASSERT_EQ(summary->down_servers.size(), 1u);
  EXPECT_EQ(summary->down_servers[0].address, "channel2");
  EXPECT_EQ(summary->down_servers[0].status.code(),
            absl::StatusCode::kUnavailable);
  EXPECT_GT(draining.streams(), 0);  // it was tried
  int moved = 0;
  for (const TensorSummary& t : summary->tensors) {
    if (t.action != TensorAction::kQuantized) continue;
    EXPECT_EQ(t.server, "channel1") << t.name;
    if (t.moved) {
      ++moved;
      EXPECT_GE(t.attempts, 2) << t.name;
    }
  }
  EXPECT_GT(moved, 0);
  EXPECT_NE(FormatSummaryTable(*summary).find("(moved)"), std::string::npos);
  EXPECT_NE(FormatSummaryTable(*summary).find("server left out"),
            std::string::npos);
  EXPECT_EQ(ReadFile(options.output), ReadFile(clean.output));
}

TEST_F(QuantizeModelTest, TransientErrorsAndBadChecksumsAreRetried) {
  std::vector<Spec> specs = {{"a.flaky.weight", "F32", {8, 64}},
                             {"b.corrupt.weight", "F32", {8, 64}},
                             {"c.weight", "F32", {8, 64}}};
  std::string model = WriteModel(specs, 9);
  QuantizeModelOptions options = Options(model, "retry.safetensors");
  // One tensor in flight per stream: a stream ended by the flaky tensor's
  // UNAVAILABLE then never carries another tensor, whose resend would count
  // as one more attempt depending on timing.
  options.max_in_flight_tensors = 1;
  absl::StatusOr<RunSummary> summary = QuantizeModel(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->num_failed, 0);
  for (const TensorSummary& t : summary->tensors) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.action, TensorAction::kQuantized) << t.status;
    if (t.name != "c.weight") {
      EXPECT_EQ(t.attempts, 2);
    }
  }
  EXPECT_TRUE(fs::exists(options.output));
}

TEST_F(QuantizeModelTest, SchemeThatDoesNotFitFailsTheTensor) {
  std::string model = WriteModel({{"w", "F32", {4, 100}}}, 1);
  QuantizeModelOptions options = Options(model, "nofit.safetensors");
  options.scheme = "int4_g128";  // 128 does not divide 100
  absl::StatusOr<RunSummary> summary = QuantizeModel(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->num_failed, 1);
  EXPECT_EQ(summary->tensors[0].status.code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_NE(summary->tensors[0].status.message().find("\"w\""),
            std::string::npos);
  EXPECT_EQ(service_.streams(), 0);  // nothing was sent
}

TEST_F(QuantizeModelTest, TensorOverTheServerLimitFailsWithoutBeingSent) {
  service_.max_tensor_bytes = 1000;
  std::string model = WriteModel({{"big", "F32", {4, 128}}}, 1);
  absl::StatusOr<RunSummary> summary =
      QuantizeModel(Options(model, "big.safetensors"));
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->num_failed, 1);
  EXPECT_EQ(summary->tensors[0].status.code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_NE(summary->tensors[0].status.message().find("max_tensor_bytes=1000"),
            std::string::npos)
      << summary->tensors[0].status;
  EXPECT_EQ(service_.streams(), 0);
}

TEST_F(QuantizeModelTest, SetupErrors) {
  std::string model = WriteModel({{"w", "F32", {4, 128}}}, 1);
  QuantizeModelOptions options = Options(model, "x.safetensors");
  options.scheme = "int99";
  EXPECT_EQ(QuantizeModel(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = Options(model, "x.safetensors");
  options.overrides = {"([=int8"};
  EXPECT_EQ(QuantizeModel(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = Options(Path("nope.safetensors"), "x.safetensors");
  EXPECT_EQ(QuantizeModel(options).status().code(),
            absl::StatusCode::kNotFound);
  options = Options(model, "x.safetensors");
  options.channels.clear();
  options.servers = {"127.0.0.1:1"};
  options.connect_timeout_seconds = 2;
  absl::Status unreachable = QuantizeModel(options).status();
  EXPECT_EQ(unreachable.code(), absl::StatusCode::kUnavailable) << unreachable;
  EXPECT_NE(unreachable.message().find("127.0.0.1:1"), std::string::npos);
}

TEST_F(QuantizeModelTest, ClientChecksChunkingAndReportsEachTensor) {
  service_.max_chunk_bytes = 4096;
  QuantdClient client(Channel());
  std::vector<float> values(3000);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = std::sin(static_cast<float>(i));
  }
  std::string bytes = Le(values);
  JobConfig config;
  config.chunk_bytes = 4096;
  config.scheme = *ParseScheme("int8_sym_channel");
  int sent = 0;
  auto source = [&]() -> std::optional<TensorRequest> {
    if (sent == 3) return std::nullopt;
    TensorRequest r;
    r.name = absl::StrCat("t", sent++);
    r.shape = {30, 100};
    r.data = {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
    return r;
  };
  std::vector<std::string> names;
  absl::Status status = client.RunJob(
      config, source,
      [&](const std::string& name, absl::StatusOr<TensorReply> reply) {
        ASSERT_TRUE(reply.ok()) << reply.status();
        EXPECT_EQ(reply->part(Part::kCodes).size(), 3000u);
        EXPECT_EQ(reply->part(Part::kScales).size(), 30u * 4);
        EXPECT_TRUE(reply->part(Part::kZeroPoints).empty());
        EXPECT_EQ(reply->layout.bits(), 8u);
        names.push_back(name);
      });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(names, (std::vector<std::string>{"t0", "t1", "t2"}));
}

TEST_F(QuantizeModelTest, ClientRefusesATensorWithTheWrongByteCount) {
  QuantdClient client(Channel());
  std::vector<uint8_t> bytes(10);
  bool once = false;
  absl::Status got;
  absl::Status status = client.RunJob(
      JobConfig(),
      [&]() -> std::optional<TensorRequest> {
        if (once) return std::nullopt;
        once = true;
        TensorRequest r;
        r.name = "w";
        r.shape = {2, 2};
        r.data = bytes;
        return r;
      },
      [&](const std::string&, absl::StatusOr<TensorReply> reply) {
        got = reply.status();
      });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(got.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(got.message().find("has 10 bytes"), std::string::npos) << got;
}

}  // namespace
}  // namespace quantd

#include "server/assembler.h"

#include <cmath>
#include <limits>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "gtest/gtest.h"
#include "kernels/ggml_formats.h"

namespace quantd {
namespace {

using Req = v1::QuantizeRequest;

Req Start(const std::string& format = "int8", bool symmetric = true) {
  Req r;
  r.mutable_start()->mutable_scheme()->set_format(format);
  r.mutable_start()->mutable_scheme()->set_symmetric(symmetric);
  return r;
}

Req Header(const std::string& name, std::vector<uint64_t> shape,
           v1::DType dtype = v1::DTYPE_F32) {
  Req r;
  r.mutable_header()->set_name(name);
  r.mutable_header()->set_dtype(dtype);
  for (uint64_t d : shape) r.mutable_header()->add_shape(d);
  return r;
}

Req Chunk(uint64_t offset, size_t bytes) {
  Req r;
  r.mutable_chunk()->set_offset(offset);
  r.mutable_chunk()->set_data(std::string(bytes, '\0'));
  return r;
}

Req End() {
  Req r;
  r.mutable_end();
  return r;
}

// Feeds `requests`; returns the first error, or the Finish() status.
absl::Status Feed(std::vector<Req> requests, AssemblerLimits limits = {}) {
  StreamAssembler a(limits);
  for (Req& r : requests) {
    absl::StatusOr<StreamAssembler::Event> ev = a.Consume(r);
    if (!ev.ok()) return ev.status();
  }
  return a.Finish();
}

TEST(AssemblerTest, AcceptsWellFormedStream) {
  StreamAssembler a({});
  std::vector<Req> reqs = {Start(), Header("w", {2, 4}), Chunk(0, 16),
                           Chunk(16, 16), End()};
  std::vector<StreamAssembler::Event::Kind> kinds;
  std::unique_ptr<TensorInput> tensor;
  for (Req& r : reqs) {
    absl::StatusOr<StreamAssembler::Event> ev = a.Consume(r);
    ASSERT_TRUE(ev.ok()) << ev.status();
    kinds.push_back(ev->kind);
    if (ev->kind == StreamAssembler::Event::kHeader) {
      EXPECT_EQ(ev->name, "w");
      EXPECT_GE(ev->working_set_bytes, 32);
    }
    if (ev->tensor) tensor = std::move(ev->tensor);
  }
  EXPECT_TRUE(a.Finish().ok());
  ASSERT_NE(tensor, nullptr);
  EXPECT_EQ(tensor->name, "w");
  EXPECT_EQ(tensor->bytes, 32);
  EXPECT_EQ(tensor->layout.rows, 2);
  EXPECT_EQ(tensor->layout.row_length, 4);
  EXPECT_EQ(kinds.front(), StreamAssembler::Event::kStart);
  EXPECT_EQ(kinds.back(), StreamAssembler::Event::kTensor);
}

TEST(AssemblerTest, CopiesChunkBytesInOrder) {
  StreamAssembler a({});
  std::vector<Req> reqs = {Start(), Header("w", {3}), Chunk(0, 4), Chunk(4, 8),
                           End()};
  const float values[3] = {1.5f, -2.0f, 3.25f};
  reqs[2].mutable_chunk()->set_data(reinterpret_cast<const char*>(values), 4);
  reqs[3].mutable_chunk()->set_data(reinterpret_cast<const char*>(values) + 4, 8);
  std::unique_ptr<TensorInput> tensor;
  for (Req& r : reqs) {
    auto ev = a.Consume(r);
    ASSERT_TRUE(ev.ok()) << ev.status();
    if (ev->tensor) tensor = std::move(ev->tensor);
  }
  ASSERT_NE(tensor, nullptr);
  EXPECT_EQ(0, std::memcmp(tensor->storage.data(), values, sizeof(values)));
}

TEST(AssemblerTest, PerTensorSchemeOverridesDefault) {
  StreamAssembler a({});
  Req start = Start("int8");
  Req header = Header("w", {4, 8});
  
  header.mutable_header()->mutable_scheme()->set_format("int4");
  header.mutable_header()->mutable_scheme()->set_granularity(
      v1::GRANULARITY_PER_GROUP);
  header.mutable_header()->mutable_scheme()->set_group_size(4);
  ASSERT_TRUE(a.Consume(start).ok());
  ASSERT_TRUE(a.Consume(header).ok());
  Req chunk = Chunk(0, 128);
  ASSERT_TRUE(a.Consume(chunk).ok());
  Req end = End();
  auto ev = a.Consume(end);
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->tensor->layout.bits, 4);
  EXPECT_EQ(ev->tensor->layout.group_size, 4);
  EXPECT_EQ(ev->tensor->layout.num_groups, 8);
}

struct BadCase {
  const char* name;
  std::vector<Req> requests;
  absl::StatusCode code;
  const char* message_part;
};

TEST(AssemblerTest, EveryMalformedInputGetsItsStatus) {
  AssemblerLimits small;
  small.max_tensor_bytes = 1024;
  small.max_chunk_bytes = 64;
  Req header_with_bad_scheme = Header("w", {4, 6});
  
  header_with_bad_scheme.mutable_header()->mutable_scheme()->set_format("int4");
  header_with_bad_scheme.mutable_header()->mutable_scheme()->set_granularity(
      v1::GRANULARITY_PER_GROUP);
  header_with_bad_scheme.mutable_header()->mutable_scheme()->set_group_size(4);
  Req header_unknown_format = Header("w", {4});
  
  header_unknown_format.mutable_header()->mutable_scheme()->set_format("int99");
  Req empty_request;

  const std::vector<BadCase> cases = {
      {"data before start", {Header("w", {4})}, absl::StatusCode::kInvalidArgument,
       "first message"},
      {"two starts", {Start(), Start()}, absl::StatusCode::kInvalidArgument,
       "twice"},
      {"unknown default format", {Start("float7")},
       absl::StatusCode::kInvalidArgument, "float7"},
      {"chunk before header", {Start(), Chunk(0, 4)},
       absl::StatusCode::kInvalidArgument, "no header"},
      {"end before header", {Start(), End()}, absl::StatusCode::kInvalidArgument,
       "no header"},
      {"two headers", {Start(), Header("a", {4}), Header("b", {4})},
       absl::StatusCode::kInvalidArgument, "tensor a"},
      {"empty name", {Start(), Header("", {4})},
       absl::StatusCode::kInvalidArgument, "name is empty"},
      {"duplicate name",
       {Start(), Header("a", {1}), Chunk(0, 4), End(), Header("a", {1})},
       absl::StatusCode::kInvalidArgument, "twice"},
      {"unknown dtype", {Start(), Header("w", {4}, static_cast<v1::DType>(42))},
       absl::StatusCode::kInvalidArgument, "dtype"},
      {"unspecified dtype", {Start(), Header("w", {4}, v1::DTYPE_UNSPECIFIED)},
       absl::StatusCode::kInvalidArgument, "dtype"},
      {"zero dimension", {Start(), Header("w", {4, 0})},
       absl::StatusCode::kInvalidArgument, "dimension"},
      {"shape product overflows",
       {Start(), Header("w", {uint64_t{1} << 40, uint64_t{1} << 40})},
       absl::StatusCode::kInvalidArgument, "tensor w"},
      {"huge declared size", {Start(), Header("w", {1024, 1024})},
       absl::StatusCode::kResourceExhausted, "max_tensor_bytes=1024"},
      {"group does not divide row", {Start(), header_with_bad_scheme},
       absl::StatusCode::kInvalidArgument, "tensor w"},
      {"unknown per-tensor format", {Start(), header_unknown_format},
       absl::StatusCode::kInvalidArgument, "int99"},
      {"chunk over limit", {Start(), Header("w", {64}), Chunk(0, 65)},
       absl::StatusCode::kResourceExhausted, "max_chunk_bytes=64"},
      {"chunk out of order", {Start(), Header("w", {8}), Chunk(16, 16)},
       absl::StatusCode::kInvalidArgument, "offset 16"},
      {"overlapping chunk", {Start(), Header("w", {8}), Chunk(0, 16), Chunk(8, 16)},
       absl::StatusCode::kInvalidArgument, "offset 8"},
      {"too many bytes", {Start(), Header("w", {2}), Chunk(0, 12)},
       absl::StatusCode::kInvalidArgument, "holds 8 bytes"},
      {"too few bytes at end", {Start(), Header("w", {4}), Chunk(0, 12), End()},
       absl::StatusCode::kInvalidArgument, "need 16"},
      {"truncated stream", {Start(), Header("w", {4}), Chunk(0, 8)},
       absl::StatusCode::kInvalidArgument, "truncated"},
      {"no start at all", {}, absl::StatusCode::kInvalidArgument, "JobStart"},
      {"empty request", {Start(), empty_request},
       absl::StatusCode::kInvalidArgument, "no message kind"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    absl::Status s = Feed(c.requests, small);
    EXPECT_EQ(s.code(), c.code) << s;
    EXPECT_NE(s.message().find(c.message_part), absl::string_view::npos) << s;
  }
}

TEST(AssemblerTest, ChecksumsOfChunksAndWholeTensor) {
  std::string data(64, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13);
  const uint32_t crc_a = Crc32c(data.data(), 32);
  const uint32_t crc_b = Crc32c(data.data() + 32, 32);
  const uint32_t whole = Crc32c(data.data(), data.size());
  auto stream = [&](uint32_t chunk_a, uint32_t chunk_b, std::optional<uint32_t> total) {
    std::vector<Req> reqs = {Start(), Header("w", {16}), Chunk(0, 32), Chunk(32, 32), End()};
    if (total.has_value()) reqs[4].mutable_end()->set_crc32c(*total);
    reqs[2].mutable_chunk()->set_data(data.substr(0, 32));
    reqs[2].mutable_chunk()->set_crc32c(chunk_a);
    reqs[3].mutable_chunk()->set_data(data.substr(32));
    reqs[3].mutable_chunk()->set_crc32c(chunk_b);
    return Feed(reqs);
  };
  EXPECT_TRUE(stream(crc_a, crc_b, whole).ok());
  EXPECT_TRUE(stream(crc_a, crc_b, std::nullopt).ok());
  absl::Status bad_chunk = stream(crc_a, crc_b ^ 1, whole);
  EXPECT_EQ(bad_chunk.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad_chunk.message().find("tensor w: chunk at offset 32"),
            absl::string_view::npos) << bad_chunk;
  absl::Status bad_total = stream(crc_a, crc_b, whole ^ 0x80000000u);
  EXPECT_EQ(bad_total.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad_total.message().find("whole tensor"), absl::string_view::npos);
  // A chunk without a checksum is accepted as sent.
  std::vector<Req> plain = {Start(), Header("w", {8}), Chunk(0, 32), End()};
  EXPECT_TRUE(Feed(plain).ok());
}

TEST(AssemblerTest, AcceptsF16AndBF16ByteCounts) {
  for (v1::DType dtype : {v1::DTYPE_F16, v1::DTYPE_BF16}) {
    SCOPED_TRACE(dtype);
    EXPECT_TRUE(Feed({Start(), Header("w", {3, 5}, dtype), Chunk(0, 30), End()}).ok());
    EXPECT_FALSE(Feed({Start(), Header("w", {3, 5}, dtype), Chunk(0, 60), End()}).ok());
  }
}

TEST(AssemblerTest, ScalarAndEmptyShapes) {
  // A 0-D tensor holds one element.
  EXPECT_TRUE(Feed({Start(), Header("s", {}), Chunk(0, 4), End()}).ok());
}

Req WithImportance(Req header, const std::vector<float>& weights) {
  for (float w : weights) header.mutable_header()->add_importance(w);
  return header;
}

// Opens one tensor of `shape` under `format` with `weights`; the header's
// status, and the tensor when the whole stream is accepted.
absl::Status OpenBlockTensor(const std::string& format,
                             std::vector<uint64_t> shape,
                             const std::vector<float>& weights,
                             std::unique_ptr<TensorInput>* tensor = nullptr,
                             int64_t* working_set_bytes = nullptr) {
  StreamAssembler a({});
  Req start = Start(format);
  if (auto ev = a.Consume(start); !ev.ok()) return ev.status();
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  Req header = WithImportance(Header("w", std::move(shape)), weights);
  auto opened = a.Consume(header);
  if (!opened.ok()) return opened.status();
  if (working_set_bytes != nullptr) {
    *working_set_bytes = opened->working_set_bytes;
  }
  Req chunk = Chunk(0, static_cast<size_t>(n * 4));
  if (auto ev = a.Consume(chunk); !ev.ok()) return ev.status();
  Req end = End();
  auto ev = a.Consume(end);
  if (!ev.ok()) return ev.status();
  if (tensor != nullptr) *tensor = std::move(ev->tensor);
  return a.Finish();
}

TEST(AssemblerTest, BlockFormatTensorsCarryTheirImportanceWeights) {
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const auto row = static_cast<uint64_t>(2 * f.block_size);
    std::vector<float> weights(row);
    for (size_t i = 0; i < weights.size(); ++i) {
      weights[i] = 0.25f * static_cast<float>(i % 5);
    }
    // What the kernels say about weights for this format decides.
    std::vector<float> x(row, 1.0f);
    std::vector<uint8_t> bytes(static_cast<size_t>(2 * f.block_bytes));
    const absl::Status local = GgmlQuantize(
        f, x.data(), 1, static_cast<int64_t>(row), weights.data(), bytes.data());
    std::unique_ptr<TensorInput> tensor;
    absl::Status s = OpenBlockTensor(f.name, {3, row}, weights, &tensor);
    ASSERT_EQ(s.code(), local.code()) << s;
    if (!s.ok()) {
      EXPECT_NE(s.message().find("tensor w"), std::string::npos) << s;
      continue;
    }
    ASSERT_NE(tensor, nullptr);
    EXPECT_EQ(tensor->importance, weights);
    EXPECT_TRUE(tensor->layout.IsBlockFormat());
    EXPECT_EQ(tensor->layout.block_bytes, f.block_bytes);
    // Without weights every format is accepted and holds none.
    ASSERT_TRUE(OpenBlockTensor(f.name, {3, row}, {}, &tensor).ok());
    EXPECT_TRUE(tensor->importance.empty());
  }
}

TEST(AssemblerTest, BadImportanceWeightsAreInvalidArgumentNamingTheTensor) {
  const std::vector<float> ones(32, 1.0f);
  std::vector<float> with_nan = ones;
  with_nan[7] = std::nanf("");
  std::vector<float> with_inf = ones;
  with_inf[3] = HUGE_VALF;
  std::vector<float> negative = ones;
  negative[31] = -0.5f;
  struct Case {
    const char* what;
    std::string format;
    std::vector<float> weights;
    const char* message_part;
  };
  const Case cases[] = {
      {"too few", "Q8_0", std::vector<float>(31, 1.0f), "31 importance"},
      {"too many", "IQ4_NL", std::vector<float>(64, 1.0f), "row length is 32"},
      {"nan", "IQ4_NL", with_nan, "weight 7"},
      {"inf", "Q8_0", with_inf, "weight 3"},
      {"negative", "IQ4_NL", negative, "weight 31"},
      {"int scheme", "int4", ones, "only ggml block formats"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    absl::Status s = OpenBlockTensor(c.format, {2, 32}, c.weights);
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("tensor w"), std::string::npos) << s;
    EXPECT_NE(s.message().find(c.message_part), std::string::npos) << s;
  }
}

TEST(AssemblerTest, BlockFormatRowNotWholeBlocksIsInvalidArgument) {
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const auto row = static_cast<uint64_t>(f.block_size + 4);
    absl::Status s = OpenBlockTensor(f.name, {2, row}, {});
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("tensor w"), std::string::npos) << s;
    EXPECT_NE(s.message().find(absl::StrCat(row)), std::string::npos) << s;
    EXPECT_NE(s.message().find(absl::StrCat(f.block_size)), std::string::npos)
        << s;
  }
}

TEST(AssemblerTest, WireSchemeOfABlockFormatIgnoresIntOptions) {
  // proto3 leaves symmetric false and the granularity unset; a block format
  // takes neither, in any spelling.
  Req start;
  auto* scheme = start.mutable_start()->mutable_scheme();
  scheme->set_format("q4_0");
  scheme->set_symmetric(false);
  scheme->set_granularity(v1::GRANULARITY_PER_GROUP);
  scheme->set_group_size(7);
  StreamAssembler a({});
  ASSERT_TRUE(a.Consume(start).ok());
  Req header = Header("w", {2, 64});
  auto ev = a.Consume(header);
  ASSERT_TRUE(ev.ok()) << ev.status();
  Req chunk = Chunk(0, 2 * 64 * 4);
  ASSERT_TRUE(a.Consume(chunk).ok());
  Req end = End();
  ev = a.Consume(end);
  ASSERT_TRUE(ev.ok()) << ev.status();
  const Layout& layout = ev->tensor->layout;
  EXPECT_EQ(layout.scheme.format, "Q4_0");
  EXPECT_EQ(layout.packed_bytes, 2 * 2 * 18);
  EXPECT_EQ(layout.num_groups, 0);
}

TEST(AssemblerTest, BlockFormatWorkingSetCoversDequantizedValues) {
  int64_t working_set = 0;
  ASSERT_TRUE(OpenBlockTensor("Q4_0", {4, 64}, {}, nullptr, &working_set).ok());
  const int64_t n = 4 * 64;
  // Input, the dequantized values used for the metrics, the ggml bytes and
  // the importance weights, even for a packed-only output.
  EXPECT_GE(working_set, 4 * n + 4 * n + 4 * 2 * 18 + 4 * 64);
  EXPECT_EQ(working_set,
            WorkingSetBytes(*MakeLayout(*ParseScheme("Q4_0"), {4, 64}),
                            DType::kF32, OutputKind::kPacked));
}

// ---------------------------------------------------------------------------
// Calibration sets.

Req CalHeader(const std::string& name, uint64_t features,
              v1::CalibrationKind kind = v1::CALIBRATION_KIND_ACTIVATIONS,
              v1::DType dtype = v1::DTYPE_F32, uint64_t tokens = 0) {
  Req r;
  auto* h = r.mutable_calibration_header();
  h->set_name(name);
  h->set_kind(kind);
  h->set_dtype(dtype);
  h->set_features(features);
  h->set_tokens(tokens);
  return r;
}

Req CalChunk(uint64_t offset, std::string data) {
  Req r;
  r.mutable_calibration_chunk()->set_offset(offset);
  r.mutable_calibration_chunk()->set_data(std::move(data));
  return r;
}

Req CalEnd() {
  Req r;
  r.mutable_calibration_end();
  return r;
}

std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

Req HeaderUsing(const std::string& name, std::vector<uint64_t> shape,
                const std::string& set) {
  Req r = Header(name, std::move(shape));
  r.mutable_header()->set_calibration(set);
  return r;
}

TEST(AssemblerCalibrationTest, ActivationsSetThenTensorsThatUseIt) {
  StreamAssembler a({});
  const std::vector<float> rows = {1, 2, 3, 4, 5, 6, 7, 8};  // 2 rows of 4
  std::vector<Req> reqs = {Start(),
                           CalHeader("x", 4),
                           CalChunk(0, Bytes(rows)),
                           CalChunk(32, Bytes({9, 10, 11, 12})),
                           CalEnd(),
                           HeaderUsing("q", {2, 4}, "x"),
                           Chunk(0, 32),
                           End(),
                           HeaderUsing("k", {3, 4}, "x"),
                           Chunk(0, 48),
                           End()};
  std::vector<StreamAssembler::Event> events;
  for (Req& r : reqs) {
    absl::StatusOr<StreamAssembler::Event> ev = a.Consume(r);
    ASSERT_TRUE(ev.ok()) << ev.status();
    events.push_back(*std::move(ev));
  }
  EXPECT_TRUE(a.Finish().ok());
  ASSERT_EQ(events[1].kind, StreamAssembler::Event::kCalibrationHeader);
  EXPECT_EQ(events[1].name, "x");
  EXPECT_EQ(events[1].calibration.features, 4);
  EXPECT_EQ(events[1].calibration.kind, CalibrationKind::kActivations);
  EXPECT_EQ(events[1].working_set_bytes, CalibrationSetBytes(events[1].calibration));
  EXPECT_EQ(events[1].buffer_bytes, 0);
  ASSERT_EQ(events[2].kind, StreamAssembler::Event::kCalibrationChunk);
  EXPECT_EQ(events[2].data, Bytes(rows));  // moved out whole, in order
  EXPECT_EQ(events[2].working_set_bytes, CalibrationChunkBytes(DType::kF32, 32));
  EXPECT_EQ(events[3].data, Bytes({9, 10, 11, 12}));
  EXPECT_EQ(events[4].kind, StreamAssembler::Event::kCalibrationEnd);
  ASSERT_EQ(events[7].kind, StreamAssembler::Event::kTensor);
  EXPECT_EQ(events[7].tensor->calibration_name, "x");
  EXPECT_EQ(events[10].tensor->calibration_name, "x");
  // The tensor's working set covers measuring it against G.
  EXPECT_EQ(events[5].working_set_bytes,
            WorkingSetBytes(events[7].tensor->layout, DType::kF32,
                            OutputKind::kPacked, true));
  EXPECT_GT(events[5].working_set_bytes,
            WorkingSetBytes(events[7].tensor->layout, DType::kF32,
                            OutputKind::kPacked, false));
}

TEST(AssemblerCalibrationTest, GramAndImportanceBytesAreBufferedAnyHowSplit) {
  StreamAssembler a({});
  const std::vector<double> g = {4, 1, 1, 9};
  const std::string g_bytes(reinterpret_cast<const char*>(g.data()), 32);
  const std::vector<float> imp = {0.5f, 2, 0, 7};
  std::vector<Req> reqs = {
      Start(),
      CalHeader("g", 2, v1::CALIBRATION_KIND_GRAM, v1::DTYPE_UNSPECIFIED, 10),
      CalChunk(0, g_bytes.substr(0, 5)),
      CalChunk(5, g_bytes.substr(5)),
      CalEnd(),
      CalHeader("i", 4, v1::CALIBRATION_KIND_IMPORTANCE, v1::DTYPE_UNSPECIFIED, 3),
      CalChunk(0, Bytes(imp)),
      CalEnd()};
  std::vector<StreamAssembler::Event> events;
  for (Req& r : reqs) {
    absl::StatusOr<StreamAssembler::Event> ev = a.Consume(r);
    ASSERT_TRUE(ev.ok()) << ev.status();
    events.push_back(*std::move(ev));
  }
  EXPECT_EQ(events[1].buffer_bytes, 32);
  EXPECT_EQ(events[1].calibration.tokens, 10);
  EXPECT_EQ(events[2].kind, StreamAssembler::Event::kNone);  // buffered
  EXPECT_EQ(events[4].payload.gram, g);
  EXPECT_EQ(events[5].buffer_bytes, 16);
  EXPECT_EQ(events[7].payload.importance, imp);
}

TEST(AssemblerCalibrationTest, EveryMalformedSetGetsItsStatus) {
  const std::string row(16, '\0');  // one row of 4 f32 zeros
  std::vector<float> nan_rows(8, 1.0f);
  nan_rows[6] = std::numeric_limits<float>::quiet_NaN();
  const uint16_t half_inf[4] = {0, 0x7C00, 0, 0};
  const std::string half_inf_bytes(reinterpret_cast<const char*>(half_inf), 8);
  const uint16_t bf16_nan[4] = {0x7FC0, 0, 0, 0};
  const std::string bf16_nan_bytes(reinterpret_cast<const char*>(bf16_nan), 8);
  Req crc_chunk = CalChunk(0, row);
  crc_chunk.mutable_calibration_chunk()->set_crc32c(Crc32c(row.data(), 16) ^ 1);
  Req crc_end = CalEnd();
  crc_end.mutable_calibration_end()->set_crc32c(Crc32c(row.data(), 16) + 1);
  Req bad_range = HeaderUsing("w", {2, 4}, "x");
  bad_range.mutable_header()->mutable_activation_range()->set_method(
      v1::RANGE_METHOD_PERCENTILE);
  bad_range.mutable_header()->mutable_activation_range()->set_percentile(20);
  Req percentile_minmax = Start();
  percentile_minmax.mutable_start()->mutable_options()
      ->mutable_activation_range()->set_percentile(99);
  Req histograms_gram =
      CalHeader("g", 2, v1::CALIBRATION_KIND_GRAM, v1::DTYPE_UNSPECIFIED, 1);
  histograms_gram.mutable_calibration_header()->set_channel_histograms(true);
  const std::vector<BadCase> cases = {
      {"duplicate set", {Start(), CalHeader("x", 4), CalChunk(0, row), CalEnd(),
                         CalHeader("x", 4)},
       absl::StatusCode::kInvalidArgument, "calibration set 'x': name sent twice"},
      {"set inside a tensor", {Start(), Header("w", {2, 4}), CalHeader("x", 4)},
       absl::StatusCode::kInvalidArgument, "tensor w: calibration set 'x' opened"},
      {"tensor inside a set", {Start(), CalHeader("x", 4), Header("w", {2, 4})},
       absl::StatusCode::kInvalidArgument, "calibration set 'x': header of tensor"},
      {"tensor chunk inside a set", {Start(), CalHeader("x", 4), Chunk(0, 16)},
       absl::StatusCode::kInvalidArgument, "calibration set 'x': TensorChunk"},
      {"set chunk inside a tensor", {Start(), Header("w", {2, 4}), CalChunk(0, row)},
       absl::StatusCode::kInvalidArgument, "tensor w: CalibrationChunk"},
      {"set chunk without header", {Start(), CalChunk(0, row)},
       absl::StatusCode::kInvalidArgument, "without an open calibration set"},
      {"set end without header", {Start(), CalEnd()},
       absl::StatusCode::kInvalidArgument, "without an open calibration set"},
      {"set before JobStart", {CalHeader("x", 4)},
       absl::StatusCode::kInvalidArgument, "JobStart"},
      {"empty set name", {Start(), CalHeader("", 4)},
       absl::StatusCode::kInvalidArgument, "name is empty"},
      {"zero features", {Start(), CalHeader("x", 0)},
       absl::StatusCode::kInvalidArgument, "calibration set 'x': features 0"},
      {"too many features", {Start(), CalHeader("x", uint64_t{1} << 25)},
       absl::StatusCode::kInvalidArgument, "out of range"},
      {"unknown kind", {Start(), CalHeader("x", 4, static_cast<v1::CalibrationKind>(9))},
       absl::StatusCode::kInvalidArgument, "calibration set 'x': unknown kind"},
      {"unknown dtype", {Start(), CalHeader("x", 4, v1::CALIBRATION_KIND_ACTIVATIONS,
                                            v1::DTYPE_UNSPECIFIED)},
       absl::StatusCode::kInvalidArgument, "calibration set 'x'"},
      {"dtype with GRAM", {Start(), CalHeader("g", 2, v1::CALIBRATION_KIND_GRAM,
                                              v1::DTYPE_F32, 1)},
       absl::StatusCode::kInvalidArgument, "calibration set 'g': dtype must be unset"},
      {"tokens with ACTIVATIONS", {Start(), CalHeader("x", 4, v1::CALIBRATION_KIND_ACTIVATIONS,
                                                      v1::DTYPE_F32, 5)},
       absl::StatusCode::kInvalidArgument, "tokens must be 0"},
      {"no tokens with IMPORTANCE", {Start(), CalHeader("i", 4, v1::CALIBRATION_KIND_IMPORTANCE,
                                                        v1::DTYPE_UNSPECIFIED, 0)},
       absl::StatusCode::kInvalidArgument, "calibration set 'i': tokens 0"},
      {"channel histograms with GRAM", {Start(), histograms_gram},
       absl::StatusCode::kInvalidArgument, "channel_histograms"},
      {"not whole rows", {Start(), CalHeader("x", 4), CalChunk(0, std::string(20, '\0'))},
       absl::StatusCode::kInvalidArgument, "calibration set 'x': chunk of 20 bytes is not whole rows"},
      {"empty chunk", {Start(), CalHeader("x", 4), CalChunk(0, "")},
       absl::StatusCode::kInvalidArgument, "not whole rows"},
      {"offset gap", {Start(), CalHeader("x", 4), CalChunk(0, row), CalChunk(32, row)},
       absl::StatusCode::kInvalidArgument, "calibration set 'x': chunk offset 32 but 16"},
      {"NaN row", {Start(), CalHeader("x", 4), CalChunk(0, Bytes(nan_rows))},
       absl::StatusCode::kInvalidArgument,
       "calibration set 'x': row 1 of the chunk (token 1), column 2 is NaN"},
      {"F16 Inf", {Start(), CalHeader("x", 4, v1::CALIBRATION_KIND_ACTIVATIONS, v1::DTYPE_F16),
                   CalChunk(0, std::string(8, '\0')), CalChunk(8, half_inf_bytes)},
       absl::StatusCode::kInvalidArgument, "(token 1), column 1"},
      {"BF16 NaN", {Start(), CalHeader("x", 4, v1::CALIBRATION_KIND_ACTIVATIONS, v1::DTYPE_BF16),
                    CalChunk(0, bf16_nan_bytes)},
       absl::StatusCode::kInvalidArgument, "calibration set 'x': row 0"},
      {"no rows", {Start(), CalHeader("x", 4), CalEnd()},
       absl::StatusCode::kInvalidArgument, "calibration set 'x': no rows"},
      {"chunk crc", {Start(), CalHeader("x", 4), crc_chunk},
       absl::StatusCode::kDataLoss, "calibration set 'x': chunk at offset 0"},
      {"whole-set crc", {Start(), CalHeader("x", 4), CalChunk(0, row), crc_end},
       absl::StatusCode::kDataLoss, "calibration set 'x': crc32c of the whole set"},
      {"GRAM too many bytes", {Start(), CalHeader("g", 2, v1::CALIBRATION_KIND_GRAM,
                                                  v1::DTYPE_UNSPECIFIED, 1),
                               CalChunk(0, std::string(40, '\0'))},
       absl::StatusCode::kInvalidArgument, "calibration set 'g': chunk ends at byte 40"},
      {"GRAM too few bytes", {Start(), CalHeader("g", 2, v1::CALIBRATION_KIND_GRAM,
                                                 v1::DTYPE_UNSPECIFIED, 1),
                              CalChunk(0, std::string(24, '\0')), CalEnd()},
       absl::StatusCode::kInvalidArgument, "calibration set 'g': CalibrationEnd after 24"},
      {"truncated set", {Start(), CalHeader("x", 4), CalChunk(0, row)},
       absl::StatusCode::kInvalidArgument, "calibration set 'x': stream ended inside"},
      {"unknown set", {Start(), HeaderUsing("w", {2, 4}, "nope")},
       absl::StatusCode::kInvalidArgument, "tensor w: calibration set 'nope' is unknown"},
      {"set named before it ends", {Start(), HeaderUsing("w", {2, 4}, "x"),
                                    CalHeader("x", 4)},
       absl::StatusCode::kInvalidArgument, "tensor w: calibration set 'x' is unknown"},
      {"features differ", {Start(), CalHeader("x", 4), CalChunk(0, row), CalEnd(),
                           HeaderUsing("w", {2, 8}, "x")},
       absl::StatusCode::kInvalidArgument,
       "tensor w: row length 8 differs from the 4 features of calibration set 'x'"},
      {"bad percentile", {Start(), CalHeader("x", 4), CalChunk(0, row), CalEnd(), bad_range},
       absl::StatusCode::kInvalidArgument, "tensor w: activation_range: percentile 20"},
      {"percentile without PERCENTILE", {percentile_minmax},
       absl::StatusCode::kInvalidArgument, "JobOptions.activation_range"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    absl::Status s = Feed(c.requests);
    EXPECT_EQ(s.code(), c.code) << s;
    EXPECT_NE(s.message().find(c.message_part), std::string::npos) << s;
  }
}

TEST(AssemblerCalibrationTest, ChunkOverLimitIsResourceExhausted) {
  AssemblerLimits limits;
  limits.max_chunk_bytes = 32;
  absl::Status s = Feed({Start(), CalHeader("x", 4), CalChunk(0, std::string(48, '\0'))},
                        limits);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("calibration set 'x'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("max_chunk_bytes=32"), std::string::npos) << s;
}

TEST(AssemblerCalibrationTest, RangeOptionsFromJobAndHeader) {
  StreamAssembler a({});
  Req start = Start();
  start.mutable_start()->mutable_options()->mutable_activation_range()->set_method(
      v1::RANGE_METHOD_KL);
  Req h1 = HeaderUsing("a", {1, 4}, "x");
  Req h2 = HeaderUsing("b", {1, 4}, "x");
  auto* r = h2.mutable_header()->mutable_activation_range();
  r->set_method(v1::RANGE_METHOD_PERCENTILE);
  r->set_percentile(99.5);
  r->set_asymmetric(true);
  std::vector<Req> reqs = {start, CalHeader("x", 4), CalChunk(0, std::string(16, '\0')),
                           CalEnd(), h1, Chunk(0, 16), End(), h2, Chunk(0, 16), End()};
  std::vector<std::unique_ptr<TensorInput>> tensors;
  for (Req& req : reqs) {
    absl::StatusOr<StreamAssembler::Event> ev = a.Consume(req);
    ASSERT_TRUE(ev.ok()) << ev.status();
    if (ev->tensor) tensors.push_back(std::move(ev->tensor));
  }
  ASSERT_EQ(tensors.size(), 2u);
  EXPECT_EQ(tensors[0]->activation_range.method, RangeMethod::kKl);
  EXPECT_TRUE(tensors[0]->activation_range.symmetric);
  EXPECT_EQ(tensors[1]->activation_range.method, RangeMethod::kPercentile);
  EXPECT_EQ(tensors[1]->activation_range.percentile, 99.5);
  EXPECT_FALSE(tensors[1]->activation_range.symmetric);
}

}  // namespace
}  // namespace quantd

#include "server/assembler.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/crc32c.h"
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
            TensorWorkingSetBytes(*MakeLayout(*ParseScheme("Q4_0"), {4, 64}),
                                  DType::kF32, OutputKind::kPacked));
}

}  // namespace
}  // namespace quantd

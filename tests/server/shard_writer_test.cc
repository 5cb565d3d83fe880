#include "server/shard_writer.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/crc32c.h"
#include "gtest/gtest.h"
#include "kernels/parts.h"
#include "proto/wire_convert.h"

namespace quantd {
namespace {

// Distinct bytes per part and position, so a part sent in another part's
// place, or at a wrong offset, shows.
std::vector<uint8_t> Pattern(size_t n, int seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = static_cast<uint8_t>(i * 7 + static_cast<size_t>(seed) * 31 + 1);
  }
  return v;
}

// An output for `scheme_text` on `shape` with every part the layout and
// `kind` imply filled (sizes from the table, as the job seals them).
TensorOutput MakeOutput(const std::string& scheme_text,
                        const std::vector<int64_t>& shape, OutputKind kind) {
  absl::StatusOr<Scheme> scheme = ParseScheme(scheme_text);
  EXPECT_TRUE(scheme.ok()) << scheme.status();
  absl::StatusOr<Layout> layout = MakeLayout(*scheme, shape);
  EXPECT_TRUE(layout.ok()) << layout.status();
  TensorOutput out;
  out.name = "t";
  out.layout = *layout;
  for (const PartSpec& spec : PartTable()) {
    const int64_t bytes = PartBytes(spec, out.layout, kind);
    if (bytes == 0) continue;
    std::vector<uint8_t> v =
        Pattern(static_cast<size_t>(bytes), static_cast<int>(spec.part));
    out.crc32c[spec.part] = Crc32c(v.data(), v.size());
    out.bytes_out += bytes;
    out.parts[spec.part] = PartBuffer::Adopt(std::move(v));
  }
  return out;
}

// What came out of a writer: each part reassembled, the result, counts.
struct Collected {
  std::map<Part, std::string> parts;
  std::vector<Part> order;  // parts in the order their first chunk came
  v1::TensorResult result;
  int results = 0;
  int chunks = 0;
};

// Drains `writer`, checking every chunk: the tensor's name, at most
// `max_chunk` bytes, a part the table knows, contiguous offsets, its own
// CRC-32C, and nothing after the result.
Collected Drain(ShardWriter& writer, int64_t max_chunk) {
  Collected c;
  v1::QuantizeResponse r;
  while (writer.Next(&r)) {
    if (r.has_result()) {
      ++c.results;
      c.result = r.result();
      EXPECT_EQ(r.result().tensor(), "t");
      continue;
    }
    EXPECT_EQ(c.results, 0) << "chunk after the result";
    ++c.chunks;
    const v1::ShardChunk& s = r.shard();
    EXPECT_EQ(s.tensor(), "t");
    EXPECT_GT(s.data().size(), 0u) << "empty chunk";
    EXPECT_LE(static_cast<int64_t>(s.data().size()), max_chunk);
    const PartSpec* spec = SpecOfWire(s.part());
    if (spec == nullptr) {
      ADD_FAILURE() << "unknown part " << s.part();
      continue;
    }
    if (c.order.empty() || c.order.back() != spec->part) {
      c.order.push_back(spec->part);
    }
    std::string& dst = c.parts[spec->part];
    EXPECT_EQ(s.offset(), dst.size()) << spec->name;
    EXPECT_EQ(s.crc32c(), Crc32c(s.data().data(), s.data().size()));
    dst.append(s.data());
  }
  return c;
}

std::string Bytes(const PartBuffer& b) {
  return std::string(b.bytes().begin(), b.bytes().end());
}

// Every family and output kind: each part the layout has arrives whole, in
// table order, each part once, bounded chunks; the result lists exactly the
// parts sent with their sizes and checksums.
TEST(ShardWriterTest, EveryPartOfEveryFamilyArrivesWholeInTableOrder) {
  struct Case {
    const char* scheme;
    std::vector<int64_t> shape;
  };
  const Case cases[] = {
      {"int4_asym_g32", {4, 64}},    {"int8", {3, 40}},
      {"q4_0", {3, 64}},             {"q4_k", {2, 256}},
      {"nf4_dq", {4, 256}},          {"ocp_mxfp4", {2, 64}},
      {"kmeans4_g64", {4, 128}},     {"hqq4", {4, 128}},
      {"int4_g32+awq", {4, 64}},     {"int4_g32+gptq(act_order)", {4, 64}},
      {"fp8_e4m3", {4, 32}},
  };
  for (const Case& test : cases) {
    for (OutputKind kind :
         {OutputKind::kPacked, OutputKind::kFakeQuant, OutputKind::kBoth}) {
      SCOPED_TRACE(::testing::Message()
                   << test.scheme << " output " << static_cast<int>(kind));
      TensorOutput out = MakeOutput(test.scheme, test.shape, kind);
      const TensorOutput want = out;  // shares the parts' bytes
      for (int64_t max_chunk : {int64_t{7}, int64_t{100}, int64_t{1} << 20}) {
        SCOPED_TRACE(max_chunk);
        ShardWriter writer(want, 0.25, max_chunk);
        const Collected c = Drain(writer, max_chunk);
        EXPECT_EQ(c.results, 1);
        EXPECT_TRUE(writer.done());
        v1::QuantizeResponse r;
        EXPECT_FALSE(writer.Next(&r));

        std::vector<Part> sent;
        for (const PartSpec& spec : PartTable()) {
          if (!want.parts[spec.part].empty()) sent.push_back(spec.part);
        }
        EXPECT_FALSE(sent.empty());
        EXPECT_EQ(c.order, sent) << "each part once, in table order";
        for (Part p : sent) {
          SCOPED_TRACE(SpecOf(p).name);
          ASSERT_TRUE(c.parts.count(p));
          EXPECT_EQ(c.parts.at(p), Bytes(want.parts[p]));
        }
        ASSERT_EQ(c.result.parts_size(), static_cast<int>(sent.size()));
        for (int i = 0; i < c.result.parts_size(); ++i) {
          const v1::PartInfo& info = c.result.parts(i);
          EXPECT_EQ(info.part(), PartToProto(sent[static_cast<size_t>(i)]));
          EXPECT_EQ(info.bytes(), want.parts[sent[static_cast<size_t>(i)]].size());
          EXPECT_EQ(info.crc32c(), want.crc32c[sent[static_cast<size_t>(i)]]);
        }
        EXPECT_EQ(c.result.bytes_out(), static_cast<uint64_t>(want.bytes_out));
        EXPECT_EQ(c.result.queue_seconds(), 0.25);
      }
    }
  }
}

TEST(ShardWriterTest, ChunkCountIsEachPartsCeilingOverTheBound) {
  TensorOutput out = MakeOutput("int4_asym_g32", {4, 64}, OutputKind::kBoth);
  // codes 128 B, scales 32 B, zero points 8 B, fake quant 1024 B.
  ShardWriter writer(std::move(out), 0, 100);
  const Collected c = Drain(writer, 100);
  EXPECT_EQ(c.chunks, 2 + 1 + 1 + 11);
}

TEST(ShardWriterTest, SymmetricHasNoZeroPointMessages) {
  ShardWriter writer(MakeOutput("int4", {2, 8}, OutputKind::kPacked), 0,
                     1 << 20);
  const Collected c = Drain(writer, 1 << 20);
  EXPECT_EQ(c.order, (std::vector<Part>{Part::kCodes, Part::kScales}));
  EXPECT_EQ(c.chunks, 2);
}

TEST(ShardWriterTest, ResultCarriesLayoutAndScalars) {
  TensorOutput out = MakeOutput("int4_asym", {3, 10}, OutputKind::kPacked);
  out.tensor_scale = 0.5f;
  out.scale_offset = -0.25f;
  out.bytes_in = 120;
  out.compute_seconds = 2.5;
  ShardWriter writer(std::move(out), 1.5, 1 << 20);
  const Collected c = Drain(writer, 1 << 20);
  const v1::TensorResult& result = c.result;
  EXPECT_EQ(result.layout().rows(), 3u);
  EXPECT_EQ(result.layout().row_length(), 10u);
  EXPECT_EQ(result.layout().bits(), 4u);
  EXPECT_TRUE(result.layout().has_zero_points());
  EXPECT_EQ(result.layout().tensor_scale(), 0.5f);
  EXPECT_EQ(result.layout().scale_offset(), -0.25f);
  EXPECT_EQ(result.bytes_in(), 120u);
  EXPECT_EQ(result.compute_seconds(), 2.5);
  EXPECT_EQ(result.queue_seconds(), 1.5);
}

TEST(ShardWriterTest, BlockFormatSendsOnlyCodesAndDescribesTheBlock) {
  ShardWriter writer(MakeOutput("q4_0", {3, 64}, OutputKind::kPacked), 0, 50);
  const Collected c = Drain(writer, 50);
  EXPECT_EQ(c.order, std::vector<Part>{Part::kCodes});
  EXPECT_EQ(c.parts.at(Part::kCodes).size(), 3u * 2 * 18);
  const v1::Layout& l = c.result.layout();
  EXPECT_EQ(l.scheme().format(), "Q4_0");
  EXPECT_EQ(l.packed_bytes(), 3u * 2 * 18);
  EXPECT_EQ(l.block_size(), 32u);
  EXPECT_EQ(l.block_bytes(), 18u);
  EXPECT_EQ(l.ggml_type(), 2u);  // GGML_TYPE_Q4_0
  EXPECT_EQ(l.num_scales(), 0u);
  EXPECT_EQ(l.bits(), 0u);
  EXPECT_FALSE(l.has_zero_points());
  ASSERT_EQ(c.result.parts_size(), 1);
  EXPECT_EQ(c.result.parts(0).part(), v1::ShardChunk::PART_CODES);
}

TEST(ShardWriterTest, IntLayoutHasNoBlockFields) {
  ShardWriter writer(MakeOutput("int4", {3, 10}, OutputKind::kPacked), 0,
                     1 << 20);
  const Collected c = Drain(writer, 1 << 20);
  EXPECT_EQ(c.result.layout().block_size(), 0u);
  EXPECT_EQ(c.result.layout().block_bytes(), 0u);
  EXPECT_EQ(c.result.layout().ggml_type(), 0u);
}

}  // namespace
}  // namespace quantd

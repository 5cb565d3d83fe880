#include "server/shard_writer.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/crc32c.h"
#include "kernels/quantize.h"

namespace quantd {
namespace {

TensorOutput MakeOutput(int64_t rows, int64_t cols, bool symmetric,
                        bool fake_quant) {
  Scheme scheme;
  scheme.format = "int4";
  scheme.symmetric = symmetric;
  absl::StatusOr<Layout> layout = MakeLayout(scheme, {rows, cols});
  EXPECT_TRUE(layout.ok());
  TensorOutput out;
  out.name = "t";
  out.quantized = AllocateQuantized(*layout);
  for (size_t i = 0; i < out.quantized.codes.size(); ++i) {
    out.quantized.codes[i] = static_cast<uint8_t>(i * 7);
  }
  if (fake_quant) out.fake_quant.assign(static_cast<size_t>(rows * cols), 0.5f);
  out.send_packed = true;
  return out;
}

// Reassembles parts from the messages, checking order and offsets.
struct Collected {
  std::string codes, scales, zero_points, fake_quant;
  int results = 0;
  int messages = 0;
};

Collected Drain(ShardWriter& writer, int64_t max_chunk) {
  Collected c;
  v1::QuantizeResponse r;
  int last_part = 0;
  while (writer.Next(&r)) {
    ++c.messages;
    if (r.has_result()) {
      ++c.results;
      EXPECT_EQ(r.result().tensor(), "t");
      continue;
    }
    EXPECT_EQ(c.results, 0) << "shard after result";
    const v1::ShardChunk& s = r.shard();
    EXPECT_EQ(s.tensor(), "t");
    EXPECT_LE(static_cast<int64_t>(s.data().size()), max_chunk);
    EXPECT_GE(s.part(), last_part) << "parts out of order";
    last_part = s.part();
    std::string* dst = s.part() == v1::ShardChunk::PART_CODES   ? &c.codes
                       : s.part() == v1::ShardChunk::PART_SCALES ? &c.scales
                       : s.part() == v1::ShardChunk::PART_ZERO_POINTS
                           ? &c.zero_points
                           : &c.fake_quant;
    EXPECT_EQ(s.offset(), dst->size());
    EXPECT_EQ(s.crc32c(), Crc32c(s.data().data(), s.data().size()));
    dst->append(s.data());
  }
  return c;
}

TEST(ShardWriterTest, SplitsEveryPartIntoBoundedChunksInOrder) {
  TensorOutput out = MakeOutput(16, 64, /*symmetric=*/false, /*fake_quant=*/true);
  const QuantizedTensor q = out.quantized;
  const std::vector<float> fq = out.fake_quant;
  ShardWriter writer(std::move(out), 0.25, 100);
  Collected c = Drain(writer, 100);
  EXPECT_EQ(c.results, 1);
  EXPECT_TRUE(writer.done());
  EXPECT_EQ(c.codes, std::string(q.codes.begin(), q.codes.end()));
  EXPECT_EQ(c.scales.size(), q.scales.size() * 4);
  EXPECT_EQ(c.zero_points.size(), q.zero_points.size());
  EXPECT_EQ(c.fake_quant.size(), fq.size() * 4);
}

TEST(ShardWriterTest, SymmetricHasNoZeroPointMessages) {
  ShardWriter writer(MakeOutput(2, 8, /*symmetric=*/true, false), 0, 1 << 20);
  Collected c = Drain(writer, 1 << 20);
  EXPECT_TRUE(c.zero_points.empty());
  EXPECT_TRUE(c.fake_quant.empty());
  EXPECT_EQ(c.messages, 3);  // codes, scales, result
}

TEST(ShardWriterTest, ResultCarriesLayout) {
  ShardWriter writer(MakeOutput(3, 10, false, false), 1.5, 1 << 20);
  v1::QuantizeResponse r;
  v1::TensorResult result;
  while (writer.Next(&r)) {
    if (r.has_result()) result = r.result();
  }
  EXPECT_EQ(result.layout().rows(), 3u);
  EXPECT_EQ(result.layout().row_length(), 10u);
  EXPECT_EQ(result.layout().bits(), 4u);
  EXPECT_TRUE(result.layout().has_zero_points());
  EXPECT_EQ(result.queue_seconds(), 1.5);
  EXPECT_FALSE(writer.Next(&r));
}

TEST(ShardWriterTest, BlockFormatSendsOnlyCodesAndDescribesTheBlock) {
  absl::StatusOr<Layout> layout = MakeLayout(*ParseScheme("q4_0"), {3, 64});
  ASSERT_TRUE(layout.ok()) << layout.status();
  TensorOutput out;
  out.name = "t";
  out.quantized = AllocateQuantized(*layout);
  ASSERT_EQ(out.quantized.codes.size(), 3u * 2 * 18);
  for (size_t i = 0; i < out.quantized.codes.size(); ++i) {
    out.quantized.codes[i] = static_cast<uint8_t>(i * 13);
  }
  out.metrics.bits_per_weight = layout->BitsPerWeight();
  ShardWriter writer(out, 0, 50);
  v1::QuantizeResponse r;
  v1::TensorResult result;
  Collected c;
  while (writer.Next(&r)) {
    if (r.has_result()) {
      result = r.result();
      continue;
    }
    ASSERT_EQ(r.shard().part(), v1::ShardChunk::PART_CODES);
    c.codes.append(r.shard().data());
  }
  EXPECT_EQ(c.codes, std::string(out.quantized.codes.begin(),
                                 out.quantized.codes.end()));
  const v1::Layout& l = result.layout();
  EXPECT_EQ(l.scheme().format(), "Q4_0");
  EXPECT_EQ(l.packed_bytes(), 3u * 2 * 18);
  EXPECT_EQ(l.block_size(), 32u);
  EXPECT_EQ(l.block_bytes(), 18u);
  EXPECT_EQ(l.ggml_type(), 2u);  // GGML_TYPE_Q4_0
  EXPECT_EQ(l.num_scales(), 0u);
  EXPECT_EQ(l.bits(), 0u);
  EXPECT_FALSE(l.has_zero_points());
  EXPECT_EQ(result.metrics().bits_per_weight(), 4.5);
  EXPECT_EQ(result.scales_crc32c(), 0u);
}

TEST(ShardWriterTest, IntLayoutHasNoBlockFields) {
  ShardWriter writer(MakeOutput(3, 10, true, false), 0, 1 << 20);
  v1::QuantizeResponse r;
  v1::TensorResult result;
  while (writer.Next(&r)) {
    if (r.has_result()) result = r.result();
  }
  EXPECT_EQ(result.layout().block_size(), 0u);
  EXPECT_EQ(result.layout().block_bytes(), 0u);
  EXPECT_EQ(result.layout().ggml_type(), 0u);
}

}  // namespace
}  // namespace quantd

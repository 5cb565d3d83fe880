#include "kernels/parts.h"

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ggml_formats.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

Layout LayoutOf(const std::string& text, const std::vector<int64_t>& shape) {
  absl::StatusOr<Scheme> scheme = ParseScheme(text);
  EXPECT_TRUE(scheme.ok()) << text << ": " << scheme.status();
  absl::StatusOr<Layout> layout = MakeLayout(*scheme, shape);
  EXPECT_TRUE(layout.ok()) << text << ": " << layout.status();
  return *layout;
}

int64_t Bytes(Part part, const Layout& layout,
              OutputKind kind = OutputKind::kPacked) {
  return PartBytes(SpecOf(part), layout, kind);
}

TEST(PartsTest, TableRowsAreInEnumOrderWithUniqueNamesAndWireValues) {
  ASSERT_EQ(PartTable().size(), kNumParts);
  std::set<std::string> names;
  std::set<int> wires;
  for (size_t i = 0; i < PartTable().size(); ++i) {
    const PartSpec& spec = PartTable()[i];
    EXPECT_EQ(static_cast<size_t>(spec.part), i);
    EXPECT_EQ(&SpecOf(spec.part), &spec);
    EXPECT_TRUE(names.insert(std::string(spec.name)).second) << spec.name;
    EXPECT_GT(spec.wire, 0) << spec.name;
    EXPECT_TRUE(wires.insert(spec.wire).second) << spec.name;
    EXPECT_EQ(SpecOfWire(spec.wire), &spec);
    EXPECT_NE(spec.count, nullptr);
    EXPECT_NE(spec.file_shape, nullptr);
  }
  EXPECT_EQ(SpecOfWire(0), nullptr);
  EXPECT_EQ(SpecOfWire(1000), nullptr);
}

// The int parts are the buffers AllocateQuantized sizes, byte for byte.
TEST(PartsTest, IntPartsAreTheQuantizedTensorsBuffers) {
  for (const char* text :
       {"int4_asym_g128", "int8", "int3_sym_tensor", "int2_asym_g1",
        "int4_g32+gptq(act_order)", "int4_g32+gptq(act_order,static_groups)",
        "int4_asym_g32+awq", "int8+smoothquant"}) {
    SCOPED_TRACE(text);
    const Layout layout = LayoutOf(text, {8, 256});
    const QuantizedTensor q = AllocateQuantized(layout);
    EXPECT_EQ(Bytes(Part::kCodes, layout),
              static_cast<int64_t>(q.codes.size()));
    EXPECT_EQ(Bytes(Part::kScales, layout),
              static_cast<int64_t>(4 * q.scales.size()));
    EXPECT_EQ(Bytes(Part::kZeroPoints, layout),
              static_cast<int64_t>(q.zero_points.size()));
    EXPECT_EQ(Bytes(Part::kGroupIndex, layout),
              static_cast<int64_t>(4 * q.group_index.size()));
    const bool channel_scales =
        layout.scheme.method.method == Method::kAwq ||
        layout.scheme.method.method == Method::kSmoothQuant;
    EXPECT_EQ(Bytes(Part::kChannelScales, layout), channel_scales ? 4 * 256 : 0);
    for (Part p : {Part::kBlockScales, Part::kSecondScales, Part::kCodebooks,
                   Part::kZeroPointsF32}) {
      EXPECT_EQ(Bytes(p, layout), 0) << SpecOf(p).name;
    }
  }
  // The example of the header.
  const Layout big = LayoutOf("int4_asym_g128", {4096, 4096});
  EXPECT_EQ(Bytes(Part::kCodes, big), 8388608);
  EXPECT_EQ(Bytes(Part::kScales, big), 524288);
  EXPECT_EQ(Bytes(Part::kZeroPoints, big), 131072);
}

// A ggml block format has its rows of ggml bytes and no other part.
TEST(PartsTest, BlockFormatsHaveOnlyCodes) {
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const int64_t row_length = 2 * int64_t{f.block_size};
    const Layout layout = LayoutOf(std::string(f.name), {3, row_length});
    EXPECT_EQ(Bytes(Part::kCodes, layout), 3 * *GgmlRowBytes(f, row_length));
    for (const PartSpec& spec : PartTable()) {
      if (spec.part == Part::kCodes || spec.part == Part::kFakeQuant) continue;
      EXPECT_EQ(PartBytes(spec, layout, OutputKind::kBoth), 0) << spec.name;
    }
  }
}

TEST(PartsTest, FloatCodebookAndHqqPartsFollowTheLayout) {
  const Layout nf4 = LayoutOf("nf4_dq", {4, 256});
  EXPECT_EQ(Bytes(Part::kBlockScales, nf4), nf4.num_block_scales);
  EXPECT_GT(nf4.num_block_scales, 0);
  EXPECT_EQ(Bytes(Part::kSecondScales, nf4), 4 * nf4.num_second_scales);
  EXPECT_GT(nf4.num_second_scales, 0);
  const Layout km = LayoutOf("kmeans4_g64", {4, 128});
  EXPECT_EQ(Bytes(Part::kCodebooks, km), 4 * 8 * 16);
  EXPECT_EQ(SpecOf(Part::kCodebooks).file_shape(km),
            (std::vector<int64_t>{8, 16}));
  const Layout hqq = LayoutOf("hqq4", {4, 128});
  EXPECT_TRUE(hqq.float_zero_points);
  EXPECT_EQ(Bytes(Part::kZeroPointsF32, hqq), 4 * hqq.num_groups);
  EXPECT_EQ(Bytes(Part::kZeroPoints, hqq), 0);
  EXPECT_EQ(SpecOf(Part::kZeroPointsF32).file_shape(hqq),
            (std::vector<int64_t>{4, 2}));
}

TEST(PartsTest, OutputKindDecidesWhatIsSent) {
  const Layout layout = LayoutOf("int4_asym_g32+awq", {4, 64});
  // Packed parts only with packed output, fake quant only with fake-quant
  // output, channel scales always.
  EXPECT_GT(Bytes(Part::kCodes, layout, OutputKind::kPacked), 0);
  EXPECT_EQ(Bytes(Part::kCodes, layout, OutputKind::kFakeQuant), 0);
  EXPECT_GT(Bytes(Part::kCodes, layout, OutputKind::kBoth), 0);
  EXPECT_EQ(Bytes(Part::kFakeQuant, layout, OutputKind::kPacked), 0);
  EXPECT_EQ(Bytes(Part::kFakeQuant, layout, OutputKind::kFakeQuant), 4 * 256);
  EXPECT_EQ(Bytes(Part::kFakeQuant, layout, OutputKind::kBoth), 4 * 256);
  for (OutputKind kind :
       {OutputKind::kPacked, OutputKind::kFakeQuant, OutputKind::kBoth}) {
    EXPECT_EQ(Bytes(Part::kChannelScales, layout, kind), 4 * 64);
  }
  EXPECT_EQ(SpecOf(Part::kFakeQuant).file_suffix, "");
  EXPECT_EQ(SpecOf(Part::kFakeQuant).file_shape(layout),
            (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(SpecOf(Part::kScales).file_shape(layout),
            (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(SpecOf(Part::kScales).file_shape(LayoutOf("int8_tensor", {4, 64})),
            std::vector<int64_t>{1});
}

TEST(PartsTest, AdoptKeepsTheKernelsBufferWithoutACopy) {
  std::vector<float> scales = {1.0f, -2.5f, 0.125f};
  const float* data = scales.data();
  const PartBuffer b = PartBuffer::Adopt(std::move(scales));
  EXPECT_EQ(reinterpret_cast<const void*>(b.bytes().data()),
            reinterpret_cast<const void*>(data));
  EXPECT_EQ(b.size(), 12u);
  EXPECT_EQ(b.Values<float>(), (std::vector<float>{1.0f, -2.5f, 0.125f}));
  const PartBuffer copy = b;  // shares the bytes
  EXPECT_EQ(copy.bytes().data(), b.bytes().data());
  EXPECT_TRUE(PartBuffer::Adopt(std::vector<uint8_t>{}).empty());
  EXPECT_TRUE(PartBuffer().empty());
}

TEST(PartsTest, PerPartHoldsOneValuePerRow) {
  PerPart<int> counts;
  for (const PartSpec& spec : PartTable()) {
    EXPECT_EQ(counts[spec.part], 0);
    counts[spec.part] = spec.wire;
  }
  for (const PartSpec& spec : PartTable()) {
    EXPECT_EQ(counts[spec.part], spec.wire);
  }
}

}  // namespace
}  // namespace quantd

#include "kernels/parts.h"

#include <algorithm>

namespace quantd {
namespace {

bool HasChannelScales(const Layout& l) {
  return !l.IsBlockFormat() && (l.scheme.method.method == Method::kAwq ||
                                l.scheme.method.method == Method::kSmoothQuant);
}

// Shape of the scales (and zero points) of a layout: [1] per tensor, else
// [rows, groups per row].
std::vector<int64_t> ScalesShape(const Layout& l) {
  if (l.scheme.granularity == Granularity::kPerTensor) return {1};
  return {l.rows, l.num_groups / std::max<int64_t>(l.rows, 1)};
}

// The ShardChunk.Part values of the proto (checked against the generated
// enum by the wire conversion's test).
const PartSpec kTable[] = {
    {Part::kCodes, "codes", 1, PartElement::kU8, PartOutput::kPacked,
     [](const Layout& l) { return l.packed_bytes; }, "qweight",
     [](const Layout& l) { return std::vector<int64_t>{l.packed_bytes}; }},
    {Part::kScales, "scales", 2, PartElement::kF32, PartOutput::kPacked,
     [](const Layout& l) { return l.IsBlockFormat() ? 0 : l.num_groups; },
     "scales", ScalesShape},
    {Part::kZeroPoints, "zero points", 3, PartElement::kU8, PartOutput::kPacked,
     [](const Layout& l) {
       return l.IsBlockFormat() || l.scheme.symmetric ? 0 : l.num_groups;
     },
     "zero_points", ScalesShape},
    {Part::kBlockScales, "block scales", 6, PartElement::kU8,
     PartOutput::kPacked, [](const Layout& l) { return l.num_block_scales; },
     "block_scales",
     [](const Layout& l) {
       const int64_t rows = std::max<int64_t>(l.rows, 1);
       return std::vector<int64_t>{rows, l.num_block_scales / rows};
     }},
    {Part::kSecondScales, "second scales", 7, PartElement::kF32,
     PartOutput::kPacked, [](const Layout& l) { return l.num_second_scales; },
     "second_scales",
     [](const Layout& l) { return std::vector<int64_t>{l.num_second_scales}; }},
    {Part::kCodebooks, "codebooks", 8, PartElement::kF32, PartOutput::kPacked,
     [](const Layout& l) { return l.num_codebooks * l.codebook_entries; },
     "codebooks",
     [](const Layout& l) {
       return std::vector<int64_t>{l.num_codebooks, l.codebook_entries};
     }},
    {Part::kZeroPointsF32, "f32 zero points", 9, PartElement::kF32,
     PartOutput::kPacked,
     [](const Layout& l) { return l.float_zero_points ? l.num_groups : 0; },
     "zero_points", ScalesShape},
    {Part::kGroupIndex, "group index", 10, PartElement::kI32,
     PartOutput::kPacked,
     [](const Layout& l) { return l.group_index ? l.row_length : 0; }, "g_idx",
     [](const Layout& l) { return std::vector<int64_t>{l.row_length}; }},
    {Part::kFakeQuant, "fake-quant values", 4, PartElement::kF32,
     PartOutput::kFakeQuant, [](const Layout& l) { return l.num_elements; }, "",
     [](const Layout& l) { return l.shape; }},
    {Part::kChannelScales, "channel scales", 5, PartElement::kF32,
     PartOutput::kAlways,
     [](const Layout& l) { return HasChannelScales(l) ? l.row_length : 0; },
     "channel_scales",
     [](const Layout& l) { return std::vector<int64_t>{l.row_length}; }},
};
static_assert(std::size(kTable) == kNumParts);

}  // namespace

int PartElementBytes(PartElement element) {
  return element == PartElement::kU8 ? 1 : 4;
}

absl::string_view PartElementName(PartElement element) {
  switch (element) {
    case PartElement::kU8:
      return "U8";
    case PartElement::kF32:
      return "F32";
    case PartElement::kI32:
      return "I32";
  }
  return "U8";
}

absl::Span<const PartSpec> PartTable() { return kTable; }

const PartSpec& SpecOf(Part part) { return kTable[static_cast<size_t>(part)]; }

const PartSpec* SpecOfWire(int wire) {
  for (const PartSpec& spec : kTable) {
    if (spec.wire == wire) return &spec;
  }
  return nullptr;
}

bool PartSent(const PartSpec& spec, OutputKind output) {
  switch (spec.output) {
    case PartOutput::kPacked:
      return output != OutputKind::kFakeQuant;
    case PartOutput::kFakeQuant:
      return output != OutputKind::kPacked;
    case PartOutput::kAlways:
      return true;
  }
  return false;
}

int64_t PartBytes(const PartSpec& spec, const Layout& layout,
                  OutputKind output) {
  if (!PartSent(spec, output)) return 0;
  return spec.count(layout) * PartElementBytes(spec.element);
}

}  // namespace quantd

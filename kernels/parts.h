// The part table: the pieces a quantized tensor's result is made of (codes,
// scales, zero points, fake quant, channel scales, block scales, second
// scales, codebooks, f32 zero points, group index), one row each, in the
// order they go on the wire. Everything that handles a result iterates this
// table instead of naming the parts: the server's job and shard writer, the
// wire conversion, the C++ client's reply check and the output writers.
//
//   for (const PartSpec& spec : PartTable()) {
//     const int64_t bytes = PartBytes(spec, layout, OutputKind::kPacked);
//     // layout {4096, 4096} int4_asym_g128: codes 8388608, scales 524288,
//     // zero points 131072, every other part 0
//   }
//
//   PartBuffer scales = PartBuffer::Adopt(std::move(q.scales));  // no copy
//   absl::Span<const uint8_t> bytes = scales.bytes();
//
// Adding a part is one row of PartTable() (parts.cc) plus the value of the
// same name in the proto's ShardChunk.Part, and the kernel that fills it.
//
// Thread-safety: the table is immutable. A PartBuffer is a value; its bytes
// are immutable once adopted, and copies share them.
#ifndef QUANTD_KERNELS_PARTS_H_
#define QUANTD_KERNELS_PARTS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/scheme.h"

namespace quantd {

// What a job returns: the packed parts, the dequantized (fake-quant) values,
// or both.
enum class OutputKind { kPacked, kFakeQuant, kBoth };

// The parts, in wire order (the order of PartTable()).
enum class Part {
  kCodes,
  kScales,
  kZeroPoints,
  kBlockScales,
  kSecondScales,
  kCodebooks,
  kZeroPointsF32,
  kGroupIndex,
  kFakeQuant,
  kChannelScales,
};
inline constexpr size_t kNumParts = 10;

// Element type of a part's little-endian bytes.
enum class PartElement { kU8, kF32, kI32 };
int PartElementBytes(PartElement element);        // 1, 4, 4
absl::string_view PartElementName(PartElement e);  // "U8", "F32", "I32"

// Which output kinds carry a part.
enum class PartOutput {
  kPacked,     // OutputKind::kPacked and kBoth
  kFakeQuant,  // OutputKind::kFakeQuant and kBoth
  kAlways,     // every output kind
};

struct PartSpec {
  Part part;
  // As messages name it: "codes", "zero points", "f32 zero points",
  // "fake-quant values", ...
  absl::string_view name;
  // The value of ShardChunk.Part on the wire (PART_<NAME>).
  int wire;
  PartElement element;
  PartOutput output;
  // Elements of the part `layout` implies (0: the layout has none).
  int64_t (*count)(const Layout& layout);
  // Suffix of the part's entry NAME.<suffix> in quantctl's safetensors
  // output ("" for the fake-quant values, stored under the tensor's name),
  // and its shape there.
  absl::string_view file_suffix;
  std::vector<int64_t> (*file_shape)(const Layout& layout);
};

// Every part, in wire order; PartTable()[i].part == Part(i).
absl::Span<const PartSpec> PartTable();
const PartSpec& SpecOf(Part part);
// The row whose `wire` is `wire`, or nullptr.
const PartSpec* SpecOfWire(int wire);

// Whether an `output` job carries the part at all.
bool PartSent(const PartSpec& spec, OutputKind output);
// Bytes of the part in an `output` job's result for `layout`: count ×
// element size when sent, else 0.
int64_t PartBytes(const PartSpec& spec, const Layout& layout,
                  OutputKind output);

// A copy of a part's little-endian bytes as T values (bytes.size() /
// sizeof(T) of them; the host is little-endian, as the server requires).
template <typename T>
std::vector<T> PartValues(absl::Span<const uint8_t> bytes) {
  std::vector<T> values(bytes.size() / sizeof(T));
  if (!values.empty()) {
    std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
  }
  return values;
}

// One part's bytes. Adopt takes a kernel's typed result vector without
// copying it, so parts go out from the buffers the kernel wrote.
class PartBuffer {
 public:
  PartBuffer() = default;

  template <typename T>
  static PartBuffer Adopt(std::vector<T>&& values) {
    PartBuffer b;
    if (values.empty()) return b;
    auto owned = std::make_shared<std::vector<T>>(std::move(values));
    b.bytes_ = absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(owned->data()),
        owned->size() * sizeof(T));
    b.owner_ = std::move(owned);
    return b;
  }

  absl::Span<const uint8_t> bytes() const { return bytes_; }
  // A copy of the bytes as T values (PartValues).
  template <typename T>
  std::vector<T> Values() const {
    return PartValues<T>(bytes_);
  }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }

 private:
  std::shared_ptr<const void> owner_;
  absl::Span<const uint8_t> bytes_;
};

// A value per part, indexed by Part.
template <typename T>
class PerPart {
 public:
  T& operator[](Part part) { return values_[static_cast<size_t>(part)]; }
  const T& operator[](Part part) const {
    return values_[static_cast<size_t>(part)];
  }

 private:
  std::array<T, kNumParts> values_{};
};

}  // namespace quantd

#endif  // QUANTD_KERNELS_PARTS_H_

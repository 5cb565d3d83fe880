// Scheme: what a quantization is (target format, granularity, symmetry), and
// Layout: how a scheme applied to a tensor shape lays out codes, scales and
// zero points. Pure values; no I/O.
//
//   absl::StatusOr<Scheme> scheme = ParseScheme("int4_asym_g128");
//   absl::StatusOr<Layout> layout = MakeLayout(*scheme, {4096, 11008});
//   // layout->num_groups == 4096 * 11008 / 128, layout->packed_bytes == ...
#ifndef QUANTD_KERNELS_SCHEME_H_
#define QUANTD_KERNELS_SCHEME_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace quantd {

// Element type of input bytes (little-endian IEEE 754).
enum class DType { kF32, kF16, kBF16 };

// Bytes per element of `dtype`.
int DTypeSize(DType dtype);
absl::string_view DTypeName(DType dtype);  // "F32", "F16", "BF16"
absl::StatusOr<DType> ParseDType(absl::string_view name);

enum class Granularity { kPerTensor, kPerChannel, kPerGroup };
absl::string_view GranularityName(Granularity g);  // "tensor", "channel", "group"

struct Scheme {
  // Name in the format table (FindFormat), e.g. "int4".
  std::string format = "int8";
  // Default: symmetric (two's complement codes, zero point 0).
  bool symmetric = true;
  // Default: one scale per row.
  Granularity granularity = Granularity::kPerChannel;
  // Elements per group for kPerGroup; must divide the row length.
  int64_t group_size = 0;

  friend bool operator==(const Scheme&, const Scheme&) = default;
};

// Parses "int<b>[_sym|_asym][_tensor|_channel|_g<N>]" in any order after the
// format, e.g. "int8", "int4_asym_g128", "int3_tensor_sym".
// Returns InvalidArgument for unknown formats or malformed text.
absl::StatusOr<Scheme> ParseScheme(absl::string_view text);

// Inverse of ParseScheme: canonical text ("int4_asym_g128", "int8_sym_channel").
std::string SchemeToString(const Scheme& scheme);

// How a scheme lays out one tensor. See proto/quantd/v1/quantizer.proto
// (message Layout) for the byte-level contract.
struct Layout {
  Scheme scheme;
  std::vector<int64_t> shape;
  int64_t rows = 0;        // product of all dims but the last (1 for 0-D/1-D)
  int64_t row_length = 0;  // last dim (1 for 0-D)
  int bits = 0;
  int64_t group_size = 0;  // elements per scale
  int64_t num_groups = 0;  // number of scales (and zero points if asymmetric)
  int64_t num_elements = 0;
  int64_t packed_bytes = 0;  // ceil(num_elements * bits / 8)

  // Stored bits per weight: codes + f32 scales + uint8 zero points.
  double BitsPerWeight() const;
};

// Validates `scheme` against the format table and `shape` and returns the
// layout. InvalidArgument when: the format is unknown; a dimension is < 1;
// the element count overflows int64; group_size is < 1 or does not divide
// the row length (per group).
absl::StatusOr<Layout> MakeLayout(const Scheme& scheme,
                                  absl::Span<const int64_t> shape);

}  // namespace quantd

#endif  // QUANTD_KERNELS_SCHEME_H_

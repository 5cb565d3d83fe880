// Layout: how a Scheme (scheme.h) applied to a tensor shape lays out codes,
// scales and zero points; MakeLayout checks the pair and computes it. Pure
// values; no I/O. scheme.h shows a layout of each family.
//
//   absl::StatusOr<Layout> layout = MakeLayout(*scheme, {4096, 11008});
#ifndef QUANTD_KERNELS_LAYOUT_H_
#define QUANTD_KERNELS_LAYOUT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/scheme.h"

namespace quantd {

// How a scheme lays out one tensor. See proto/quantd/v1/quantizer.proto
// (message Layout) for the byte-level contract.
struct Layout {
  Scheme scheme;  // block formats: the canonical upper-case name
  std::vector<int64_t> shape;
  int64_t rows = 0;        // product of all dims but the last (1 for 0-D/1-D)
  int64_t row_length = 0;  // last dim (1 for 0-D)
  int bits = 0;            // code width; 0 for block formats
  // Elements per scale; block formats: elements per block (block_size).
  int64_t group_size = 0;
  // Number of separate f32 scales (and zero points if asymmetric); 0 for
  // block formats, whose scales are inside the blocks.
  int64_t num_groups = 0;
  int64_t num_elements = 0;
  // Int formats: ceil(num_elements * bits / 8). Block formats: the ggml
  // bytes of the tensor, rows * (row_length / block_size) * block_bytes.
  int64_t packed_bytes = 0;
  // Block formats only (0 otherwise): elements and bytes of one block.
  int block_size = 0;
  int block_bytes = 0;

  // The family. Float, codebook and HQQ layouts: `bits` is the code width,
  // packed_bytes the codes (ceil(num_elements * bits / 8)), num_groups the
  // f32 scales (PART_SCALES: FP8 / FP4 group scales, NF4 absmax without
  // double quantization, pot and HQQ scales; 0 for MX, NVFP4, NF4 with
  // double quantization and k-means), group_size the elements per group,
  // block or table; and the counts below.
  LayoutKind kind = LayoutKind::kInt;
  // uint8 block scales and the elements each covers (MX, NVFP4, NF4 dq).
  int64_t num_block_scales = 0;
  int64_t block_scale_group_size = 0;
  // NF4 dq: f32 second-level scales, one per 256 block scales.
  int64_t num_second_scales = 0;
  // Codebook formats: tables of 2^bits f32 entries, one per group.
  int64_t num_codebooks = 0;
  int codebook_entries = 0;
  // HQQ: one f32 zero point per group.
  bool float_zero_points = false;
  // Int formats, GPTQ with act_order and dynamic groups (GPTQ's desc_act
  // with g_idx): groups were formed in quantization order, so column c of
  // row r uses scale (and zero point) r * (row_length / group_size) +
  // group_index[c], row_length int32 entries (QuantizedTensor::group_index).
  // Codes stay in the original column order.
  bool group_index = false;

  bool IsBlockFormat() const { return block_size > 0; }
  // Stored bits per weight: codes + f32 scales + uint8 zero points (+ the
  // int32 group index when the layout has one); for a
  // block format its block bytes (e.g. Q4_0: 18 * 8 / 32 = 4.5). Float,
  // codebook and HQQ layouts: what their kernels' own counts give
  // (FloatBitsPerWeight, CodebookTensor::BitsPerWeight,
  // HqqTensor::BitsPerWeight) for a tensor of this layout.
  double BitsPerWeight() const;
};

// Validates `scheme` against the format tables and `shape` and returns the
// layout. InvalidArgument when: the format is unknown; a dimension is < 1;
// the element count overflows int64; group_size is < 1 or does not divide
// the row length (per group); for a block format, the row length (the last
// dimension, 1 for a scalar) is not a multiple of the block size (the
// message names both), or the scheme sets asymmetric codes or a granularity
// other than the default (a block fixes both); for the float formats, what
// ResolveFloatOptions refuses (odd row length of a 4-bit format, a row not a
// multiple of the block); a method other than RTN on a float, codebook or
// HQQ format or with full_range; full_range with asymmetric codes or on a
// format other than int<b>; double_quant on a format other than nf4.
// Messages name the shape.
absl::StatusOr<Layout> MakeLayout(const Scheme& scheme,
                                  absl::Span<const int64_t> shape);

}  // namespace quantd

#endif  // QUANTD_KERNELS_LAYOUT_H_

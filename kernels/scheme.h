// Scheme: what a quantization is (target format, granularity, symmetry), and
// Layout (layout.h): how a scheme applied to a tensor shape lays out codes,
// scales and zero points. Pure values; no I/O.
//
//   absl::StatusOr<Scheme> scheme = ParseScheme("int4_asym_g128");
//   absl::StatusOr<Layout> layout = MakeLayout(*scheme, {4096, 11008});
//   // layout->num_groups == 4096 * 11008 / 128, layout->packed_bytes == ...
//
// Two families of formats share these types:
//   - integer affine formats of FormatTable() (quantize.h), "int2".."int8",
//     with symmetry and granularity chosen by the scheme; their scales and
//     zero points are separate arrays (QuantizedTensor);
//   - ggml's block formats of GgmlFormatTable() (ggml_formats.h), named by
//     their ggml type name ("Q4_0", "IQ4_NL", ...). A block fixes its own
//     symmetry, granularity and scales, which live inside the block bytes;
//     the layout's codes are the tensor's ggml bytes as a GGUF holds them.
//
//   absl::StatusOr<Scheme> q4 = ParseScheme("q4_0");  // format "Q4_0"
//   absl::StatusOr<Layout> l = MakeLayout(*q4, {4096, 11008});
//   // l->block_size == 32, l->block_bytes == 18, l->num_groups == 0,
//   // l->packed_bytes == 4096 * (11008 / 32) * 18, l->BitsPerWeight() == 4.5
//
// Three more families name kernels of their own; their parts are laid out as
// the proto's message Layout states (LayoutKind::kFloat, kCodebook, kHqq):
//   - the low-precision float formats of float_formats.h: "fp8_e4m3",
//     "fp8_e5m2", "fp4_e2m1", "nf4" (optionally "_dq"), "ocp_mxfp8",
//     "ocp_mxfp4", "modelopt_nvfp4";
//   - the codebook formats of nonuniform.h: "kmeans<b>" and "pot<b>";
//   - HQQ (hqq.h): "hqq<b>".
//
//   absl::StatusOr<Scheme> nf4 = ParseScheme("NF4_dq");  // "nf4_g64_dq"
//   absl::StatusOr<Layout> l = MakeLayout(*nf4, {4096, 4096});
//   // l->kind == LayoutKind::kFloat, l->num_block_scales == 4096 * 64,
//   // l->num_second_scales == 4096 * 64 / 256, l->num_groups == 0
//
// And a convention of the int<b> formats: "int4_full_g128" is symmetric with
// compressed-tensors' full-range scale amax / ((2^b - 1) / 2) (quantize.h).
#ifndef QUANTD_KERNELS_SCHEME_H_
#define QUANTD_KERNELS_SCHEME_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantd {

enum class Granularity { kPerTensor, kPerChannel, kPerGroup };
absl::string_view GranularityName(Granularity g);  // "tensor", "channel", "group"

struct GgmlFormatTraits;  // ggml_formats.h

// How the codes are chosen. kRtn rounds each weight to nearest (quantize.h);
// the others need the tensor's calibration set (kernels/gptq.h, awq.h,
// smoothquant.h) and apply to the int<b> formats only.
enum class Method { kRtn, kGptq, kAwq, kSmoothQuant };
absl::string_view MethodName(Method m);  // "rtn", "gptq", "awq", "smoothquant"

// The method and its parameters. Fields of the other methods are unused and
// keep their defaults (ParseScheme and SchemeFromProto guarantee it).
struct MethodOptions {
  // Default: round to nearest.
  Method method = Method::kRtn;
  // GPTQ (GptqOptions): Default: 0.01, 128, false, false.
  double damp_percent = 0.01;
  int64_t block_size = 128;
  bool act_order = false;
  bool static_groups = false;
  // AWQ (AwqOptions): grid points of the alpha search. Default: 20.
  int n_grid = 20;
  // AWQ: search a per-group clipping ratio after scaling. Default: true.
  bool clip_search = true;
  // SmoothQuant: migration strength in (0, 1]; 0 searches it. Default: 0.
  double alpha = 0.0;

  friend bool operator==(const MethodOptions&, const MethodOptions&) = default;
};

// The family of a format: which kernels quantize it and how its layout reads.
enum class LayoutKind { kInt, kGgmlBlock, kFloat, kCodebook, kHqq };
absl::string_view LayoutKindName(LayoutKind kind);  // "int", "ggml", "float",
                                                    // "codebook", "hqq"

struct Scheme {
  // Name in the format table (FindFormat), e.g. "int4", or a ggml block
  // format's type name (FindGgmlFormat), upper case as ParseScheme gives
  // it, e.g. "Q4_K"; or a float format's name (ParseFloatFormat, lower
  // case: "fp8_e4m3", "nf4", ...), "kmeans<b>" (b 1..8), "pot<b>" (b 2..8)
  // or "hqq<b>" (b 1..8). The float, codebook and HQQ formats fix their
  // symmetry (keep the default) and carry their granularity resolved:
  // fp8_* per tensor, channel or group; fp4_e2m1 likewise (text default
  // group 32); nf4 per group (block, default 64); ocp_mxfp8 / ocp_mxfp4
  // per group of 32 and modelopt_nvfp4 per group of 16 (fixed); kmeans /
  // pot any granularity (default per channel); hqq per group (default 64)
  // or per channel.
  std::string format = "int8";
  // Default: symmetric (two's complement codes, zero point 0).
  // Block formats: unused, keep the default.
  bool symmetric = true;
  // Default: one scale per row. Block formats: unused, keep the default.
  Granularity granularity = Granularity::kPerChannel;
  // Elements per group for kPerGroup; must divide the row length.
  int64_t group_size = 0;
  // Default: RTN.
  MethodOptions method;
  // int<b>, symmetric, RTN only: compressed-tensors' full-range convention,
  // scale = amax / ((2^b - 1) / 2) (quantize.h states it). Default: false.
  bool full_range = false;
  // nf4 only: double-quantize the absmax values. Default: false.
  bool double_quant = false;

  friend bool operator==(const Scheme&, const Scheme&) = default;
};

// Parses "int<b>[_sym|_asym|_full][_tensor|_channel|_g<N>]" in any order after
// the format, e.g. "int8", "int4_asym_g128", "int3_tensor_sym",
// "int4_full_g128" (full: symmetric, full range); or, case-insensitive:
//   "fp8_e4m3" / "fp8_e5m2" [_tensor (default) | _channel | _block (= _g128)
//     | _g<N>], "fp4_e2m1" [_tensor | _channel | _block | _g<N>; default
//     _g32], "nf4" [_block | _g<N>; default _g64] [_dq], "ocp_mxfp8",
//     "ocp_mxfp4", "modelopt_nvfp4" (no options);
//   "kmeans<b>" (1..8), "pot<b>" (2..8) [_tensor | _channel (default) |
//     _g<N>]; "hqq<b>" (1..8) [_channel | _g<N>; default _g64];
// or the name of a
// ggml block format, case-insensitive and without options ("q4_0",
// "IQ4_NL"), which gives a Scheme whose format is the upper-case name and
// whose other fields are the defaults.
// A method other than round to nearest follows a '+', with optional
// comma-separated parameters in parentheses (defaults: MethodOptions):
//   "int4_asym_g128+gptq", "int4_g128+gptq(act_order,static_groups,damp=0.05,
//   block=64)", "int4_asym_g128+awq", "int3_g128+awq(grid=10,noclip)",
//   "int8+smoothquant(alpha=0.5)"; "+rtn" is the default and may be given.
// A ggml block format takes "+gptq" without static_groups (its block scales
// are always fixed up front): "Q4_K+gptq(act_order)".
// Returns InvalidArgument for unknown formats or malformed text (including
// options after a block format's name, a method other than gptq or
// static_groups on a block format, unknown
// or repeated method parameters and out-of-range values: damp < 0, block,
// grid < 1, alpha outside [0, 1]), and for a method on a float, codebook or
// HQQ format or on int<b>_full, a bit width out of range, "_sym"/"_asym" on
// a format that fixes its symmetry, or an option the format does not take.
absl::StatusOr<Scheme> ParseScheme(absl::string_view text);

// Inverse of ParseScheme: canonical text ("int4_asym_g128", "int8_sym_channel",
// "Q4_0", "int4_asym_g128+gptq(act_order,damp=0.05)"): the method's
// parameters that differ from the defaults, in the order above; nothing
// after the format for RTN. Full range: "int4_full_g128". Float, codebook
// and HQQ formats: lower case with their granularity ("fp8_e4m3_tensor",
// "fp4_e2m1_g32", "nf4_g64_dq", "ocp_mxfp4", "kmeans4_channel",
// "hqq4_g64").
std::string SchemeToString(const Scheme& scheme);

// The ggml block format `scheme` names (case-insensitive), or nullptr when it
// names an integer format (or nothing known).
const GgmlFormatTraits* GgmlFormatOf(const Scheme& scheme);

// The family of `scheme.format`; kInt for an unknown name (MakeLayout
// refuses it).
LayoutKind LayoutKindOf(const Scheme& scheme);

// kmeans<b> / pot<b> / hqq<b>: b and whether the name is that family;
// 0 if it is not.
int CodebookBits(const Scheme& scheme, bool* power_of_two);
int HqqBits(const Scheme& scheme);

}  // namespace quantd

// Layout and MakeLayout live in layout.h, which needs Scheme complete; it is
// included here, after Scheme, so that files taking Layout from scheme.h
// keep compiling. New code includes layout.h.
#include "kernels/layout.h"  // IWYU pragma: export

#endif  // QUANTD_KERNELS_SCHEME_H_

#include "kernels/layout.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "kernels/float_formats.h"
#include "kernels/ggml_formats.h"
#include "kernels/quantize.h"
#include "kernels/scheme_options.h"

namespace quantd {

double Layout::BitsPerWeight() const {
  if (num_elements == 0) return 0;
  const auto n = static_cast<double>(num_elements);
  switch (kind) {
    case LayoutKind::kInt:
    case LayoutKind::kGgmlBlock:
      break;
    case LayoutKind::kFloat: {
      // FloatBitsPerWeight: codes, scales, block scales, second scales,
      // NVFP4's tensor scale and NF4 dq's offset.
      double b = 8.0 * static_cast<double>(packed_bytes) +
                 32.0 * static_cast<double>(num_groups) +
                 8.0 * static_cast<double>(num_block_scales) +
                 32.0 * static_cast<double>(num_second_scales);
      if (scheme.format == "modelopt_nvfp4") b += 32.0;
      if (scheme.double_quant) b += 32.0;
      return b / n;
    }
    case LayoutKind::kCodebook: {
      // CodebookTensor::BitsPerWeight: pot counts its scales, k-means its
      // tables.
      const double side =
          num_groups > 0 ? 32.0 * static_cast<double>(num_groups)
                         : 32.0 * static_cast<double>(num_codebooks) *
                               static_cast<double>(codebook_entries);
      return bits + side / n;
    }
    case LayoutKind::kHqq:
      return bits + 64.0 / static_cast<double>(group_size);
  }
  if (IsBlockFormat()) {
    return static_cast<double>(block_bytes) * 8.0 /
           static_cast<double>(block_size);
  }
  const double bits_total =
      static_cast<double>(packed_bytes) * 8.0 +
      static_cast<double>(num_groups) * 32.0 +
      (scheme.symmetric ? 0.0 : static_cast<double>(num_groups) * 8.0) +
      (group_index ? static_cast<double>(row_length) * 32.0 : 0.0);
  return bits_total / static_cast<double>(num_elements);
}

namespace {

// Block formats: the layout of `shape` once its element count is known.
absl::StatusOr<Layout> MakeBlockLayout(const GgmlFormatTraits& block,
                                       const Scheme& scheme, Layout layout) {
  const Scheme defaults;
  if (scheme.method.method != Method::kRtn &&
      (scheme.method.method != Method::kGptq || scheme.method.static_groups)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "format ", block.name, " is a ggml block format: method ",
        MethodName(scheme.method.method),
        scheme.method.method == Method::kGptq
            ? " takes no static_groups there (block scales are always static)"
            : " applies to the int<b> formats only (gptq also to block "
              "formats)"));
  }
  if (!scheme.symmetric || scheme.granularity != defaults.granularity ||
      scheme.group_size != defaults.group_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "format ", block.name,
        " is a ggml block format: its blocks fix symmetry and granularity, "
        "so the scheme must leave them at their defaults"));
  }
  layout.scheme = defaults;
  layout.scheme.format = block.name;
  layout.scheme.method = scheme.method;
  absl::StatusOr<int64_t> row_bytes = GgmlRowBytes(block, layout.row_length);
  if (!row_bytes.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(row_bytes.status().message(), " (shape [",
                     absl::StrJoin(layout.shape, ","), "])"));
  }
  if (layout.rows > std::numeric_limits<int64_t>::max() / *row_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape [", absl::StrJoin(layout.shape, ","), "] in ",
                     block.name, " has more bytes than fit in int64"));
  }
  layout.bits = 0;
  layout.block_size = block.block_size;
  layout.block_bytes = block.block_bytes;
  layout.group_size = block.block_size;
  layout.num_groups = 0;
  layout.packed_bytes = layout.rows * *row_bytes;
  return layout;
}

}  // namespace

namespace {

// Float, codebook and HQQ formats: the layout of `shape` once its element
// count is known.
absl::StatusOr<Layout> MakeOtherLayout(const Scheme& scheme, Layout layout) {
  const std::string shape_text =
      absl::StrCat("[", absl::StrJoin(layout.shape, ","), "]");
  auto refuse = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "format ", scheme.format, " (shape ", shape_text, "): ", why));
  };
  if (scheme.method.method != Method::kRtn) {
    return refuse(absl::StrCat("method ", MethodName(scheme.method.method),
                               " applies to the int<b> formats only"));
  }
  if (!scheme.symmetric) return refuse("the format fixes its own symmetry");
  if (scheme.full_range) return refuse("full_range applies to int<b> only");
  const LayoutKind kind = LayoutKindOf(scheme);
  if (scheme.double_quant && scheme.format != "nf4") {
    return refuse("double_quant applies to nf4 only");
  }
  layout.kind = kind;
  const int64_t n = layout.num_elements;
  if (kind == LayoutKind::kFloat) {
    QUANTD_ASSIGN_OR_RETURN(FloatFormatOptions options, FloatOptionsOf(scheme));
    absl::StatusOr<FloatFormatOptions> resolved =
        ResolveFloatOptions(options, layout.rows, layout.row_length);
    if (!resolved.ok()) return refuse(resolved.status().message());
    layout.bits = FloatFormatCodeBits(resolved->format);
    switch (resolved->granularity) {
      case FloatGranularity::kTensor:
        layout.group_size = n;
        break;
      case FloatGranularity::kChannel:
        layout.group_size = layout.row_length;
        break;
      case FloatGranularity::kDefault:
      case FloatGranularity::kBlock:
        layout.group_size = resolved->block_size;
        break;
    }
    const int64_t groups = n / layout.group_size;
    switch (resolved->format) {
      case FloatFormat::kOcpMxfp8:
      case FloatFormat::kOcpMxfp4:
      case FloatFormat::kNvfp4:
        layout.num_groups = 0;
        layout.num_block_scales = groups;
        layout.block_scale_group_size = layout.group_size;
        break;
      case FloatFormat::kNf4:
        if (resolved->double_quant) {
          layout.num_groups = 0;
          layout.num_block_scales = groups;
          layout.block_scale_group_size = layout.group_size;
          layout.num_second_scales = (groups + 255) / 256;
        } else {
          layout.num_groups = groups;
        }
        break;
      default:
        layout.num_groups = groups;
        break;
    }
    layout.packed_bytes = n * layout.bits / 8;
    return layout;
  }
  bool power_of_two = false;
  layout.bits = kind == LayoutKind::kHqq ? HqqBits(scheme)
                                         : CodebookBits(scheme, &power_of_two);
  switch (scheme.granularity) {
    case Granularity::kPerTensor:
      if (kind == LayoutKind::kHqq) {
        return refuse("takes groups (_g<N>) or one group per row (_channel)");
      }
      layout.group_size = n;
      break;
    case Granularity::kPerChannel:
      layout.group_size = layout.row_length;
      break;
    case Granularity::kPerGroup:
      if (scheme.group_size < 1 ||
          layout.row_length % scheme.group_size != 0) {
        return refuse(absl::StrCat("group_size ", scheme.group_size,
                                   " does not divide the row length ",
                                   layout.row_length));
      }
      layout.group_size = scheme.group_size;
      break;
  }
  const int64_t groups = n / layout.group_size;
  layout.packed_bytes = (n * layout.bits + 7) / 8;
  if (kind == LayoutKind::kHqq) {
    layout.num_groups = groups;
    layout.float_zero_points = true;
  } else {
    layout.num_groups = power_of_two ? groups : 0;
    layout.num_codebooks = groups;
    layout.codebook_entries = 1 << layout.bits;
  }
  return layout;
}

}  // namespace

absl::StatusOr<Layout> MakeLayout(const Scheme& scheme,
                                  absl::Span<const int64_t> shape) {
  const GgmlFormatTraits* block = GgmlFormatOf(scheme);
  const FormatTraits* traits = FindFormat(scheme.format);
  const LayoutKind kind = LayoutKindOf(scheme);
  if (traits == nullptr && block == nullptr && kind == LayoutKind::kInt) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown format \"", scheme.format, "\""));
  }
  if (traits != nullptr &&
      (scheme.symmetric ? !traits->symmetric_ok : !traits->asymmetric_ok)) {
    return absl::InvalidArgumentError(
        absl::StrCat("format ", scheme.format, " does not support ",
                     scheme.symmetric ? "symmetric" : "asymmetric", " codes"));
  }
  Layout layout;
  layout.scheme = scheme;
  layout.shape.assign(shape.begin(), shape.end());
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("dimension ", i, " of shape [", absl::StrJoin(shape, ","),
                       "] is ", shape[i], "; every dimension must be >= 1"));
    }
    if (n > kMax / shape[i]) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape [", absl::StrJoin(shape, ","),
                       "] has more elements than fit in int64"));
    }
    n *= shape[i];
  }
  if (n > kMax / 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape [", absl::StrJoin(shape, ","),
                     "] is too large: its bit count overflows int64"));
  }
  layout.num_elements = n;
  layout.row_length = shape.empty() ? 1 : shape.back();
  layout.rows = n / layout.row_length;
  if (block != nullptr) {
    layout.kind = LayoutKind::kGgmlBlock;
    if (scheme.full_range || scheme.double_quant) {
      return absl::InvalidArgumentError(absl::StrCat(
          "format ", block->name,
          " is a ggml block format: full_range and double_quant do not apply"));
    }
    return MakeBlockLayout(*block, scheme, std::move(layout));
  }
  if (kind != LayoutKind::kInt) {
    return MakeOtherLayout(scheme, std::move(layout));
  }
  if (scheme.double_quant) {
    return absl::InvalidArgumentError(absl::StrCat(
        "double_quant applies to nf4 only, not to ", scheme.format));
  }
  if (scheme.full_range && !scheme.symmetric) {
    return absl::InvalidArgumentError(absl::StrCat(
        "format ", scheme.format, ": full_range is a symmetric convention"));
  }
  if (scheme.full_range && scheme.method.method != Method::kRtn) {
    return absl::InvalidArgumentError(absl::StrCat(
        "format ", scheme.format, ": method ", MethodName(scheme.method.method),
        " does not take full_range (round to nearest only)"));
  }
  layout.bits = traits->bits;
  switch (scheme.granularity) {
    case Granularity::kPerTensor:
      layout.group_size = n;
      break;
    case Granularity::kPerChannel:
      layout.group_size = layout.row_length;
      break;
    case Granularity::kPerGroup:
      if (scheme.group_size < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "group_size ", scheme.group_size, " must be >= 1"));
      }
      if (layout.row_length % scheme.group_size != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "group_size ", scheme.group_size,
            " does not divide the row length ", layout.row_length,
            " of shape [", absl::StrJoin(shape, ","), "]"));
      }
      layout.group_size = scheme.group_size;
      break;
  }
  layout.num_groups = n / layout.group_size;
  layout.packed_bytes = (n * layout.bits + 7) / 8;
  // Groups formed in GPTQ's act-order need the group index; with static
  // groups (or per channel, per tensor) groups stay consecutive.
  layout.group_index = scheme.granularity == Granularity::kPerGroup &&
                       scheme.method.method == Method::kGptq &&
                       scheme.method.act_order && !scheme.method.static_groups &&
                       layout.group_size < layout.row_length;
  return layout;
}

}  // namespace quantd

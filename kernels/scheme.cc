#include "kernels/scheme.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "kernels/ggml_formats.h"
#include "kernels/quantize.h"

namespace quantd {

int DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "UNKNOWN";
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  if (upper == "F32") return DType::kF32;
  if (upper == "F16") return DType::kF16;
  if (upper == "BF16") return DType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", name, "\" (expected F32, F16 or BF16)"));
}

absl::string_view GranularityName(Granularity g) {
  switch (g) {
    case Granularity::kPerTensor:
      return "tensor";
    case Granularity::kPerChannel:
      return "channel";
    case Granularity::kPerGroup:
      return "group";
  }
  return "unknown";
}

const GgmlFormatTraits* GgmlFormatOf(const Scheme& scheme) {
  return FindGgmlFormat(scheme.format);
}

absl::StatusOr<Scheme> ParseScheme(absl::string_view text) {
  if (const GgmlFormatTraits* block = FindGgmlFormat(text); block != nullptr) {
    Scheme scheme;
    scheme.format = block->name;
    return scheme;
  }
  for (const GgmlFormatTraits& block : GgmlFormatTable()) {
    const absl::string_view name = block.name;
    if (text.size() > name.size() && text[name.size()] == '_' &&
        absl::StartsWithIgnoreCase(text, name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "malformed scheme \"", text, "\": ", block.name,
          " is a ggml block format and takes no options (its blocks fix "
          "symmetry and granularity)"));
    }
  }
  std::vector<absl::string_view> parts = absl::StrSplit(text, '_');
  if (parts.empty() || parts[0].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed scheme \"", text, "\": empty format"));
  }
  Scheme scheme;
  scheme.format = std::string(parts[0]);
  const FormatTraits* traits = FindFormat(scheme.format);
  if (traits == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown format \"", parts[0], "\" in scheme \"", text, "\""));
  }
  bool seen_symmetry = false;
  bool seen_granularity = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    const absl::string_view part = parts[i];
    if (part == "sym" || part == "asym") {
      if (seen_symmetry) {
        return absl::InvalidArgumentError(absl::StrCat(
            "malformed scheme \"", text, "\": symmetry given twice"));
      }
      seen_symmetry = true;
      scheme.symmetric = part == "sym";
      continue;
    }
    if (seen_granularity) {
      return absl::InvalidArgumentError(absl::StrCat(
          "malformed scheme \"", text, "\": unexpected \"", part, "\""));
    }
    seen_granularity = true;
    if (part == "tensor") {
      scheme.granularity = Granularity::kPerTensor;
    } else if (part == "channel") {
      scheme.granularity = Granularity::kPerChannel;
    } else if (part.size() > 1 && part[0] == 'g') {
      int64_t group_size = 0;
      if (!absl::SimpleAtoi(part.substr(1), &group_size) || group_size < 1 ||
          part[1] == '+' || part[1] == '-') {
        return absl::InvalidArgumentError(absl::StrCat(
            "malformed scheme \"", text, "\": bad group size \"", part, "\""));
      }
      scheme.granularity = Granularity::kPerGroup;
      scheme.group_size = group_size;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "malformed scheme \"", text, "\": unexpected \"", part,
          "\" (expected sym, asym, tensor, channel or g<N>)"));
    }
  }
  if (scheme.symmetric ? !traits->symmetric_ok : !traits->asymmetric_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("format ", scheme.format, " does not support ",
                     scheme.symmetric ? "symmetric" : "asymmetric", " codes"));
  }
  return scheme;
}

std::string SchemeToString(const Scheme& scheme) {
  if (const GgmlFormatTraits* block = GgmlFormatOf(scheme); block != nullptr) {
    return block->name;
  }
  std::string out =
      absl::StrCat(scheme.format, scheme.symmetric ? "_sym" : "_asym");
  switch (scheme.granularity) {
    case Granularity::kPerTensor:
      absl::StrAppend(&out, "_tensor");
      break;
    case Granularity::kPerChannel:
      absl::StrAppend(&out, "_channel");
      break;
    case Granularity::kPerGroup:
      absl::StrAppend(&out, "_g", scheme.group_size);
      break;
  }
  return out;
}

double Layout::BitsPerWeight() const {
  if (num_elements == 0) return 0;
  if (IsBlockFormat()) {
    return static_cast<double>(block_bytes) * 8.0 /
           static_cast<double>(block_size);
  }
  const double bits_total =
      static_cast<double>(packed_bytes) * 8.0 +
      static_cast<double>(num_groups) * 32.0 +
      (scheme.symmetric ? 0.0 : static_cast<double>(num_groups) * 8.0);
  return bits_total / static_cast<double>(num_elements);
}

namespace {

// Block formats: the layout of `shape` once its element count is known.
absl::StatusOr<Layout> MakeBlockLayout(const GgmlFormatTraits& block,
                                       const Scheme& scheme, Layout layout) {
  const Scheme defaults;
  if (!scheme.symmetric || scheme.granularity != defaults.granularity ||
      scheme.group_size != defaults.group_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "format ", block.name,
        " is a ggml block format: its blocks fix symmetry and granularity, "
        "so the scheme must leave them at their defaults"));
  }
  layout.scheme = defaults;
  layout.scheme.format = block.name;
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

absl::StatusOr<Layout> MakeLayout(const Scheme& scheme,
                                  absl::Span<const int64_t> shape) {
  const GgmlFormatTraits* block = GgmlFormatOf(scheme);
  const FormatTraits* traits = FindFormat(scheme.format);
  if (traits == nullptr && block == nullptr) {
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
  if (block != nullptr) return MakeBlockLayout(*block, scheme, std::move(layout));
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
  return layout;
}

}  // namespace quantd

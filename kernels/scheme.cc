#include "kernels/scheme.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "kernels/float_formats.h"
#include "kernels/ggml_formats.h"
#include "kernels/quantize.h"

namespace quantd {

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

absl::string_view LayoutKindName(LayoutKind kind) {
  switch (kind) {
    case LayoutKind::kInt:
      return "int";
    case LayoutKind::kGgmlBlock:
      return "ggml";
    case LayoutKind::kFloat:
      return "float";
    case LayoutKind::kCodebook:
      return "codebook";
    case LayoutKind::kHqq:
      return "hqq";
  }
  return "unknown";
}

namespace {

// b of "<prefix><b>" (exactly one digit 1..8 after the prefix), or 0.
int PrefixedBits(absl::string_view name, absl::string_view prefix) {
  if (name.size() != prefix.size() + 1 || !absl::StartsWith(name, prefix)) {
    return 0;
  }
  const char c = name.back();
  return c >= '1' && c <= '8' ? c - '0' : 0;
}

bool IsFloatFormatName(absl::string_view name) {
  for (FloatFormat f :
       {FloatFormat::kFp8E4m3, FloatFormat::kFp8E5m2, FloatFormat::kFp4E2m1,
        FloatFormat::kNf4, FloatFormat::kOcpMxfp8, FloatFormat::kOcpMxfp4,
        FloatFormat::kNvfp4}) {
    if (name == FloatFormatName(f)) return true;
  }
  return false;
}

}  // namespace

int CodebookBits(const Scheme& scheme, bool* power_of_two) {
  if (const int b = PrefixedBits(scheme.format, "kmeans"); b > 0) {
    if (power_of_two != nullptr) *power_of_two = false;
    return b;
  }
  if (const int b = PrefixedBits(scheme.format, "pot"); b >= 2) {
    if (power_of_two != nullptr) *power_of_two = true;
    return b;
  }
  return 0;
}

int HqqBits(const Scheme& scheme) { return PrefixedBits(scheme.format, "hqq"); }

LayoutKind LayoutKindOf(const Scheme& scheme) {
  if (GgmlFormatOf(scheme) != nullptr) return LayoutKind::kGgmlBlock;
  if (IsFloatFormatName(scheme.format)) return LayoutKind::kFloat;
  if (CodebookBits(scheme, nullptr) > 0) return LayoutKind::kCodebook;
  if (HqqBits(scheme) > 0) return LayoutKind::kHqq;
  return LayoutKind::kInt;
}

absl::string_view MethodName(Method m) {
  switch (m) {
    case Method::kRtn:
      return "rtn";
    case Method::kGptq:
      return "gptq";
    case Method::kAwq:
      return "awq";
    case Method::kSmoothQuant:
      return "smoothquant";
  }
  return "unknown";
}

namespace {

absl::StatusOr<Scheme> ParseBaseScheme(absl::string_view text);

// The shortest decimal text that parses back to `v`.
std::string ShortestDouble(double v) {
  for (int digits = 1; digits <= 17; ++digits) {
    std::string out = absl::StrFormat("%.*g", digits, v);
    double back = 0;
    if (absl::SimpleAtod(out, &back) && back == v) return out;
  }
  return absl::StrFormat("%.17g", v);
}

// Parses "<method>[(<param>[,<param>]...)]" into `options`.
absl::Status ParseMethod(absl::string_view full, absl::string_view text,
                         MethodOptions& options) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed scheme \"", full, "\": ", why));
  };
  absl::string_view name = text;
  absl::string_view params;
  bool has_params = false;
  if (const size_t open = text.find('('); open != absl::string_view::npos) {
    if (text.back() != ')') return bad("method parameters must end with ')'");
    name = text.substr(0, open);
    params = text.substr(open + 1, text.size() - open - 2);
    has_params = true;
  }
  if (name == "rtn") {
    options.method = Method::kRtn;
  } else if (name == "gptq") {
    options.method = Method::kGptq;
  } else if (name == "awq") {
    options.method = Method::kAwq;
  } else if (name == "smoothquant") {
    options.method = Method::kSmoothQuant;
  } else {
    return bad(absl::StrCat("unknown method \"", name,
                            "\" (expected rtn, gptq, awq or smoothquant)"));
  }
  if (!has_params) return absl::OkStatus();
  if (params.empty()) return bad("empty method parameters");
  std::vector<std::string> seen;
  for (absl::string_view param : absl::StrSplit(params, ',')) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(param, absl::MaxSplits('=', 1));
    const absl::string_view key = kv.first;
    const absl::string_view value = kv.second;
    const bool has_value = param.find('=') != absl::string_view::npos;
    for (const std::string& k : seen) {
      if (k == key) return bad(absl::StrCat("parameter \"", key, "\" given twice"));
    }
    seen.emplace_back(key);
    const Method m = options.method;
    auto unknown = [&]() {
      return bad(absl::StrCat("unknown parameter \"", param, "\" for method ",
                              MethodName(m)));
    };
    if (m == Method::kGptq && !has_value &&
        (key == "act_order" || key == "static_groups")) {
      (key == "act_order" ? options.act_order : options.static_groups) = true;
    } else if (m == Method::kGptq && has_value && key == "damp") {
      if (!absl::SimpleAtod(value, &options.damp_percent) ||
          !(options.damp_percent >= 0) ||
          options.damp_percent > std::numeric_limits<double>::max()) {
        return bad(absl::StrCat("damp \"", value, "\" must be a finite number >= 0"));
      }
    } else if (m == Method::kGptq && has_value && key == "block") {
      if (!absl::SimpleAtoi(value, &options.block_size) ||
          options.block_size < 1) {
        return bad(absl::StrCat("block \"", value, "\" must be an integer >= 1"));
      }
    } else if (m == Method::kAwq && has_value && key == "grid") {
      if (!absl::SimpleAtoi(value, &options.n_grid) || options.n_grid < 1) {
        return bad(absl::StrCat("grid \"", value, "\" must be an integer >= 1"));
      }
    } else if (m == Method::kAwq && !has_value && key == "noclip") {
      options.clip_search = false;
    } else if (m == Method::kSmoothQuant && has_value && key == "alpha") {
      if (!absl::SimpleAtod(value, &options.alpha) || !(options.alpha >= 0) ||
          options.alpha > 1) {
        return bad(absl::StrCat("alpha \"", value, "\" must be in [0, 1]"));
      }
    } else {
      return unknown();
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Scheme> ParseScheme(absl::string_view text) {
  const size_t plus = text.find('+');
  if (plus == absl::string_view::npos) return ParseBaseScheme(text);
  QUANTD_ASSIGN_OR_RETURN(Scheme scheme, ParseBaseScheme(text.substr(0, plus)));
  QUANTD_RETURN_IF_ERROR(ParseMethod(text, text.substr(plus + 1), scheme.method));
  if (scheme.method.method != Method::kRtn &&
      scheme.method.method != Method::kGptq && GgmlFormatOf(scheme) != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed scheme \"", text, "\": ", MethodName(scheme.method.method),
        " applies to the int<b> formats, not to the ggml block format ",
        scheme.format, " (gptq does)"));
  }
  if (scheme.method.static_groups && GgmlFormatOf(scheme) != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed scheme \"", text, "\": static_groups does not apply to the "
        "ggml block format ", scheme.format, " (its blocks' scales are always "
        "fixed up front)"));
  }
  if (scheme.method.method != Method::kRtn &&
      LayoutKindOf(scheme) != LayoutKind::kGgmlBlock &&
      (LayoutKindOf(scheme) != LayoutKind::kInt || scheme.full_range)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed scheme \"", text, "\": ", MethodName(scheme.method.method),
        " applies to the int<b> formats with the default range, not to ",
        scheme.full_range ? "int<b>_full" : scheme.format));
  }
  return scheme;
}

namespace {

// The float, codebook and HQQ formats: nullopt when `text` names none of
// them, else the scheme or the error.
std::optional<absl::StatusOr<Scheme>> ParseNewFamily(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  std::vector<absl::string_view> parts = absl::StrSplit(lower, '_');
  Scheme scheme;
  size_t first_option = 0;
  // Float names have one or two '_'-separated words.
  for (size_t words = 1; words <= 2 && words <= parts.size(); ++words) {
    const std::string name =
        absl::StrJoin(parts.begin(), parts.begin() + static_cast<std::ptrdiff_t>(words), "_");
    if (IsFloatFormatName(name)) {
      scheme.format = name;
      first_option = words;
    }
  }
  if (first_option == 0) {  // not a float name
    scheme.format = std::string(parts[0]);
    if (LayoutKindOf(scheme) == LayoutKind::kInt ||
        LayoutKindOf(scheme) == LayoutKind::kGgmlBlock) {
      if (absl::StartsWith(parts[0], "kmeans") ||
          absl::StartsWith(parts[0], "pot") ||
          absl::StartsWith(parts[0], "hqq")) {
        return absl::StatusOr<Scheme>(absl::InvalidArgumentError(absl::StrCat(
            "unknown format \"", parts[0], "\" in scheme \"", text,
            "\" (kmeans<b> takes b in 1..8, pot<b> 2..8, hqq<b> 1..8)")));
      }
      return std::nullopt;
    }
    first_option = 1;
  }
  auto bad = [&](absl::string_view why) {
    return absl::StatusOr<Scheme>(absl::InvalidArgumentError(
        absl::StrCat("malformed scheme \"", text, "\": ", why)));
  };
  const LayoutKind kind = LayoutKindOf(scheme);
  FloatFormat ff = FloatFormat::kFp8E4m3;
  if (kind == LayoutKind::kFloat) ff = *ParseFloatFormat(scheme.format);
  const bool fp8 = ff == FloatFormat::kFp8E4m3 || ff == FloatFormat::kFp8E5m2;
  // Defaults.
  switch (kind) {
    case LayoutKind::kFloat:
      switch (ff) {
        case FloatFormat::kFp8E4m3:
        case FloatFormat::kFp8E5m2:
          scheme.granularity = Granularity::kPerTensor;
          break;
        case FloatFormat::kFp4E2m1:
          scheme.granularity = Granularity::kPerGroup;
          scheme.group_size = 32;
          break;
        case FloatFormat::kNf4:
          scheme.granularity = Granularity::kPerGroup;
          scheme.group_size = 64;
          break;
        case FloatFormat::kOcpMxfp8:
        case FloatFormat::kOcpMxfp4:
          scheme.granularity = Granularity::kPerGroup;
          scheme.group_size = 32;
          break;
        case FloatFormat::kNvfp4:
          scheme.granularity = Granularity::kPerGroup;
          scheme.group_size = 16;
          break;
      }
      break;
    case LayoutKind::kHqq:
      scheme.granularity = Granularity::kPerGroup;
      scheme.group_size = 64;
      break;
    default:
      scheme.granularity = Granularity::kPerChannel;
      break;
  }
  const bool fixed_blocks = kind == LayoutKind::kFloat &&
                            (ff == FloatFormat::kOcpMxfp8 ||
                             ff == FloatFormat::kOcpMxfp4 ||
                             ff == FloatFormat::kNvfp4);
  const bool nf4 = kind == LayoutKind::kFloat && ff == FloatFormat::kNf4;
  bool seen_granularity = false;
  for (size_t i = first_option; i < parts.size(); ++i) {
    const absl::string_view part = parts[i];
    if (fixed_blocks) {
      return bad(absl::StrCat(scheme.format,
                              " has fixed blocks and takes no options"));
    }
    if (part == "sym" || part == "asym" || part == "full") {
      return bad(absl::StrCat(scheme.format, " fixes its own symmetry"));
    }
    if (part == "dq") {
      if (!nf4) return bad("_dq (double quantization) applies to nf4 only");
      if (scheme.double_quant) return bad("_dq given twice");
      scheme.double_quant = true;
      continue;
    }
    if (seen_granularity) {
      return bad(absl::StrCat("unexpected \"", part, "\""));
    }
    seen_granularity = true;
    if (part == "tensor" && !nf4 && kind != LayoutKind::kHqq) {
      scheme.granularity = Granularity::kPerTensor;
      scheme.group_size = 0;
    } else if (part == "channel" && !nf4) {
      scheme.granularity = Granularity::kPerChannel;
      scheme.group_size = 0;
    } else if (part == "block" && kind == LayoutKind::kFloat) {
      scheme.granularity = Granularity::kPerGroup;
      scheme.group_size = fp8 ? 128 : (nf4 ? 64 : 32);
    } else if (part.size() > 1 && part[0] == 'g') {
      int64_t group_size = 0;
      if (!absl::SimpleAtoi(part.substr(1), &group_size) || group_size < 1 ||
          group_size > std::numeric_limits<int>::max() || part[1] == '+' ||
          part[1] == '-') {
        return bad(absl::StrCat("bad group size \"", part, "\""));
      }
      scheme.granularity = Granularity::kPerGroup;
      scheme.group_size = group_size;
    } else {
      return bad(
          absl::StrCat("unexpected \"", part, "\" for ", scheme.format));
    }
  }
  return absl::StatusOr<Scheme>(std::move(scheme));
}

absl::StatusOr<Scheme> ParseBaseScheme(absl::string_view text) {
  if (std::optional<absl::StatusOr<Scheme>> other = ParseNewFamily(text);
      other.has_value()) {
    return *std::move(other);
  }
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
    if (part == "sym" || part == "asym" || part == "full") {
      if (seen_symmetry) {
        return absl::InvalidArgumentError(absl::StrCat(
            "malformed scheme \"", text, "\": symmetry given twice"));
      }
      seen_symmetry = true;
      scheme.symmetric = part != "asym";
      scheme.full_range = part == "full";
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
          "\" (expected sym, asym, full, tensor, channel or g<N>)"));
    }
  }
  if (scheme.symmetric ? !traits->symmetric_ok : !traits->asymmetric_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("format ", scheme.format, " does not support ",
                     scheme.symmetric ? "symmetric" : "asymmetric", " codes"));
  }
  return scheme;
}

}  // namespace

namespace {

std::string MethodSuffix(const MethodOptions& m) {
  if (m.method == Method::kRtn) return "";
  const MethodOptions d;
  std::vector<std::string> params;
  if (m.method == Method::kGptq) {
    if (m.act_order) params.emplace_back("act_order");
    if (m.static_groups) params.emplace_back("static_groups");
    if (m.damp_percent != d.damp_percent) {
      params.push_back(absl::StrCat("damp=", ShortestDouble(m.damp_percent)));
    }
    if (m.block_size != d.block_size) {
      params.push_back(absl::StrCat("block=", m.block_size));
    }
  } else if (m.method == Method::kAwq) {
    if (m.n_grid != d.n_grid) params.push_back(absl::StrCat("grid=", m.n_grid));
    if (!m.clip_search) params.emplace_back("noclip");
  } else if (m.method == Method::kSmoothQuant) {
    if (m.alpha != d.alpha) {
      params.push_back(absl::StrCat("alpha=", ShortestDouble(m.alpha)));
    }
  }
  std::string out = absl::StrCat("+", MethodName(m.method));
  if (!params.empty()) absl::StrAppend(&out, "(", absl::StrJoin(params, ","), ")");
  return out;
}

}  // namespace

std::string SchemeToString(const Scheme& scheme) {
  if (const GgmlFormatTraits* block = GgmlFormatOf(scheme); block != nullptr) {
    return absl::StrCat(block->name, MethodSuffix(scheme.method));
  }
  if (LayoutKindOf(scheme) != LayoutKind::kInt) {
    std::string out = scheme.format;
    const bool fixed_blocks = scheme.format == "ocp_mxfp8" ||
                              scheme.format == "ocp_mxfp4" ||
                              scheme.format == "modelopt_nvfp4";
    if (!fixed_blocks) {
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
    }
    if (scheme.double_quant) absl::StrAppend(&out, "_dq");
    return out;
  }
  std::string out = absl::StrCat(
      scheme.format,
      scheme.full_range ? "_full" : (scheme.symmetric ? "_sym" : "_asym"));
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
  absl::StrAppend(&out, MethodSuffix(scheme.method));
  return out;
}

}  // namespace quantd

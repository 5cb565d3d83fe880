#include "proto/wire_convert.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <google/protobuf/util/message_differencer.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/ggml_formats.h"
#include "kernels/quantize.h"

namespace quantd {

namespace {

absl::StatusOr<MethodOptions> MethodFromProto(const v1::Scheme& proto) {
  MethodOptions m;
  switch (proto.method()) {
    case v1::QUANT_METHOD_UNSPECIFIED:
    case v1::QUANT_METHOD_RTN:
      return m;
    case v1::QUANT_METHOD_GPTQ: {
      m.method = Method::kGptq;
      const v1::GptqParams& p = proto.gptq();
      if (p.has_damp_percent()) m.damp_percent = p.damp_percent();
      if (!(m.damp_percent >= 0) ||
          m.damp_percent > std::numeric_limits<double>::max()) {
        return absl::InvalidArgumentError(
            "scheme.gptq.damp_percent must be finite and >= 0");
      }
      if (p.block_size() > 0) m.block_size = p.block_size();
      m.act_order = p.act_order();
      m.static_groups = p.static_groups();
      return m;
    }
    case v1::QUANT_METHOD_AWQ:
      m.method = Method::kAwq;
      if (proto.awq().n_grid() > 0) {
        m.n_grid = static_cast<int>(std::min<uint32_t>(proto.awq().n_grid(), 1 << 20));
      }
      m.clip_search = !proto.awq().no_clip_search();
      return m;
    case v1::QUANT_METHOD_SMOOTHQUANT:
      m.method = Method::kSmoothQuant;
      m.alpha = proto.smoothquant().alpha();
      if (!(m.alpha >= 0) || m.alpha > 1) {
        return absl::InvalidArgumentError(
            "scheme.smoothquant.alpha must be in [0, 1]");
      }
      return m;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown scheme.method ", proto.method()));
  }
}

void MethodToProto(const MethodOptions& m, v1::Scheme* proto) {
  switch (m.method) {
    case Method::kRtn:
      return;
    case Method::kGptq:
      proto->set_method(v1::QUANT_METHOD_GPTQ);
      proto->mutable_gptq()->set_damp_percent(m.damp_percent);
      proto->mutable_gptq()->set_block_size(static_cast<uint32_t>(m.block_size));
      proto->mutable_gptq()->set_act_order(m.act_order);
      proto->mutable_gptq()->set_static_groups(m.static_groups);
      return;
    case Method::kAwq:
      proto->set_method(v1::QUANT_METHOD_AWQ);
      proto->mutable_awq()->set_n_grid(static_cast<uint32_t>(m.n_grid));
      proto->mutable_awq()->set_no_clip_search(!m.clip_search);
      return;
    case Method::kSmoothQuant:
      proto->set_method(v1::QUANT_METHOD_SMOOTHQUANT);
      proto->mutable_smoothquant()->set_alpha(m.alpha);
      return;
  }
}

// The float, codebook and HQQ formats: a Scheme with an empty format when
// `proto` names none of them.
absl::StatusOr<Scheme> OtherSchemeFromProto(const v1::Scheme& proto,
                                            const MethodOptions& method) {
  Scheme scheme;
  scheme.format = absl::AsciiStrToLower(proto.format());
  const LayoutKind kind = LayoutKindOf(scheme);
  if (kind == LayoutKind::kInt || kind == LayoutKind::kGgmlBlock) {
    scheme.format.clear();
    return scheme;
  }
  // The name alone parses to the format's default granularity.
  absl::StatusOr<Scheme> parsed = ParseScheme(scheme.format);
  if (!parsed.ok()) return parsed.status();
  scheme = *parsed;
  const std::string& name = scheme.format;
  if (method.method != Method::kRtn) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheme.method ", MethodName(method.method),
        " applies to the int<b> formats, not to ", name));
  }
  if (proto.full_range()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheme.full_range applies to int<b>, not to ", name));
  }
  scheme.double_quant = proto.double_quant();
  if (scheme.double_quant && name != "nf4") {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheme.double_quant applies to nf4 only, not to ", name));
  }
  const bool fixed = name == "ocp_mxfp8" || name == "ocp_mxfp4" ||
                     name == "modelopt_nvfp4";
  switch (proto.granularity()) {
    case v1::GRANULARITY_UNSPECIFIED:
      break;  // the format's default, as parsed
    case v1::GRANULARITY_PER_TENSOR:
      scheme.granularity = Granularity::kPerTensor;
      scheme.group_size = 0;
      break;
    case v1::GRANULARITY_PER_CHANNEL:
      scheme.granularity = Granularity::kPerChannel;
      scheme.group_size = 0;
      break;
    case v1::GRANULARITY_PER_GROUP:
      if (proto.group_size() > 0) {
        scheme.granularity = Granularity::kPerGroup;
        scheme.group_size = static_cast<int64_t>(proto.group_size());
      } else if (scheme.granularity != Granularity::kPerGroup) {
        // The text form's default block: "_block" for floats.
        absl::StatusOr<Scheme> block =
            LayoutKindOf(scheme) == LayoutKind::kFloat
                ? ParseScheme(absl::StrCat(name, "_block"))
                : absl::StatusOr<Scheme>(absl::InvalidArgumentError(""));
        if (!block.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "scheme.group_size must be >= 1 for GRANULARITY_PER_GROUP with ",
              name));
        }
        scheme.granularity = Granularity::kPerGroup;
        scheme.group_size = block->group_size;
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown scheme.granularity ", proto.granularity()));
  }
  if (fixed) {
    const Scheme d = *parsed;
    if (scheme.granularity != d.granularity || scheme.group_size != d.group_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, " has fixed blocks of ", d.group_size,
          ": leave granularity unset or PER_GROUP with group_size 0 or ",
          d.group_size));
    }
  }
  return scheme;
}

// Scheme.text: parsed with ParseScheme, then through the same checks as a
// scheme given field by field, so both forms refuse the same schemes.
absl::StatusOr<Scheme> SchemeFromText(const v1::Scheme& proto) {
  v1::Scheme rest = proto;
  rest.clear_text();
  if (rest.ByteSizeLong() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheme.text \"", proto.text(), "\" is set together with ",
        rest.ShortDebugString(), ": give the text or the fields, not both"));
  }
  absl::StatusOr<Scheme> parsed = ParseScheme(proto.text());
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("scheme.text: ", parsed.status().message()));
  }
  v1::Scheme fields;
  SchemeToProto(*parsed, &fields);
  return SchemeFromProto(fields);
}

}  // namespace

absl::StatusOr<Scheme> SchemeFromProto(const v1::Scheme& proto) {
  if (!proto.text().empty()) return SchemeFromText(proto);
  Scheme scheme;
  if (proto.format().empty()) {
    return absl::InvalidArgumentError("scheme.format is empty");
  }
  absl::StatusOr<MethodOptions> method = MethodFromProto(proto);
  if (!method.ok()) return method.status();
  if (const GgmlFormatTraits* block = FindGgmlFormat(proto.format());
      block != nullptr) {
    if (method->method != Method::kRtn &&
        (method->method != Method::kGptq || method->static_groups)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "scheme.method ", MethodName(method->method),
          method->method == Method::kGptq
              ? " takes no static_groups on the ggml block format "
              : " applies to the int<b> formats, not to the ggml block format ",
          block->name, method->method == Method::kGptq
                           ? " (its block scales are always static)"
                           : " (gptq does)"));
    }
    // A block fixes symmetry and granularity: the other fields are ignored.
    scheme.format = block->name;
    scheme.method = *method;
    return scheme;
  }
  if (absl::StatusOr<Scheme> other = OtherSchemeFromProto(proto, *method);
      !other.ok() || !other->format.empty()) {
    return other;
  }
  if (FindFormat(proto.format()) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown scheme format \"", proto.format(), "\""));
  }
  if (proto.double_quant()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheme.double_quant applies to nf4 only, not to ", proto.format()));
  }
  scheme.format = proto.format();
  scheme.symmetric = proto.symmetric();
  scheme.full_range = proto.full_range();
  if (scheme.full_range && !scheme.symmetric) {
    return absl::InvalidArgumentError(
        "scheme.full_range is a symmetric convention: set symmetric too");
  }
  if (scheme.full_range && method->method != Method::kRtn) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheme.full_range takes round to nearest only, not method ",
        MethodName(method->method)));
  }
  scheme.method = *method;
  switch (proto.granularity()) {
    case v1::GRANULARITY_UNSPECIFIED:
    case v1::GRANULARITY_PER_CHANNEL:
      scheme.granularity = Granularity::kPerChannel;
      break;
    case v1::GRANULARITY_PER_TENSOR:
      scheme.granularity = Granularity::kPerTensor;
      break;
    case v1::GRANULARITY_PER_GROUP:
      scheme.granularity = Granularity::kPerGroup;
      scheme.group_size = static_cast<int64_t>(proto.group_size());
      if (scheme.group_size < 1) {
        return absl::InvalidArgumentError(
            "scheme.group_size must be >= 1 for GRANULARITY_PER_GROUP");
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown scheme.granularity ", proto.granularity()));
  }
  return scheme;
}

void SchemeToProto(const Scheme& scheme, v1::Scheme* proto) {
  if (const GgmlFormatTraits* block = GgmlFormatOf(scheme); block != nullptr) {
    proto->set_format(block->name);
    MethodToProto(scheme.method, proto);
    return;
  }
  proto->set_format(scheme.format);
  proto->set_symmetric(scheme.symmetric);
  if (scheme.full_range) proto->set_full_range(true);
  if (scheme.double_quant) proto->set_double_quant(true);
  switch (scheme.granularity) {
    case Granularity::kPerTensor:
      proto->set_granularity(v1::GRANULARITY_PER_TENSOR);
      break;
    case Granularity::kPerChannel:
      proto->set_granularity(v1::GRANULARITY_PER_CHANNEL);
      break;
    case Granularity::kPerGroup:
      proto->set_granularity(v1::GRANULARITY_PER_GROUP);
      proto->set_group_size(static_cast<uint32_t>(scheme.group_size));
      break;
  }
  MethodToProto(scheme.method, proto);
}

absl::StatusOr<DType> DTypeFromProto(int dtype) {
  switch (dtype) {
    case v1::DTYPE_F32: return DType::kF32;
    case v1::DTYPE_F16: return DType::kF16;
    case v1::DTYPE_BF16: return DType::kBF16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "unsupported dtype ", dtype, " (F32, F16 and BF16 are accepted)"));
  }
}

v1::DType DTypeToProto(DType dtype) {
  switch (dtype) {
    case DType::kF32: return v1::DTYPE_F32;
    case DType::kF16: return v1::DTYPE_F16;
    case DType::kBF16: return v1::DTYPE_BF16;
  }
  return v1::DTYPE_UNSPECIFIED;
}

void LayoutToProto(const Layout& layout, v1::Layout* proto) {
  SchemeToProto(layout.scheme, proto->mutable_scheme());
  for (int64_t d : layout.shape) proto->add_shape(static_cast<uint64_t>(d));
  proto->set_rows(static_cast<uint64_t>(layout.rows));
  proto->set_row_length(static_cast<uint64_t>(layout.row_length));
  proto->set_bits(static_cast<uint32_t>(layout.bits));
  proto->set_group_size(static_cast<uint64_t>(layout.group_size));
  proto->set_num_scales(static_cast<uint64_t>(layout.num_groups));
  proto->set_has_zero_points(!layout.IsBlockFormat() &&
                             !layout.scheme.symmetric);
  proto->set_packed_bytes(static_cast<uint64_t>(layout.packed_bytes));
  if (const GgmlFormatTraits* block = GgmlFormatOf(layout.scheme);
      layout.IsBlockFormat() && block != nullptr) {
    proto->set_block_size(static_cast<uint32_t>(layout.block_size));
    proto->set_block_bytes(static_cast<uint32_t>(layout.block_bytes));
    proto->set_ggml_type(static_cast<uint32_t>(block->type));
  }
  proto->set_kind(LayoutKindToProto(layout.kind));
  if (layout.kind == LayoutKind::kFloat) {
    const std::string& f = layout.scheme.format;
    v1::ElementFormat element = v1::ELEMENT_FORMAT_E2M1;
    if (f == "fp8_e4m3" || f == "ocp_mxfp8") element = v1::ELEMENT_FORMAT_E4M3;
    if (f == "fp8_e5m2") element = v1::ELEMENT_FORMAT_E5M2;
    if (f == "nf4") element = v1::ELEMENT_FORMAT_NF4;
    proto->set_element_format(element);
    proto->set_high_nibble_first(f == "nf4");
    if (layout.num_block_scales > 0) {
      proto->set_block_scale_format(
          f == "modelopt_nvfp4" ? v1::BLOCK_SCALE_FORMAT_E4M3
          : f == "nf4"          ? v1::BLOCK_SCALE_FORMAT_DYNAMIC_MAP
                                : v1::BLOCK_SCALE_FORMAT_E8M0);
    }
  }
  proto->set_num_block_scales(static_cast<uint64_t>(layout.num_block_scales));
  proto->set_block_scale_group_size(
      static_cast<uint64_t>(layout.block_scale_group_size));
  proto->set_num_second_scales(static_cast<uint64_t>(layout.num_second_scales));
  if (layout.num_second_scales > 0) proto->set_second_scale_group(256);
  proto->set_num_codebooks(static_cast<uint64_t>(layout.num_codebooks));
  proto->set_codebook_entries(static_cast<uint32_t>(layout.codebook_entries));
  proto->set_has_zero_points_f32(layout.float_zero_points);
  proto->set_has_group_index(layout.group_index);
  proto->set_scheme_text(SchemeToString(layout.scheme));
}

absl::StatusOr<Layout> LayoutFromProto(const v1::Layout& proto) {
  QUANTD_ASSIGN_OR_RETURN(Scheme scheme, SchemeFromProto(proto.scheme()));
  std::vector<int64_t> shape;
  shape.reserve(static_cast<size_t>(proto.shape_size()));
  for (uint64_t d : proto.shape()) {
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat("layout: dimension ", d, " out of range"));
    }
    shape.push_back(static_cast<int64_t>(d));
  }
  QUANTD_ASSIGN_OR_RETURN(Layout layout, MakeLayout(scheme, shape));
  QUANTD_RETURN_IF_ERROR(CheckLayoutProto(layout, proto));
  return layout;
}

absl::Status CheckLayoutProto(const Layout& layout, const v1::Layout& proto) {
  v1::Layout want;
  LayoutToProto(layout, &want);
  want.set_tensor_scale(proto.tensor_scale());
  want.set_scale_offset(proto.scale_offset());
  google::protobuf::util::MessageDifferencer differencer;
  std::string differences;
  differencer.ReportDifferencesToString(&differences);
  if (!differencer.Compare(want, proto)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout differs from what scheme ", SchemeToString(layout.scheme),
        " and its shape give: ",
        absl::StripTrailingAsciiWhitespace(differences)));
  }
  return absl::OkStatus();
}

v1::ShardChunk::Part PartToProto(Part part) {
  return static_cast<v1::ShardChunk::Part>(SpecOf(part).wire);
}

const PartSpec* PartFromProto(int part) { return SpecOfWire(part); }

absl::StatusOr<OutputKind> OutputKindFromProto(int output) {
  switch (output) {
    case v1::OUTPUT_KIND_UNSPECIFIED:
    case v1::OUTPUT_KIND_PACKED:
      return OutputKind::kPacked;
    case v1::OUTPUT_KIND_FAKE_QUANT:
      return OutputKind::kFakeQuant;
    case v1::OUTPUT_KIND_BOTH:
      return OutputKind::kBoth;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown output kind ", output));
  }
}

v1::LayoutKind LayoutKindToProto(LayoutKind kind) {
  switch (kind) {
    case LayoutKind::kInt: return v1::LAYOUT_KIND_INT;
    case LayoutKind::kGgmlBlock: return v1::LAYOUT_KIND_GGML_BLOCK;
    case LayoutKind::kFloat: return v1::LAYOUT_KIND_FLOAT;
    case LayoutKind::kCodebook: return v1::LAYOUT_KIND_CODEBOOK;
    case LayoutKind::kHqq: return v1::LAYOUT_KIND_HQQ;
  }
  return v1::LAYOUT_KIND_UNSPECIFIED;
}

void FormatTablesToProto(v1::ServerInfo* info) {
  for (const FormatTraits& f : FormatTable()) {
    v1::FormatInfo* fi = info->add_formats();
    fi->set_kind(v1::LAYOUT_KIND_INT);
    fi->set_name(f.name);
    fi->set_bits(static_cast<uint32_t>(f.bits));
    fi->add_granularities(v1::GRANULARITY_PER_TENSOR);
    fi->add_granularities(v1::GRANULARITY_PER_CHANNEL);
    fi->add_granularities(v1::GRANULARITY_PER_GROUP);
    fi->set_symmetric(f.symmetric_ok);
    fi->set_asymmetric(f.asymmetric_ok);
    fi->set_description(f.description);
  }
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    v1::FormatInfo* fi = info->add_formats();
    fi->set_name(f.name);
    fi->set_block_size(static_cast<uint32_t>(f.block_size));
    fi->set_block_bytes(static_cast<uint32_t>(f.block_bytes));
    fi->set_ggml_type(static_cast<uint32_t>(f.type));
    fi->set_bits_per_weight(8.0 * f.block_bytes / f.block_size);
    fi->set_uses_importance(f.uses_importance);
    fi->set_description(f.description);
    fi->set_kind(v1::LAYOUT_KIND_GGML_BLOCK);
  }
  // Float, codebook and HQQ formats: bits per weight at the default
  // granularity of a 4096 x 4096 tensor.
  struct Other {
    const char* name;
    const char* description;
  };
  static constexpr Other kOthers[] = {
      {"fp8_e4m3", "FP8 E4M3 with f32 scales (per tensor, channel or group)"},
      {"fp8_e5m2", "FP8 E5M2 with f32 scales (per tensor, channel or group)"},
      {"fp4_e2m1", "FP4 E2M1 with f32 scales (default groups of 32)"},
      {"nf4", "bitsandbytes NF4, f32 absmax per block (default 64), _dq: "
              "double-quantized absmax"},
      {"ocp_mxfp8", "OCP MXFP8: E4M3, E8M0 scale per 32"},
      {"ocp_mxfp4", "OCP MXFP4: E2M1, E8M0 scale per 32"},
      {"modelopt_nvfp4", "ModelOpt NVFP4: E2M1, E4M3 scale per 16, f32 "
                         "tensor scale"},
      {"kmeans1", nullptr}, {"kmeans2", nullptr}, {"kmeans3", nullptr},
      {"kmeans4", nullptr}, {"kmeans5", nullptr}, {"kmeans6", nullptr},
      {"kmeans7", nullptr}, {"kmeans8", nullptr},
      {"pot2", nullptr}, {"pot3", nullptr}, {"pot4", nullptr},
      {"pot5", nullptr}, {"pot6", nullptr}, {"pot7", nullptr},
      {"pot8", nullptr},
      {"hqq1", nullptr}, {"hqq2", nullptr}, {"hqq3", nullptr},
      {"hqq4", nullptr}, {"hqq5", nullptr}, {"hqq6", nullptr},
      {"hqq7", nullptr}, {"hqq8", nullptr},
  };
  for (const Other& o : kOthers) {
    absl::StatusOr<Scheme> scheme = ParseScheme(o.name);
    if (!scheme.ok()) continue;
    absl::StatusOr<Layout> layout = MakeLayout(*scheme, {4096, 4096});
    if (!layout.ok()) continue;
    v1::FormatInfo* fi = info->add_formats();
    fi->set_name(o.name);
    fi->set_bits(static_cast<uint32_t>(layout->bits));
    fi->set_kind(LayoutKindToProto(layout->kind));
    if (layout->kind == LayoutKind::kFloat) {
      const std::string& f = scheme->format;
      if (f == "fp8_e4m3" || f == "fp8_e5m2" || f == "fp4_e2m1") {
        fi->add_granularities(v1::GRANULARITY_PER_TENSOR);
        fi->add_granularities(v1::GRANULARITY_PER_CHANNEL);
      }
      fi->add_granularities(v1::GRANULARITY_PER_GROUP);
    } else {
      if (layout->kind == LayoutKind::kCodebook) {
        fi->add_granularities(v1::GRANULARITY_PER_TENSOR);
      }
      fi->add_granularities(v1::GRANULARITY_PER_CHANNEL);
      fi->add_granularities(v1::GRANULARITY_PER_GROUP);
    }
    fi->set_symmetric(layout->kind == LayoutKind::kFloat);
    fi->set_asymmetric(layout->kind == LayoutKind::kHqq);
    fi->set_bits_per_weight(layout->BitsPerWeight());
    if (o.description != nullptr) {
      fi->set_description(o.description);
    } else if (layout->kind == LayoutKind::kHqq) {
      fi->set_description(absl::StrCat(
          "HQQ ", layout->bits, "-bit, f32 scale and zero point per group "
          "(default 64)"));
    } else {
      fi->set_description(absl::StrCat(
          layout->num_groups > 0 ? "power-of-two " : "k-means ", layout->bits,
          "-bit codebook per group (default one per row)"));
    }
  }
}

void MetricsToProto(const ErrorMetrics& metrics, v1::Metrics* proto) {
  proto->set_mse(metrics.mse);
  proto->set_rmse(metrics.rmse);
  proto->set_max_abs_error(metrics.max_abs_error);
  proto->set_sqnr_db(metrics.sqnr_db);
  proto->set_cosine_similarity(metrics.cosine_similarity);
  proto->set_bits_per_weight(metrics.bits_per_weight);
}

absl::StatusOr<RangeOptions> RangeOptionsFromProto(
    const v1::ActivationRangeOptions& proto) {
  RangeOptions options;
  switch (proto.method()) {
    case v1::RANGE_METHOD_UNSPECIFIED:
    case v1::RANGE_METHOD_MINMAX: options.method = RangeMethod::kMinMax; break;
    case v1::RANGE_METHOD_PERCENTILE:
      options.method = RangeMethod::kPercentile;
      break;
    case v1::RANGE_METHOD_MSE: options.method = RangeMethod::kMse; break;
    case v1::RANGE_METHOD_KL: options.method = RangeMethod::kKl; break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown range method ", proto.method()));
  }
  options.symmetric = !proto.asymmetric();
  options.per_channel = proto.per_channel();
  if (proto.percentile() != 0) {
    if (options.method != RangeMethod::kPercentile) {
      return absl::InvalidArgumentError(
          "percentile is set but the method is not PERCENTILE");
    }
    if (!(proto.percentile() >= 50 && proto.percentile() <= 100)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "percentile ", proto.percentile(), " is outside [50, 100]"));
    }
    options.percentile = proto.percentile();
  }
  return options;
}

v1::RangeMethod RangeMethodToProto(RangeMethod method) {
  switch (method) {
    case RangeMethod::kMinMax: return v1::RANGE_METHOD_MINMAX;
    case RangeMethod::kPercentile: return v1::RANGE_METHOD_PERCENTILE;
    case RangeMethod::kMse: return v1::RANGE_METHOD_MSE;
    case RangeMethod::kKl: return v1::RANGE_METHOD_KL;
  }
  return v1::RANGE_METHOD_UNSPECIFIED;
}

void OutputErrorToProto(const OutputError& error, const std::string& set,
                        int64_t tokens, v1::OutputMetrics* proto) {
  proto->set_calibration(set);
  proto->set_tokens(static_cast<uint64_t>(tokens));
  proto->set_relative_error(error.relative_error);
  proto->set_sqnr_db(error.sqnr_db);
  proto->set_error_sq(error.error_sq);
  proto->set_signal_sq(error.signal_sq);
}

void ActivationRangeToProto(const ActivationRange& range,
                            absl::Span<const ActivationRange> channels,
                            const RangeOptions& options, const std::string& set,
                            v1::ActivationRange* proto) {
  proto->set_calibration(set);
  proto->set_method(RangeMethodToProto(options.method));
  proto->set_symmetric(options.symmetric);
  proto->set_lo(range.lo);
  proto->set_hi(range.hi);
  proto->set_scale(range.scale);
  proto->set_zero_point(range.zero_point);
  proto->mutable_channels()->Reserve(static_cast<int>(channels.size()));
  for (const ActivationRange& c : channels) {
    v1::ChannelRange* out = proto->add_channels();
    out->set_lo(c.lo);
    out->set_hi(c.hi);
    out->set_scale(c.scale);
    out->set_zero_point(c.zero_point);
  }
}

}  // namespace quantd

#include "server/assembler.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "kernels/ggml_formats.h"
#include "kernels/quantize_tensor.h"
#include "proto/wire_convert.h"

namespace quantd {
namespace {

absl::Status Bad(absl::string_view tensor, absl::string_view what) {
  if (tensor.empty()) return absl::InvalidArgumentError(what);
  return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor, ": ", what));
}

// Checks TensorHeader.scales / zero_points (QAT import) against the
// tensor's layout (see the proto) and copies them out.
absl::Status CheckImportedScales(absl::string_view tensor, const Layout& layout,
                                 const v1::TensorHeader& header,
                                 std::vector<float>& scales,
                                 std::vector<uint8_t>& zero_points) {
  if (layout.kind != LayoutKind::kInt ||
      layout.scheme.method.method != Method::kRtn) {
    return Bad(tensor, absl::StrCat(
                           "imported scales apply to int<b> schemes with "
                           "round to nearest, not to ",
                           SchemeToString(layout.scheme)));
  }
  const auto groups = static_cast<size_t>(layout.num_groups);
  if (static_cast<size_t>(header.scales_size()) != groups) {
    return Bad(tensor, absl::StrCat(header.scales_size(),
                                    " imported scales sent; the layout has ",
                                    groups, " groups"));
  }
  const bool symmetric = layout.scheme.symmetric;
  if (static_cast<size_t>(header.zero_points_size()) != (symmetric ? 0 : groups)) {
    return Bad(tensor,
               absl::StrCat(header.zero_points_size(),
                            " imported zero points sent; ",
                            symmetric ? "a symmetric scheme takes none"
                                      : absl::StrCat("the layout has ", groups,
                                                     " groups")));
  }
  const uint32_t zp_max = (1u << layout.bits) - 1;
  for (size_t g = 0; g < groups; ++g) {
    const float s = header.scales(static_cast<int>(g));
    if (!std::isfinite(s) || !(s > 0.0f)) {
      return Bad(tensor, absl::StrCat("imported scale of group ", g, " is ", s,
                                      " (must be finite and > 0)"));
    }
  }
  for (int g = 0; g < header.zero_points_size(); ++g) {
    if (header.zero_points(g) > zp_max) {
      return Bad(tensor, absl::StrCat("imported zero point of group ", g,
                                      " is ", header.zero_points(g),
                                      " (must be in [0, ", zp_max, "])"));
    }
  }
  scales.assign(header.scales().begin(), header.scales().end());
  zero_points.reserve(static_cast<size_t>(header.zero_points_size()));
  for (uint32_t zp : header.zero_points()) {
    zero_points.push_back(static_cast<uint8_t>(zp));
  }
  return absl::OkStatus();
}

// Checks TensorHeader.importance against the tensor's layout (see the
// proto): empty, or row_length finite weights >= 0 for a block format whose
// importance path the kernels implement.
absl::Status CheckImportance(absl::string_view tensor, const Layout& layout,
                             absl::Span<const float> importance) {
  if (importance.empty()) return absl::OkStatus();
  if (!layout.IsBlockFormat()) {
    return Bad(tensor, absl::StrCat(
                           importance.size(), " importance weights sent, but ",
                           SchemeToString(layout.scheme),
                           " has no importance path (only ggml block formats "
                           "take them)"));
  }
  if (static_cast<int64_t>(importance.size()) != layout.row_length) {
    return Bad(tensor,
               absl::StrCat(importance.size(),
                            " importance weights sent; the row length is ",
                            layout.row_length, " (one weight per column)"));
  }
  for (size_t i = 0; i < importance.size(); ++i) {
    const float v = importance[i];
    if (!std::isfinite(v) || v < 0) {
      return Bad(tensor, absl::StrCat("importance weight ", i, " is ", v,
                                      " (weights must be finite and >= 0)"));
    }
  }
  // Ask the kernels on one block whether this format takes weights, so an
  // unsupported request fails before the tensor is uploaded.
  const GgmlFormatTraits* block = GgmlFormatOf(layout.scheme);
  if (block == nullptr) {
    return absl::InternalError(absl::StrCat(
        "tensor ", tensor, ": block format ", layout.scheme.format,
        " not in the table"));
  }
  const std::vector<float> zeros(static_cast<size_t>(block->block_size), 0.0f);
  std::vector<uint8_t> probe(static_cast<size_t>(block->block_bytes));
  absl::Status s = GgmlQuantize(*block, zeros.data(), 1, block->block_size,
                                importance.data(), probe.data());
  if (!s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("tensor ", tensor, ": importance weights: ",
                                     s.message()));
  }
  return absl::OkStatus();
}

absl::Status SetBad(absl::string_view set, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("calibration set '", set, "': ", what));
}

// True iff the IEEE bits of `v` (binary32 or binary16/bfloat16 widened) have
// an all-ones exponent.
bool NonFinite(DType dtype, const char* p) {
  if (dtype == DType::kF32) {
    uint32_t bits;
    std::memcpy(&bits, p, 4);
    return (bits & 0x7F800000u) == 0x7F800000u;
  }
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return dtype == DType::kF16 ? (bits & 0x7C00u) == 0x7C00u
                              : (bits & 0x7F80u) == 0x7F80u;
}

}  // namespace

absl::StatusOr<StreamAssembler::Event> StreamAssembler::OnCalibrationHeader(
    const v1::CalibrationHeader& header) {
  const std::string& name = header.name();
  if (open_) {
    return Bad(open_name_,
               absl::StrCat("calibration set '", name,
                            "' opened before this tensor's end"));
  }
  if (open_set_) {
    return SetBad(open_set_->spec.name,
                  absl::StrCat("calibration set '", name,
                               "' opened before this set's CalibrationEnd"));
  }
  if (name.empty()) return Bad("", "CalibrationHeader.name is empty");
  if (static_cast<int64_t>(name.size()) > limits_.max_name_bytes) {
    return Bad("", absl::StrCat("calibration set name longer than ",
                                limits_.max_name_bytes, " bytes"));
  }
  if (sets_.contains(name)) return SetBad(name, "name sent twice in this stream");
  CalibrationSpec spec;
  spec.name = name;
  switch (header.kind()) {
    case v1::CALIBRATION_KIND_UNSPECIFIED:
    case v1::CALIBRATION_KIND_ACTIVATIONS:
      spec.kind = CalibrationKind::kActivations;
      break;
    case v1::CALIBRATION_KIND_GRAM:
      spec.kind = CalibrationKind::kGram;
      break;
    case v1::CALIBRATION_KIND_IMPORTANCE:
      spec.kind = CalibrationKind::kImportance;
      break;
    default:
      return SetBad(name, absl::StrCat("unknown kind ", header.kind()));
  }
  const bool activations = spec.kind == CalibrationKind::kActivations;
  if (activations) {
    absl::StatusOr<DType> dtype = DTypeFromProto(header.dtype());
    if (!dtype.ok()) return SetBad(name, dtype.status().message());
    spec.dtype = *dtype;
  } else if (header.dtype() != v1::DTYPE_UNSPECIFIED) {
    return SetBad(name, "dtype must be unset for GRAM (f64) and IMPORTANCE "
                        "(f32) sets");
  }
  if (header.features() < 1 || header.features() > (uint64_t{1} << 24)) {
    return SetBad(name, absl::StrCat("features ", header.features(),
                                     " out of range [1, 2^24]"));
  }
  spec.features = static_cast<int64_t>(header.features());
  if (activations && header.tokens() != 0) {
    return SetBad(name, "tokens must be 0 for ACTIVATIONS (the server counts "
                        "the rows)");
  }
  if (!activations &&
      (header.tokens() < 1 ||
       header.tokens() > static_cast<uint64_t>(
                             std::numeric_limits<int64_t>::max()))) {
    return SetBad(name, absl::StrCat("tokens ", header.tokens(),
                                     " must be >= 1 for GRAM and IMPORTANCE"));
  }
  spec.tokens = static_cast<int64_t>(header.tokens());
  if (header.channel_histograms() && !activations) {
    return SetBad(name, "channel_histograms is for ACTIVATIONS sets only");
  }
  spec.channel_histograms = header.channel_histograms();
  if (header.holdout_rows() != 0 && !activations) {
    return SetBad(name, "holdout_rows is for ACTIVATIONS sets only");
  }
  if (header.holdout_rows() > static_cast<uint64_t>(kMaxHoldoutRows)) {
    return SetBad(name, absl::StrCat("holdout_rows ", header.holdout_rows(),
                                     " is above ", kMaxHoldoutRows));
  }
  spec.holdout_rows = static_cast<int64_t>(header.holdout_rows());

  auto set = std::make_unique<OpenSet>();
  set->spec = spec;
  set->expected_bytes = CalibrationBufferBytes(spec);
  Event ev;
  ev.kind = Event::kCalibrationHeader;
  ev.name = name;
  ev.working_set_bytes = CalibrationSetBytes(spec);
  ev.buffer_bytes = set->expected_bytes;
  ev.calibration = std::move(spec);
  open_set_ = std::move(set);
  return ev;
}

absl::StatusOr<StreamAssembler::Event> StreamAssembler::OnCalibrationChunk(
    v1::CalibrationChunk& chunk) {
  if (open_) {
    return Bad(open_name_, "CalibrationChunk arrived before this tensor's end");
  }
  if (!open_set_) {
    return Bad("", "CalibrationChunk without an open calibration set (no "
                   "CalibrationHeader)");
  }
  OpenSet& set = *open_set_;
  const std::string& name = set.spec.name;
  const auto size = static_cast<int64_t>(chunk.data().size());
  if (size > limits_.max_chunk_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "calibration set '", name, "': chunk of ", size,
        " bytes exceeds max_chunk_bytes=", limits_.max_chunk_bytes));
  }
  if (chunk.offset() != static_cast<uint64_t>(set.received_bytes)) {
    return SetBad(name, absl::StrCat("chunk offset ", chunk.offset(), " but ",
                                     set.received_bytes,
                                     " bytes were received (chunks must be in "
                                     "order, without gaps or overlaps)"));
  }
  const bool activations = set.spec.kind == CalibrationKind::kActivations;
  const int64_t elem = DTypeSize(set.spec.dtype);
  const int64_t row_bytes = set.spec.features * elem;
  if (activations) {
    if (size == 0 || size % row_bytes != 0) {
      return SetBad(name, absl::StrCat("chunk of ", size,
                                       " bytes is not whole rows of ",
                                       set.spec.features, " ",
                                       DTypeName(set.spec.dtype), " values (",
                                       row_bytes, " bytes per row)"));
    }
  } else if (size > set.expected_bytes - set.received_bytes) {
    return SetBad(name, absl::StrCat("chunk ends at byte ",
                                     set.received_bytes + size, " but the set "
                                     "holds ", set.expected_bytes, " bytes"));
  }
  const uint32_t actual = Crc32c(chunk.data().data(), chunk.data().size());
  if (chunk.has_crc32c() && actual != chunk.crc32c()) {
    return absl::DataLossError(absl::StrCat(
        "calibration set '", name, "': chunk at offset ", chunk.offset(),
        " has crc32c ", absl::Hex(actual, absl::kZeroPad8),
        " but was sent with ", absl::Hex(chunk.crc32c(), absl::kZeroPad8),
        " (corrupted in transit)"));
  }
  Event ev;
  if (activations) {
    const char* data = chunk.data().data();
    const int64_t first_token = set.received_bytes / row_bytes;
    for (int64_t i = 0; i < size / elem; ++i) {
      if (NonFinite(set.spec.dtype, data + i * elem)) {
        return SetBad(name, absl::StrCat(
                                "row ", i / set.spec.features, " of the chunk "
                                "(token ", first_token + i / set.spec.features,
                                "), column ", i % set.spec.features,
                                " is NaN or infinite"));
      }
    }
    ev.kind = Event::kCalibrationChunk;
    ev.name = name;
    ev.working_set_bytes = CalibrationChunkBytes(set.spec.dtype, size);
    ev.data = std::move(*chunk.mutable_data());
  } else {
    // Allocated on the first chunk, after the reactor reserved the budget.
    char* dst;
    if (set.spec.kind == CalibrationKind::kGram) {
      if (set.payload.gram.empty()) {
        set.payload.gram.resize(static_cast<size_t>(set.expected_bytes / 8));
      }
      dst = reinterpret_cast<char*>(set.payload.gram.data());
    } else {
      if (set.payload.importance.empty()) {
        set.payload.importance.resize(
            static_cast<size_t>(set.expected_bytes / 4));
      }
      dst = reinterpret_cast<char*>(set.payload.importance.data());
    }
    std::memcpy(dst + set.received_bytes, chunk.data().data(),
                static_cast<size_t>(size));
  }
  set.running_crc32c =
      Crc32cCombine(set.running_crc32c, actual, static_cast<uint64_t>(size));
  set.received_bytes += size;
  return ev;
}

absl::StatusOr<StreamAssembler::Event> StreamAssembler::OnCalibrationEnd(
    const v1::CalibrationEnd& end) {
  if (open_) {
    return Bad(open_name_, "CalibrationEnd arrived before this tensor's end");
  }
  if (!open_set_) {
    return Bad("", "CalibrationEnd without an open calibration set (no "
                   "CalibrationHeader)");
  }
  OpenSet& set = *open_set_;
  const std::string& name = set.spec.name;
  if (set.spec.kind == CalibrationKind::kActivations) {
    if (set.received_bytes == 0) {
      return SetBad(name, "no rows arrived before CalibrationEnd (a set needs "
                          "at least one token)");
    }
  } else if (set.received_bytes != set.expected_bytes) {
    return SetBad(name, absl::StrCat("CalibrationEnd after ", set.received_bytes,
                                     " bytes; ", set.spec.features,
                                     " features need ", set.expected_bytes));
  }
  if (end.has_crc32c() && end.crc32c() != set.running_crc32c) {
    return absl::DataLossError(absl::StrCat(
        "calibration set '", name, "': crc32c of the whole set is ",
        absl::Hex(set.running_crc32c, absl::kZeroPad8),
        " but CalibrationEnd says ", absl::Hex(end.crc32c(), absl::kZeroPad8)));
  }
  sets_[name] = {set.spec.features, set.spec.holdout_rows};
  Event ev;
  ev.kind = Event::kCalibrationEnd;
  ev.name = name;
  ev.payload = std::move(set.payload);
  open_set_.reset();
  return ev;
}

absl::StatusOr<StreamAssembler::Event> StreamAssembler::Consume(
    v1::QuantizeRequest& request) {
  if (!started_ && request.kind_case() != v1::QuantizeRequest::kStart) {
    return Bad("", "the first message of a stream must be JobStart");
  }
  switch (request.kind_case()) {
    case v1::QuantizeRequest::kStart:
      return OnStart(request.start());
    case v1::QuantizeRequest::kHeader:
      return OnHeader(request.header());
    case v1::QuantizeRequest::kChunk:
      return OnChunk(*request.mutable_chunk());
    case v1::QuantizeRequest::kEnd:
      return OnEnd(request.end());
    case v1::QuantizeRequest::kCalibrationHeader:
      return OnCalibrationHeader(request.calibration_header());
    case v1::QuantizeRequest::kCalibrationChunk:
      return OnCalibrationChunk(*request.mutable_calibration_chunk());
    case v1::QuantizeRequest::kCalibrationEnd:
      return OnCalibrationEnd(request.calibration_end());
    default:
      return Bad(open_name_, "empty QuantizeRequest (no message kind set)");
  }
}

absl::StatusOr<StreamAssembler::Event> StreamAssembler::OnStart(
    const v1::JobStart& start) {
  if (started_) return Bad("", "JobStart sent twice");
  if (!start.has_scheme()) return Bad("", "JobStart.scheme is missing");
  absl::StatusOr<Scheme> scheme = SchemeFromProto(start.scheme());
  if (!scheme.ok()) {
    return Bad("", absl::StrCat("JobStart: ", scheme.status().message()));
  }
  default_scheme_ = *std::move(scheme);
  if (start.options().has_activation_range()) {
    absl::StatusOr<RangeOptions> range =
        RangeOptionsFromProto(start.options().activation_range());
    if (!range.ok()) {
      return Bad("", absl::StrCat("JobOptions.activation_range: ",
                                  range.status().message()));
    }
    default_range_ = *range;
  }
  absl::StatusOr<OutputKind> output =
      OutputKindFromProto(start.options().output());
  if (!output.ok()) {
    return Bad("", absl::StrCat("unknown JobOptions.output ",
                                start.options().output()));
  }
  output_ = *output;
  started_ = true;
  Event ev;
  ev.kind = Event::kStart;
  return ev;
}

absl::StatusOr<StreamAssembler::Event> StreamAssembler::OnHeader(
    const v1::TensorHeader& header) {
  const std::string& name = header.name();
  if (open_) {
    return Bad(open_name_, absl::StrCat("header for \"", name,
                                        "\" arrived before this tensor's end"));
  }
  if (open_set_) {
    return SetBad(open_set_->spec.name,
                  absl::StrCat("header of tensor \"", name,
                               "\" arrived before this set's CalibrationEnd"));
  }
  if (name.empty()) return Bad("", "TensorHeader.name is empty");
  if (static_cast<int64_t>(name.size()) > limits_.max_name_bytes) {
    return Bad("", absl::StrCat("tensor name longer than ",
                                limits_.max_name_bytes, " bytes"));
  }
  if (seen_names_.contains(name)) {
    return Bad(name, "name sent twice in this stream");
  }
  absl::StatusOr<DType> dtype = DTypeFromProto(header.dtype());
  if (!dtype.ok()) return Bad(name, dtype.status().message());

  Scheme scheme = default_scheme_;
  if (header.has_scheme()) {
    absl::StatusOr<Scheme> s = SchemeFromProto(header.scheme());
    if (!s.ok()) return Bad(name, s.status().message());
    scheme = *std::move(s);
  }
  std::vector<int64_t> shape;
  shape.reserve(static_cast<size_t>(header.shape_size()));
  for (uint64_t d : header.shape()) {
    if (d == 0 || d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Bad(name, absl::StrCat("shape dimension ", d,
                                    " is out of range (must be >= 1)"));
    }
    shape.push_back(static_cast<int64_t>(d));
  }
  absl::StatusOr<Layout> layout = MakeLayout(scheme, shape);
  if (!layout.ok()) return Bad(name, layout.status().message());
  const absl::Span<const float> importance(header.importance().data(),
                                           header.importance().size());
  if (absl::Status s = CheckImportance(name, *layout, importance); !s.ok()) {
    return s;
  }

  std::vector<float> imported_scales;
  std::vector<uint8_t> imported_zero_points;
  if (header.scales_size() > 0 || header.zero_points_size() > 0) {
    absl::Status s = CheckImportedScales(name, *layout, header,
                                         imported_scales, imported_zero_points);
    if (!s.ok()) return s;
  }

  int64_t calibration_features = 0;
  int64_t holdout_rows = 0;
  if (!header.calibration().empty()) {
    auto it = sets_.find(header.calibration());
    if (it == sets_.end()) {
      return Bad(name, absl::StrCat("calibration set '", header.calibration(),
                                    "' is unknown in this stream (a set must "
                                    "end before the tensors that use it)"));
    }
    calibration_features = it->second.features;
    holdout_rows = it->second.holdout_rows;
    if (layout->row_length != calibration_features) {
      return Bad(name, absl::StrCat("row length ", layout->row_length,
                                    " differs from the ", calibration_features,
                                    " features of calibration set '",
                                    header.calibration(), "'"));
    }
  }
  RangeOptions range = default_range_;
  if (header.has_activation_range()) {
    absl::StatusOr<RangeOptions> r =
        RangeOptionsFromProto(header.activation_range());
    if (!r.ok()) {
      return Bad(name, absl::StrCat("activation_range: ", r.status().message()));
    }
    range = *r;
  }

  const int64_t elem = DTypeSize(*dtype);
  if (layout->num_elements > limits_.max_tensor_bytes / elem) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tensor ", name, ": ", layout->num_elements, " elements of ",
        DTypeName(*dtype), " exceed max_tensor_bytes=", limits_.max_tensor_bytes));
  }
  expected_bytes_ = layout->num_elements * elem;
  received_bytes_ = 0;
  running_crc32c_ = 0;

  auto tensor = std::make_unique<TensorInput>();
  tensor->name = name;
  tensor->dtype = *dtype;
  tensor->output = output_;
  tensor->layout = *std::move(layout);
  tensor->bytes = expected_bytes_;
  tensor->importance.assign(importance.begin(), importance.end());
  tensor->imported_scales = std::move(imported_scales);
  tensor->imported_zero_points = std::move(imported_zero_points);
  tensor->calibration_name = header.calibration();
  tensor->activation_range = range;
  seen_names_.insert(name);
  open_name_ = name;

  Event ev;
  ev.kind = Event::kHeader;
  ev.name = name;
  ev.working_set_bytes = WorkingSetBytes(tensor->layout, tensor->dtype,
                                         tensor->output,
                                         !tensor->calibration_name.empty(),
                                         holdout_rows);
  open_ = std::move(tensor);
  return ev;
}

absl::StatusOr<StreamAssembler::Event> StreamAssembler::OnChunk(
    v1::TensorChunk& chunk) {
  if (open_set_) {
    return SetBad(open_set_->spec.name,
                  "TensorChunk arrived before this set's CalibrationEnd");
  }
  if (!open_) return Bad("", "TensorChunk without an open tensor (no header)");
  const auto size = static_cast<int64_t>(chunk.data().size());
  if (size > limits_.max_chunk_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tensor ", open_name_, ": chunk of ", size,
                     " bytes exceeds max_chunk_bytes=", limits_.max_chunk_bytes));
  }
  if (chunk.offset() != static_cast<uint64_t>(received_bytes_)) {
    return Bad(open_name_,
               absl::StrCat("chunk offset ", chunk.offset(), " but ",
                            received_bytes_,
                            " bytes were received (chunks must be in order, "
                            "without gaps or overlaps)"));
  }
  if (size > expected_bytes_ - received_bytes_) {
    return Bad(open_name_,
               absl::StrCat("chunk ends at byte ", received_bytes_ + size,
                            " but the shape holds ", expected_bytes_, " bytes"));
  }
  if (open_->storage.empty() && expected_bytes_ > 0) {
    // Allocated on the first chunk, after the reactor reserved the budget.
    open_->storage.resize(static_cast<size_t>((expected_bytes_ + 3) / 4));
  }
  const uint32_t actual = Crc32c(chunk.data().data(), chunk.data().size());
  if (chunk.has_crc32c()) {
    if (actual != chunk.crc32c()) {
      return absl::DataLossError(absl::StrCat(
          "tensor ", open_name_, ": chunk at offset ", chunk.offset(),
          " has crc32c ", absl::Hex(actual, absl::kZeroPad8), " but was sent with ",
          absl::Hex(chunk.crc32c(), absl::kZeroPad8), " (corrupted in transit)"));
    }
  }
  running_crc32c_ = Crc32cCombine(running_crc32c_, actual,
                                  static_cast<uint64_t>(size));
  std::memcpy(reinterpret_cast<char*>(open_->storage.data()) + received_bytes_,
              chunk.data().data(), static_cast<size_t>(size));
  received_bytes_ += size;
  return Event{};
}

absl::StatusOr<StreamAssembler::Event> StreamAssembler::OnEnd(
    const v1::TensorEnd& end) {
  if (open_set_) {
    return SetBad(open_set_->spec.name,
                  "TensorEnd arrived before this set's CalibrationEnd");
  }
  if (!open_) return Bad("", "TensorEnd without an open tensor (no header)");
  if (received_bytes_ != expected_bytes_) {
    return Bad(open_name_,
               absl::StrCat("TensorEnd after ", received_bytes_,
                            " bytes; the shape and dtype need ",
                            expected_bytes_));
  }
  if (end.has_crc32c() && end.crc32c() != running_crc32c_) {
    return absl::DataLossError(absl::StrCat(
        "tensor ", open_name_, ": crc32c of the whole tensor is ",
        absl::Hex(running_crc32c_, absl::kZeroPad8), " but TensorEnd says ",
        absl::Hex(end.crc32c(), absl::kZeroPad8)));
  }
  if (open_->storage.empty()) {
    open_->storage.resize(static_cast<size_t>((expected_bytes_ + 3) / 4));
  }
  Event ev;
  ev.kind = Event::kTensor;
  ev.name = open_name_;
  ev.tensor = std::move(open_);
  open_name_.clear();
  return ev;
}

absl::Status StreamAssembler::Finish() const {
  if (!started_) return Bad("", "stream closed before JobStart");
  if (open_set_) {
    return SetBad(open_set_->spec.name,
                  absl::StrCat("stream ended inside the set after ",
                               open_set_->received_bytes,
                               " bytes, before its CalibrationEnd (truncated)"));
  }
  if (open_) {
    return Bad(open_name_,
               absl::StrCat("stream ended inside the tensor after ",
                            received_bytes_, " of ", expected_bytes_,
                            " bytes (truncated)"));
  }
  return absl::OkStatus();
}

}  // namespace quantd

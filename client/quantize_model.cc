#include "client/quantize_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <list>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "client/calibration_input.h"
#include "client/dispatcher.h"
#include "client/overrides.h"
#include "client/pipeline.h"
#include "client/quantd_client.h"
#include "client/resume_manifest.h"
#include "client/safetensors.h"
#include "client/server_set.h"
#include "kernels/dtype.h"
#include "kernels/ggml_formats.h"
#include "kernels/layout.h"
#include "kernels/scheme.h"
#include "kernels/version.h"

namespace quantd {

namespace {

// One safetensors entry NAME.<suffix> of a quantized tensor's output: a
// row of the part table the layout has (its file suffix, element type and
// shape: .qweight, .scales, .zero_points, .block_scales, .g_idx, ...), or
// a per-tensor value of the layout stored as one F32 (NF4 double quant's
// .scale_offset, NVFP4's .tensor_scale). A fake-quant output is the
// dequantized values alone, under the tensor's own name (already in the
// original space, so AWQ's channel scales are not needed).
struct OutputEntry {
  std::string suffix;  // "" for the tensor's own name
  absl::string_view dtype;
  std::vector<int64_t> shape;
  std::optional<Part> part;       // a part of the reply, or
  float (*value)(const v1::Layout&) = nullptr;  // a per-tensor value
};
std::vector<OutputEntry> OutputEntries(const Layout& layout, bool fake_quant) {
  std::vector<OutputEntry> entries;
  for (const PartSpec& spec : PartTable()) {
    const bool wanted = fake_quant ? spec.part == Part::kFakeQuant
                                   : PartBytes(spec, layout, OutputKind::kPacked) > 0;
    if (!wanted) continue;
    entries.push_back({std::string(spec.file_suffix),
                       PartElementName(spec.element), spec.file_shape(layout),
                       spec.part});
  }
  if (fake_quant) return entries;
  if (layout.num_second_scales > 0) {
    entries.push_back({"scale_offset", "F32", {1}, std::nullopt,
                       [](const v1::Layout& l) { return l.scale_offset(); }});
  }
  if (layout.scheme.format == "modelopt_nvfp4") {
    entries.push_back({"tensor_scale", "F32", {1}, std::nullopt,
                       [](const v1::Layout& l) { return l.tensor_scale(); }});
  }
  return entries;
}

std::string EntryName(const std::string& tensor, const OutputEntry& entry) {
  return entry.suffix.empty() ? tensor : absl::StrCat(tensor, ".", entry.suffix);
}

// A tensor to send, and what the output expects of it.
struct Item {
  const SafetensorsTensor* tensor = nullptr;
  DType dtype = DType::kF32;
  Scheme scheme;
  bool has_scheme_override = false;
  Layout layout;
  size_t summary = 0;  // index into summaries
};

// The output tensors of one quantized tensor.
std::vector<std::string> OutputNames(const Item& item, bool fake_quant) {
  std::vector<std::string> names;
  for (const OutputEntry& e : OutputEntries(item.layout, fake_quant)) {
    names.push_back(EntryName(item.tensor->name, e));
  }
  return names;
}

// The safetensors output of a run: the answer's parts as NAME.<suffix>
// entries (OutputEntries), checked against the layout planned for them.
class SafetensorsOutput : public OutputContainer {
 public:
  SafetensorsOutput(std::unique_ptr<SafetensorsWriter> writer,
                    const std::vector<Item>& items, bool fake_quant)
      : writer_(std::move(writer)), items_(items), fake_quant_(fake_quant) {}

  absl::Status Check(size_t index, const TensorReply& reply) override {
    if (fake_quant_) return absl::OkStatus();
    const Item& item = items_[index];
    // The client checked the reply's layout against its scheme and shape;
    // it must also be the one this output was planned for.
    if (absl::Status s = CheckLayoutProto(item.layout, reply.layout); !s.ok()) {
      return absl::InternalError(
          absl::StrCat("tensor \"", item.tensor->name, "\": server ",
                       s.message(), "; the output was planned for ",
                       SchemeToString(item.layout.scheme)));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<StoredPart>> Write(
      size_t index, const TensorReply& reply) override {
    const Item& item = items_[index];
    std::vector<StoredPart> parts;
    for (const OutputEntry& e : OutputEntries(item.layout, fake_quant_)) {
      const std::string name = EntryName(item.tensor->name, e);
      if (e.part.has_value()) {
        const std::vector<uint8_t>& bytes = reply.part(*e.part);
        QUANTD_RETURN_IF_ERROR(writer_->Write(name, 0, bytes));
        // The reply's checked CRC.
        parts.push_back({name, reply.crc32c[*e.part], bytes.size()});
      } else {
        const float v = e.value(reply.layout);
        std::vector<uint8_t> scalar(sizeof(float));
        std::memcpy(scalar.data(), &v, sizeof(float));
        QUANTD_RETURN_IF_ERROR(writer_->Write(name, 0, scalar));
        parts.push_back(
            {name, Crc32c(scalar.data(), scalar.size()), scalar.size()});
      }
    }
    return parts;
  }

  bool Keep(size_t index, const Json& parts) override {
    const std::vector<std::string> names =
        OutputNames(items_[index], fake_quant_);
    if (parts.size() != names.size()) return false;
    for (const std::string& name : names) {
      if (!parts.contains(name) || !parts[name].is_number_unsigned()) {
        return false;
      }
      absl::StatusOr<uint32_t> crc = writer_->SlotCrc32c(name);
      if (!crc.ok() || parts[name].get<uint64_t>() != *crc) return false;
    }
    for (const std::string& name : names) {
      if (!writer_->MarkComplete(name).ok()) return false;
    }
    return true;
  }

  bool resumed() const override { return writer_->resumed(); }
  const std::string& partial_path() const override { return partial_path_; }
  absl::Status Finish() override { return writer_->Finish(); }
  void Close() override { writer_.reset(); }

  // For the tensors copied through.
  SafetensorsWriter& writer() { return *writer_; }

 private:
  std::unique_ptr<SafetensorsWriter> writer_;
  const std::string partial_path_ = writer_->partial_path();
  const std::vector<Item>& items_;
  const bool fake_quant_;
};

std::string LayoutMetadata(const Layout& layout, const std::string& dtype,
                           bool fake_quant) {
  OrderedJson j;
  j["scheme"] = SchemeToString(layout.scheme);
  j["format"] = layout.scheme.format;
  if (layout.IsBlockFormat()) {
    // A ggml block format: NAME.qweight holds the blocks as in a GGUF.
    const GgmlFormatTraits* ggml = GgmlFormatOf(layout.scheme);
    j["ggml_type"] = ggml != nullptr ? static_cast<int>(ggml->type) : -1;
    j["block_size"] = layout.block_size;
    j["block_bytes"] = layout.block_bytes;
    j["bits_per_weight"] = layout.BitsPerWeight();
    j["shape"] = layout.shape;
    j["packed_bytes"] = layout.packed_bytes;
    j["dtype"] = dtype;
    j["fake_quant"] = fake_quant;
    return WriteJson(j);
  }
  if (layout.kind != LayoutKind::kInt) {
    // Float, codebook and HQQ formats: message Layout of the proto states
    // how the parts read.
    j["kind"] = std::string(LayoutKindName(layout.kind));
    j["bits"] = layout.bits;
    j["granularity"] = std::string(GranularityName(layout.scheme.granularity));
    j["group_size"] = layout.group_size;
    j["shape"] = layout.shape;
    j["num_scales"] = layout.num_groups;
    j["packed_bytes"] = layout.packed_bytes;
    j["num_block_scales"] = layout.num_block_scales;
    j["block_scale_group_size"] = layout.block_scale_group_size;
    j["num_second_scales"] = layout.num_second_scales;
    j["num_codebooks"] = layout.num_codebooks;
    j["codebook_entries"] = layout.codebook_entries;
    j["float_zero_points"] = layout.float_zero_points;
    j["double_quant"] = layout.scheme.double_quant;
    j["bits_per_weight"] = layout.BitsPerWeight();
    j["dtype"] = dtype;
    j["fake_quant"] = fake_quant;
    return WriteJson(j);
  }
  j["bits"] = layout.bits;
  j["symmetric"] = layout.scheme.symmetric;
  if (layout.scheme.full_range) j["full_range"] = true;
  j["granularity"] = std::string(GranularityName(layout.scheme.granularity));
  j["group_size"] = layout.group_size;
  j["shape"] = layout.shape;
  j["num_scales"] = layout.num_groups;
  j["packed_bytes"] = layout.packed_bytes;
  // NAME.g_idx: column c of row r uses scale r * groups_per_row + g_idx[c]
  // (with --fake-quant no .g_idx is written: the values are dequantized).
  if (layout.group_index && !fake_quant) j["group_index"] = true;
  j["dtype"] = dtype;
  j["fake_quant"] = fake_quant;
  return WriteJson(j);
}

// Why `tensor` is copied through rather than quantized; empty if it is
// quantized.
std::string CopyNote(const SafetensorsTensor& tensor,
                     const SchemeOverride* rule, bool quantize_1d) {
  if (!ParseDType(tensor.dtype).ok()) {
    return absl::StrCat("dtype ", tensor.dtype, " is not quantizable");
  }
  if (rule != nullptr && !rule->scheme) {
    return absl::StrCat("skipped by override \"", rule->text, "\"");
  }
  if (tensor.num_elements == 0) return "empty tensor";
  if (tensor.shape.size() < 2 && !quantize_1d) {
    return tensor.shape.empty() ? "scalar" : "1-D tensor";
  }
  return "";
}

// Whole bits of `scheme` on `tensor`; nullopt if it does not fit.
std::optional<double> SchemeBits(const Scheme& scheme,
                                 const SafetensorsTensor& tensor) {
  absl::StatusOr<Layout> layout = MakeLayout(scheme, tensor.shape);
  if (!layout.ok()) return std::nullopt;
  return std::round(layout->BitsPerWeight() *
                    static_cast<double>(tensor.num_elements));
}

// The run's calibration input: the sets, each quantized tensor's set, and
// the batches the sets are sent in.
struct Calibration {
  CalibrationInputs inputs;
  // Tensor name -> its set (index into inputs.sets).
  absl::flat_hash_map<std::string, size_t> set_of;
  // Set index -> batch index.
  std::vector<size_t> batch_of_set;
  size_t num_batches = 0;
  std::optional<v1::ActivationRangeOptions> range;

  // The batch of a tensor: that of its set, or num_batches (no set).
  size_t BatchOf(const std::string& tensor) const {
    auto it = set_of.find(tensor);
    return it == set_of.end() ? num_batches : batch_of_set[it->second];
  }
  const CalibrationSetRequest* SetOf(const std::string& tensor) const {
    auto it = set_of.find(tensor);
    return it == set_of.end() ? nullptr : &inputs.sets[it->second];
  }
  // The sets of batch `b` (none for b == num_batches).
  std::vector<CalibrationSetRequest> Sets(size_t b) const {
    std::vector<CalibrationSetRequest> out;
    for (size_t i = 0; i < inputs.sets.size(); ++i) {
      if (batch_of_set[i] == b) out.push_back(inputs.sets[i]);
    }
    return out;
  }
};

absl::StatusOr<Calibration> LoadCalibration(
    const QuantizeModelOptions& options, const SafetensorsModel& model,
    absl::Span<const SchemeOverride> overrides) {
  Calibration c;
  if (!options.activation_range.empty()) {
    QUANTD_ASSIGN_OR_RETURN(c.range,
                            ParseActivationRange(options.activation_range));
  }
  if (options.calibration_files.empty()) {
    if (!options.calibration_rules.empty() || options.holdout_rows != 0) {
      return absl::InvalidArgumentError(
          "calibration rules and held-back rows need calibration files");
    }
    return c;
  }
  if (options.holdout_rows < 0 || options.holdout_rows > 4096) {
    return absl::InvalidArgumentError("held-back rows must be in [0, 4096]");
  }
  CalibrationInputOptions input_options;
  input_options.holdout_rows = options.holdout_rows;
  input_options.channel_histograms =
      c.range.has_value() && c.range->per_channel() &&
      c.range->method() != v1::RANGE_METHOD_MINMAX &&
      c.range->method() != v1::RANGE_METHOD_UNSPECIFIED;
  QUANTD_ASSIGN_OR_RETURN(
      c.inputs, LoadCalibrationInputs(options.calibration_files, input_options));
  QUANTD_ASSIGN_OR_RETURN(std::vector<CalibrationRule> rules,
                          ParseCalibrationRules(options.calibration_rules));
  std::vector<bool> used(c.inputs.sets.size(), false);
  for (const SafetensorsTensor* tensor : model.tensors()) {
    if (!CopyNote(*tensor, FindOverride(overrides, tensor->name),
                  options.quantize_1d)
             .empty()) {
      continue;
    }
    QUANTD_ASSIGN_OR_RETURN(const CalibrationSetRequest* set,
                            CalibrationSetFor(tensor->name, rules, c.inputs));
    if (set == nullptr) continue;
    const int64_t row = tensor->shape.empty() ? 1 : tensor->shape.back();
    if (set->features != row) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", tensor->name, "\" has rows of ", row,
          " elements and its calibration set \"", set->name, "\" has ",
          set->features, " features"));
    }
    const size_t index = static_cast<size_t>(set - c.inputs.sets.data());
    c.set_of[tensor->name] = index;
    used[index] = true;
  }
  // Sets no tensor uses are not sent.
  std::vector<CalibrationSetRequest> kept;
  std::vector<size_t> new_index(c.inputs.sets.size());
  for (size_t i = 0; i < c.inputs.sets.size(); ++i) {
    if (!used[i]) continue;
    new_index[i] = kept.size();
    kept.push_back(c.inputs.sets[i]);
  }
  for (auto& [name, index] : c.set_of) index = new_index[index];
  c.inputs.sets = std::move(kept);
  const std::vector<std::vector<size_t>> batches = BatchCalibrationSets(
      c.inputs.sets, std::max<int64_t>(options.calibration_batch_bytes, 1));
  c.batch_of_set.resize(c.inputs.sets.size());
  for (size_t b = 0; b < batches.size(); ++b) {
    for (size_t i : batches[b]) c.batch_of_set[i] = b;
  }
  c.num_batches = batches.size();
  return c;
}

// The mixed-precision pass: measures the candidates on every quantized
// tensor that no override fixes and chooses their schemes for the target.
absl::StatusOr<MixedPrecisionPlan> PlanMixedPrecision(
    const QuantizeModelOptions& options, const SafetensorsModel& model,
    absl::Span<const SchemeOverride> rules, const Scheme& default_scheme,
    uint64_t max_tensor_bytes, const DispatchOptions& dispatch,
    absl::Span<const DispatchServer> targets, const Calibration& calibration) {
  if (!(options.target_bpw >= 0) || !std::isfinite(options.target_bpw) ||
      (options.target_bpw > 0) == (options.target_bytes > 0)) {
    return absl::InvalidArgumentError(
        "give one mixed-precision target: a positive bits per weight or a "
        "positive byte count");
  }
  MixedPrecisionPlan plan;
  plan.target_bpw = options.target_bpw;
  plan.target_bytes = options.target_bytes;
  QUANTD_ASSIGN_OR_RETURN(std::vector<Scheme> candidates,
                          ParseCandidates(options.candidates));
  for (const Scheme& c : candidates) {
    plan.candidates.push_back(SchemeToString(c));
  }
  std::vector<CandidateTensor> free;
  std::vector<const SafetensorsTensor*> free_tensors;
  for (const SafetensorsTensor* tensor : model.tensors()) {
    const SchemeOverride* rule = FindOverride(rules, tensor->name);
    if (!CopyNote(*tensor, rule, options.quantize_1d).empty()) {
      plan.copied_bits += 8.0 * static_cast<double>(tensor->data.size());
      continue;
    }
    plan.quantized_params += tensor->num_elements;
    if (rule != nullptr || tensor->data.size() > max_tensor_bytes) {
      // Fixed by an override (a tensor that cannot be sent fails the run).
      plan.fixed_bits +=
          SchemeBits(rule != nullptr ? *rule->scheme : default_scheme, *tensor)
              .value_or(0);
      continue;
    }
    const CalibrationSetRequest* set = calibration.SetOf(tensor->name);
    free.push_back({tensor->name, *ParseDType(tensor->dtype), tensor->shape,
                    tensor->data, set != nullptr ? set->name : ""});
    free_tensors.push_back(tensor);
  }
  // Measured batch by batch of calibration sets (one round without sets).
  std::vector<TensorCurve> curves(free.size());
  for (size_t b = 0; b <= calibration.num_batches; ++b) {
    std::vector<CandidateTensor> subset;
    std::vector<size_t> where;
    for (size_t i = 0; i < free.size(); ++i) {
      if (calibration.BatchOf(free[i].name) != b) continue;
      subset.push_back(free[i]);
      where.push_back(i);
    }
    if (subset.empty()) continue;
    DispatchOptions batch = dispatch;
    batch.job.calibration_sets = calibration.Sets(b);
    std::vector<TensorCurve> measured =
        MeasureCandidates(batch, targets, subset, candidates);
    for (size_t k = 0; k < measured.size(); ++k) {
      curves[where[k]] = std::move(measured[k]);
    }
  }
  bool all_output = !free.empty();
  for (const CandidateTensor& t : free) all_output &= !t.calibration.empty();
  if (options.mixed_error == "output" && !all_output) {
    return absl::InvalidArgumentError(
        "mixed precision on the output error needs a calibration set for every "
        "tensor it chooses for");
  }
  if (options.mixed_error != "auto" && options.mixed_error != "weight" &&
      options.mixed_error != "output") {
    return absl::InvalidArgumentError(absl::StrCat(
        "mixed error \"", options.mixed_error, "\": expected auto, weight or "
        "output"));
  }
  plan.measure = options.mixed_error == "output" ||
                         (options.mixed_error == "auto" && all_output)
                     ? ErrorMeasure::kOutput
                     : ErrorMeasure::kWeight;
  for (size_t i = 0; i < curves.size(); ++i) {
    if (curves[i].points.empty()) {  // nothing fits: the default scheme
      plan.fixed_bits +=
          SchemeBits(default_scheme, *free_tensors[i]).value_or(0);
    } else {
      plan.curves.push_back(std::move(curves[i]));
    }
  }
  const double quantized_params = static_cast<double>(plan.quantized_params);
  const double total =
      plan.target_bpw > 0
          ? plan.target_bpw * quantized_params
          : 8.0 * static_cast<double>(plan.target_bytes) - plan.copied_bits;
  plan.budget_bits = total - plan.fixed_bits;
  double min_bits = plan.fixed_bits;
  for (const TensorCurve& curve : plan.curves) {
    double least = std::numeric_limits<double>::infinity();
    for (const CurvePoint& p : curve.points) least = std::min(least, p.bits);
    min_bits += least;
  }
  if (min_bits > total) {
    return absl::InvalidArgumentError(
        plan.target_bpw > 0
            ? absl::StrFormat(
                  "target of %.3f bits per weight is below the least the "
                  "candidates and overrides allow, %.3f",
                  plan.target_bpw,
                  min_bits / std::max(quantized_params, 1.0))
            : absl::StrFormat(
                  "target of %d bytes is below the least the candidates, "
                  "overrides and copied tensors allow, %.0f",
                  plan.target_bytes, (min_bits + plan.copied_bits) / 8));
  }
  MixedChoiceOptions choice_options;
  choice_options.measure = plan.measure;
  QUANTD_ASSIGN_OR_RETURN(
      plan.choice,
      ChooseMixedPrecision(plan.curves, plan.budget_bits, choice_options));
  plan.planned_bpw =
      (plan.fixed_bits + plan.choice.bits) / std::max(quantized_params, 1.0);
  return plan;
}

}  // namespace

absl::StatusOr<RunSummary> QuantizeModel(const QuantizeModelOptions& options) {
  const absl::Time start = absl::Now();
  if (options.model.empty()) {
    return absl::InvalidArgumentError("no model given");
  }
  if (options.output.empty()) {
    return absl::InvalidArgumentError("no output file given");
  }
  if (options.servers.empty() && options.channels.empty()) {
    return absl::InvalidArgumentError("no server given");
  }
  if (options.streams_per_server < 1 || options.max_in_flight_tensors < 1 ||
      options.max_attempts < 1) {
    return absl::InvalidArgumentError(
        "streams per server, tensors in flight and attempts must be >= 1");
  }
  absl::StatusOr<Scheme> parsed_scheme = ParseScheme(options.scheme);
  if (!parsed_scheme.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheme \"", options.scheme, "\": ", parsed_scheme.status().message()));
  }
  const Scheme default_scheme = *parsed_scheme;
  QUANTD_ASSIGN_OR_RETURN(std::vector<SchemeOverride> rules,
                          ParseOverrides(options.overrides));
  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsModel> model,
                          SafetensorsModel::Open(options.model));
  QUANTD_ASSIGN_OR_RETURN(Calibration calibration,
                          LoadCalibration(options, *model, rules));

  // Servers: one channel and client each, checked with GetServerInfo.
  RunSummary run;
  run.model = options.model;
  run.scheme = SchemeToString(default_scheme);
  run.fake_quant = options.fake_quant;
  QUANTD_ASSIGN_OR_RETURN(ServerSet server_set, ConnectServers(options));
  run.servers = server_set.servers;
  run.down_servers = server_set.down_servers;
  const uint64_t max_tensor_bytes = server_set.max_tensor_bytes;
  const std::string& max_tensor_bytes_server = server_set.max_tensor_bytes_server;
  const std::vector<DispatchServer>& targets = server_set.targets;

  DispatchOptions dispatch;
  dispatch.job.scheme = default_scheme;
  dispatch.job.output =
      options.fake_quant ? v1::OUTPUT_KIND_FAKE_QUANT : v1::OUTPUT_KIND_PACKED;
  dispatch.job.client_name = options.client_name;
  dispatch.job.max_in_flight_tensors = options.max_in_flight_tensors;
  dispatch.max_attempts = options.max_attempts;
  if (calibration.range) dispatch.job.activation_range = *calibration.range;

  // Mixed precision: each free tensor's scheme, chosen for the target.
  absl::flat_hash_map<std::string, Scheme> mixed_schemes;
  if (options.target_bpw != 0 || options.target_bytes != 0) {
    const bool talk = options.progress != ProgressStyle::kNone;
    if (talk) {
      std::fprintf(stderr, "quantctl: measuring the candidate schemes\n");
    }
    QUANTD_ASSIGN_OR_RETURN(
        MixedPrecisionPlan plan,
        PlanMixedPrecision(options, *model, rules, default_scheme,
                           max_tensor_bytes, dispatch, targets, calibration));
    for (size_t i = 0; i < plan.curves.size(); ++i) {
      const CurvePoint& point = plan.curves[i].points[static_cast<size_t>(
          plan.choice.point[i])];
      mixed_schemes[plan.curves[i].name] = *ParseScheme(point.scheme);
    }
    if (talk) {
      std::fprintf(stderr,
                   "quantctl: mixed precision: %d tensors, planned %.3f bits "
                   "per weight\n",
                   static_cast<int>(plan.curves.size()), plan.planned_bpw);
    }
    run.mixed = std::move(plan);
  }

  // Plan: what happens to each tensor, and the output's entries.
  std::vector<TensorSummary>& summaries = run.tensors;
  std::vector<Item> items;
  std::vector<SafetensorsWriter::Entry> entries;
  std::map<std::string, std::string> metadata = model->metadata();
  metadata["quantd.version"] = QUANTD_VERSION;
  metadata["quantd.format_version"] = kOutputFormatVersion;
  metadata["quantd.scheme"] = run.scheme;
  metadata["quantd.fake_quant"] = options.fake_quant ? "true" : "false";
  std::vector<const SafetensorsTensor*> copies;
  uint64_t send_bytes = 0;
  for (const SafetensorsTensor* tensor : model->tensors()) {
    TensorSummary s;
    s.name = tensor->name;
    s.dtype = tensor->dtype;
    s.shape = tensor->shape;
    s.num_elements = tensor->num_elements;
    s.bytes_in = tensor->data.size();
    const SchemeOverride* rule = FindOverride(rules, tensor->name);
    absl::StatusOr<DType> dtype = ParseDType(tensor->dtype);
    s.note = CopyNote(*tensor, rule, options.quantize_1d);
    if (!s.note.empty()) {
      s.action = TensorAction::kCopied;
      s.bytes_out = s.bytes_in;
      entries.push_back({tensor->name, tensor->dtype, tensor->shape});
      copies.push_back(tensor);
      summaries.push_back(std::move(s));
      continue;
    }
    Item item;
    item.tensor = tensor;
    item.dtype = *dtype;
    item.scheme = rule != nullptr ? *rule->scheme : default_scheme;
    if (auto it = mixed_schemes.find(tensor->name);
        rule == nullptr && it != mixed_schemes.end()) {
      item.scheme = it->second;
    }
    item.has_scheme_override = !(item.scheme == default_scheme);
    s.scheme = SchemeToString(item.scheme);
    absl::StatusOr<Layout> layout = MakeLayout(item.scheme, tensor->shape);
    if (!layout.ok()) {
      s.action = TensorAction::kFailed;
      s.status =
          absl::Status(layout.status().code(),
                       absl::StrCat("tensor \"", tensor->name, "\" ",
                                    ShapeText(s.shape), " with scheme ",
                                    s.scheme, ": ", layout.status().message()));
      summaries.push_back(std::move(s));
      continue;
    }
    item.layout = *std::move(layout);
    if (tensor->data.size() > max_tensor_bytes) {
      // Known in advance: sending it would only be refused.
      s.action = TensorAction::kFailed;
      s.status = absl::ResourceExhaustedError(
          absl::StrCat("tensor \"", tensor->name, "\": ", tensor->data.size(),
                       " bytes exceed max_tensor_bytes=", max_tensor_bytes,
                       " of server ", max_tensor_bytes_server));
      summaries.push_back(std::move(s));
      continue;
    }
    metadata[absl::StrCat("quantd.", tensor->name)] =
        LayoutMetadata(item.layout, tensor->dtype, options.fake_quant);
    for (const OutputEntry& e : OutputEntries(item.layout, options.fake_quant)) {
      entries.push_back(
          {EntryName(tensor->name, e), std::string(e.dtype), e.shape});
    }
    item.summary = summaries.size();
    send_bytes += tensor->data.size();
    items.push_back(std::move(item));
    summaries.push_back(std::move(s));
  }

  SafetensorsWriter::Options writer_options;
  writer_options.resume = options.resume;
  writer_options.keep_partial = true;  // a failed run can be resumed
  QUANTD_ASSIGN_OR_RETURN(
      std::unique_ptr<SafetensorsWriter> writer,
      SafetensorsWriter::Create(options.output, std::move(entries), metadata,
                                writer_options));
  SafetensorsOutput output(std::move(writer), items, options.fake_quant);
  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<Manifest> manifest,
                          OpenManifest(output));

  // The requests; those an interrupted earlier run already finished are
  // kept.
  std::vector<PipelineItem> requests;
  requests.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& item = items[i];
    PipelineItem request;
    request.request.name = item.tensor->name;
    request.request.dtype = item.dtype;
    request.request.shape = item.tensor->shape;
    if (item.has_scheme_override) request.request.scheme = item.scheme;
    request.request.data = item.tensor->data;
    if (const CalibrationSetRequest* set =
            calibration.SetOf(request.request.name);
        set != nullptr) {
      request.request.calibration = set->name;
    }
    request.summary = item.summary;
    request.container_index = i;
    request.batch = calibration.BatchOf(request.request.name);
    requests.push_back(std::move(request));
  }
  send_bytes = KeepFinished(output, *manifest, options.fake_quant, requests,
                            run);
  // One round per batch of calibration sets, then the tensors without.
  std::vector<std::vector<CalibrationSetRequest>> batch_sets;
  for (size_t b = 0; b <= calibration.num_batches; ++b) {
    batch_sets.push_back(calibration.Sets(b));
  }
  // Tensors passed through are copied while the streams run.
  auto copy = [&]() -> absl::Status {
    for (const SafetensorsTensor* tensor : copies) {
      constexpr size_t kPiece = size_t{64} << 20;
      for (size_t offset = 0; offset < tensor->data.size(); offset += kPiece) {
        QUANTD_RETURN_IF_ERROR(output.writer().Write(
            tensor->name, offset, tensor->data.subspan(offset, kPiece)));
      }
    }
    return absl::OkStatus();
  };
  QUANTD_RETURN_IF_ERROR(SendItems(options, options.fake_quant, dispatch,
                                   targets, batch_sets, requests, send_bytes,
                                   output, *manifest, run, copy));
  ComputeTotals(send_bytes, start, run);
  QUANTD_RETURN_IF_ERROR(FinishRun(options, output, *manifest, run));
  return run;
}

}  // namespace quantd

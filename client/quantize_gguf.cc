#include "client/quantize_gguf.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "client/dispatcher.h"
#include "client/gguf.h"
#include "client/imatrix.h"
#include "client/llama_presets.h"
#include "client/pipeline.h"
#include "client/quantd_client.h"
#include "client/server_set.h"
#include "kernels/convert.h"
#include "kernels/dtype.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

bool IsFloatType(uint32_t type) {
  return type == kGgmlTypeF32 || type == kGgmlTypeF16 ||
         type == kGgmlTypeBF16;
}

DType ToDType(uint32_t type) {
  if (type == kGgmlTypeF16) return DType::kF16;
  if (type == kGgmlTypeBF16) return DType::kBF16;
  return DType::kF32;
}

// Converts between F32/F16/BF16 as ggml does (through f32, rounding to
// nearest even).
std::vector<uint8_t> ConvertFloat(const GgufTensor& t, uint32_t to) {
  const size_t n = static_cast<size_t>(t.num_elements);
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) {
    if (t.type == kGgmlTypeF32) {
      std::memcpy(&f[i], t.data.data() + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, t.data.data() + 2 * i, 2);
      f[i] = t.type == kGgmlTypeF16 ? HalfToFloat(h) : BFloat16ToFloat(h);
    }
  }
  std::vector<uint8_t> out;
  if (to == kGgmlTypeF32) {
    out.resize(4 * n);
    std::memcpy(out.data(), f.data(), out.size());
    return out;
  }
  out.resize(2 * n);
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h =
        to == kGgmlTypeF16 ? FloatToHalf(f[i]) : FloatToBFloat16(f[i]);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

// One request of the dispatch: a whole tensor, or one expert matrix of a
// 3-D tensor (each expert has its own importance weights).
struct Piece {
  size_t tensor = 0;
  uint64_t out_offset = 0;  // within the output tensor
  uint64_t out_bytes = 0;
};

// The GGUF output of a run: each answer's block bytes at its piece's place
// in the output tensor.
class GgufOutput : public OutputContainer {
 public:
  GgufOutput(std::unique_ptr<GgufWriter> writer,
             const std::vector<GgufTensor>& tensors,
             const std::vector<GgufTensorSummary>& plan,
             const std::vector<Piece>& pieces)
      : writer_(std::move(writer)),
        tensors_(tensors),
        plan_(plan),
        pieces_(pieces) {}

  absl::Status Check(size_t index, const TensorReply& reply) override {
    const Piece& piece = pieces_[index];
    if (reply.part(Part::kCodes).size() != piece.out_bytes) {
      return absl::DataLossError(absl::StrCat(
          "tensor ", tensors_[piece.tensor].name, ": the server returned ",
          reply.part(Part::kCodes).size(), " bytes of ",
          plan_[piece.tensor].output_type, ", expected ", piece.out_bytes));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<StoredPart>> Write(
      size_t index, const TensorReply& reply) override {
    const Piece& piece = pieces_[index];
    const std::string& name = tensors_[piece.tensor].name;
    const std::vector<uint8_t>& codes = reply.part(Part::kCodes);
    QUANTD_RETURN_IF_ERROR(writer_->Write(name, piece.out_offset, codes));
    return std::vector<StoredPart>{
        {PartName(index), reply.crc32c[Part::kCodes], codes.size()}};
  }

  bool Keep(size_t index, const Json& parts) override {
    const Piece& piece = pieces_[index];
    const std::string part = PartName(index);
    if (parts.size() != 1 || !parts.contains(part) ||
        !parts[part].is_number_unsigned()) {
      return false;
    }
    const std::string& name = tensors_[piece.tensor].name;
    absl::StatusOr<uint32_t> crc =
        writer_->Crc32c(name, piece.out_offset, piece.out_bytes);
    return crc.ok() && parts[part].get<uint64_t>() == *crc &&
           writer_->MarkWritten(name, piece.out_bytes).ok();
  }

  bool resumed() const override { return writer_->resumed(); }
  const std::string& partial_path() const override { return partial_path_; }
  absl::Status Finish() override { return writer_->Finish(); }
  void Close() override { writer_.reset(); }

  // For the tensors copied or converted here.
  GgufWriter& writer() { return *writer_; }

 private:
  // The manifest's name of a piece's bytes: "NAME@OFFSET".
  std::string PartName(size_t index) const {
    const Piece& piece = pieces_[index];
    return absl::StrCat(tensors_[piece.tensor].name, "@", piece.out_offset);
  }

  std::unique_ptr<GgufWriter> writer_;
  const std::string partial_path_ = writer_->partial_path();
  const std::vector<GgufTensor>& tensors_;
  const std::vector<GgufTensorSummary>& plan_;
  const std::vector<Piece>& pieces_;
};

}  // namespace

absl::StatusOr<GgufRunSummary> QuantizeGguf(
    const QuantizeGgufOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const absl::Time start_time = absl::Now();
  if (options.input.empty()) {
    return absl::InvalidArgumentError("no input GGUF given");
  }
  if (!options.dry_run && options.output.empty()) {
    return absl::InvalidArgumentError("no output given (--out)");
  }
  QUANTD_ASSIGN_OR_RETURN(const LlamaPreset preset,
                          ParseLlamaPreset(options.preset));
  LlamaQuantizeParams params;
  params.ftype = preset.ftype;
  params.only_copy = preset.only_copy;
  params.pure = options.pure;
  params.leave_output_tensor = options.leave_output_tensor;
  auto parse_type = [](const std::string& flag, const std::string& text)
      -> absl::StatusOr<std::optional<uint32_t>> {
    if (text.empty()) return std::optional<uint32_t>();
    const GgmlTypeInfo* t = FindGgmlType(text);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": unknown ggml type \"", text, "\""));
    }
    return std::optional<uint32_t>(t->type);
  };
  QUANTD_ASSIGN_OR_RETURN(
      params.output_tensor_type,
      parse_type("--output-tensor-type", options.output_tensor_type));
  QUANTD_ASSIGN_OR_RETURN(
      params.token_embedding_type,
      parse_type("--token-embedding-type", options.token_embedding_type));
  for (const std::string& rule : options.tensor_types) {
    QUANTD_ASSIGN_OR_RETURN(LlamaTensorTypeRule parsed,
                            ParseLlamaTensorTypeRule(rule));
    params.tensor_types.push_back(std::move(parsed));
  }
  Imatrix imatrix;
  if (!options.imatrix.empty()) {
    QUANTD_ASSIGN_OR_RETURN(imatrix, LoadImatrix(options.imatrix));
    params.has_imatrix = true;
  }

  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> in,
                          GgufFile::Open(options.input));
  QUANTD_ASSIGN_OR_RETURN(const LlamaModelInfo model,
                          LlamaModelInfoFromMetadata(in->metadata()));
  const std::vector<GgufTensor>& tensors = in->tensors();
  std::vector<LlamaTensorDesc> descs;
  for (const GgufTensor& t : tensors) descs.push_back({t.name, t.ne, t.type});
  QUANTD_ASSIGN_OR_RETURN(std::vector<LlamaTensorPlan> plan,
                          PlanLlamaQuantization(model, params, descs));

  GgufRunSummary summary;
  summary.preset = preset.name;
  summary.dry_run = options.dry_run;
  summary.ftype = static_cast<int>(preset.ftype);
  if (preset.only_copy) {
    summary.ftype = static_cast<int>(
        in->metadata().FindUint("general.file_type").value_or(0));
  }
  summary.tensors.resize(tensors.size());
  std::vector<std::vector<float>> importance(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensor& t = tensors[i];
    const LlamaTensorPlan& p = plan[i];
    GgufTensorSummary& s = summary.tensors[i];
    s.name = t.name;
    s.shape = t.Shape();
    s.input_type = GgmlTypeName(t.type);
    s.output_type = GgmlTypeName(p.type);
    s.input_bytes = t.data.size();
    QUANTD_ASSIGN_OR_RETURN(s.output_bytes, GgmlTensorBytes(p.type, t.ne));
    summary.params += t.num_elements;
    summary.input_bytes += s.input_bytes;
    summary.output_bytes += s.output_bytes;
    if (p.fallback_from) {
      ++summary.num_fallbacks;
      s.note = absl::StrCat("fallback from ", GgmlTypeName(*p.fallback_from));
    } else if (p.manual) {
      s.note = "--tensor-type";
    }
    if (p.type == t.type) {
      s.action = "copied";
      continue;
    }
    if (!IsFloatType(t.type)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", t.name, " is already ", s.input_type,
          "; requantizing to ", s.output_type, " is not supported"));
    }
    s.action = IsFloatType(p.type) ? "converted" : "quantized";
    if (s.action != "quantized") continue;
    if (p.requires_imatrix && !params.has_imatrix) {
      if (options.dry_run) {
        summary.requires_imatrix = true;
      } else {
        return absl::FailedPreconditionError(absl::StrCat(
            "this quantization requires an importance matrix (--imatrix): "
            "tensor ",
            t.name, " becomes ", s.output_type));
      }
    }
    if (params.has_imatrix) {
      const std::vector<float>* w = imatrix.Find(t.name);
      const int64_t experts = t.ne.size() > 2 ? t.ne[2] : 1;
      if (w != nullptr) {
        if (static_cast<int64_t>(w->size()) == t.row_length() * experts) {
          importance[i] = *w;
        } else if (!absl::StrContains(t.name, "token_embd.weight")) {
          return absl::InvalidArgumentError(absl::StrCat(
              "imatrix size ", w->size(), " is different from tensor size ",
              t.row_length() * experts, " for ", t.name));
        }
      }
      if (importance[i].empty()) s.note = absl::StrCat(s.note, s.note.empty() ? "" : "; ", "no imatrix entry");
    }
  }
  if (options.dry_run) {
    summary.wall_seconds = std::chrono::duration<double>(
                               std::chrono::steady_clock::now() - start)
                               .count();
    return summary;
  }

  // The output: metadata as llama-quantize updates it.
  GgufMetadata meta = in->metadata();
  auto set_last = [&](const std::string& key, GgufValue value) {
    meta.Remove(key);  // ggml's gguf_set_* moves the key to the end
    meta.Set(key, std::move(value));
  };
  set_last("general.quantization_version",
           GgufValue::U32(kGgmlQuantizationVersion));
  set_last("general.file_type",
           GgufValue::U32(static_cast<uint32_t>(summary.ftype)));
  meta.Remove("split.no");
  meta.Remove("split.count");
  meta.Remove("split.tensors.count");
  if (params.has_imatrix) {
    set_last("quantize.imatrix.file", GgufValue::String(options.imatrix));
    if (!imatrix.datasets.empty()) {
      set_last("quantize.imatrix.dataset",
               GgufValue::String(imatrix.datasets[0]));
    }
    set_last("quantize.imatrix.entries_count",
             GgufValue::U32(static_cast<uint32_t>(imatrix.weights.size())));
    if (imatrix.chunk_count > 0) {
      set_last("quantize.imatrix.chunks_count",
               GgufValue::U32(static_cast<uint32_t>(imatrix.chunk_count)));
    }
  }

  // The shared summary, one entry per tensor in file order.
  RunSummary& run = summary.run;
  run.model = options.input;
  run.scheme = summary.preset;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensorSummary& p = summary.tensors[i];
    TensorSummary s;
    s.name = p.name;
    s.dtype = p.input_type;
    s.shape = p.shape;
    s.num_elements = tensors[i].num_elements;
    s.bytes_in = p.input_bytes;
    s.note = p.note;
    if (p.action == "quantized") {
      s.action = TensorAction::kQuantized;
      s.scheme = p.output_type;
    } else {
      s.action = TensorAction::kCopied;
      s.bytes_out = p.output_bytes;
      const std::string what =
          p.action == "converted"
              ? absl::StrCat("converted to ", p.output_type)
              : absl::StrCat("kept as ", p.output_type);
      s.note = p.note.empty() ? what : absl::StrCat(what, "; ", p.note);
    }
    run.tensors.push_back(std::move(s));
  }

  // Block formats through the servers, one request per tensor or expert.
  std::vector<PipelineItem> items;
  std::vector<Piece> pieces;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensor& t = tensors[i];
    const GgufTensorSummary& s = summary.tensors[i];
    if (s.action != "quantized") continue;
    QUANTD_ASSIGN_OR_RETURN(Scheme scheme,
                            ParseScheme(GgmlTypeName(plan[i].type)));
    const int64_t experts = t.ne.size() > 2 ? t.ne[2] : 1;
    // With per-expert importance weights each expert matrix is its own
    // request; otherwise rows are independent and the tensor goes whole.
    const bool split = !importance[i].empty() && experts > 1;
    const int64_t parts = split ? experts : 1;
    const uint64_t in_part = t.data.size() / static_cast<uint64_t>(parts);
    const uint64_t out_part = s.output_bytes / static_cast<uint64_t>(parts);
    for (int64_t e = 0; e < parts; ++e) {
      PipelineItem item;
      TensorRequest& r = item.request;
      r.name = split ? absl::StrCat(t.name, "#", e) : t.name;
      r.dtype = ToDType(t.type);
      if (split) {
        r.shape = {t.num_elements / t.row_length() / experts, t.row_length()};
      } else {
        r.shape = t.Shape();
      }
      r.scheme = scheme;
      r.data = t.data.subspan(static_cast<size_t>(in_part * e),
                              static_cast<size_t>(in_part));
      if (!importance[i].empty()) {
        const size_t row = static_cast<size_t>(t.row_length());
        r.importance.assign(importance[i].begin() + static_cast<long>(row * e),
                            importance[i].begin() +
                                static_cast<long>(row * (e + 1)));
      }
      item.summary = i;
      item.container_index = pieces.size();
      item.primary = e == 0;
      items.push_back(std::move(item));
      pieces.push_back({i, out_part * static_cast<uint64_t>(e), out_part});
    }
  }

  // The servers (only when there is something to send).
  ServerSet server_set;
  if (!items.empty()) {
    QUANTD_ASSIGN_OR_RETURN(server_set, ConnectServers(options));
    run.servers = server_set.servers;
    run.down_servers = server_set.down_servers;
  }

  std::vector<GgufWriter::Entry> entries;
  for (size_t i = 0; i < tensors.size(); ++i) {
    entries.push_back({tensors[i].name, tensors[i].ne, plan[i].type});
  }
  GgufWriter::Options writer_options;
  writer_options.resume = options.resume;
  writer_options.keep_partial = true;  // a failed run can be resumed
  QUANTD_ASSIGN_OR_RETURN(
      std::unique_ptr<GgufWriter> writer,
      GgufWriter::Create(options.output, meta, entries, writer_options));
  GgufOutput output(std::move(writer), tensors, summary.tensors, pieces);
  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<Manifest> manifest,
                          OpenManifest(output));
  const uint64_t send_bytes = KeepFinished(output, *manifest,
                                           /*fake_quant=*/false, items, run);

  // Copies and conversions are written while the streams run.
  auto copy = [&]() -> absl::Status {
    for (size_t i = 0; i < tensors.size(); ++i) {
      const GgufTensor& t = tensors[i];
      const GgufTensorSummary& s = summary.tensors[i];
      if (s.action == "copied") {
        QUANTD_RETURN_IF_ERROR(output.writer().Write(t.name, 0, t.data));
      } else if (s.action == "converted") {
        QUANTD_RETURN_IF_ERROR(
            output.writer().Write(t.name, 0, ConvertFloat(t, plan[i].type)));
      }
    }
    return absl::OkStatus();
  };
  DispatchOptions dispatch;
  dispatch.job.client_name = options.client_name;
  dispatch.job.max_in_flight_tensors = options.max_in_flight_tensors;
  dispatch.max_attempts = options.max_attempts;
  QUANTD_RETURN_IF_ERROR(SendItems(options, /*fake_quant=*/false, dispatch,
                                   server_set.targets, {{}}, items,
                                   send_bytes, output, *manifest, run, copy));
  ComputeTotals(send_bytes, start_time, run);
  QUANTD_RETURN_IF_ERROR(FinishRun(options, output, *manifest, run));
  for (size_t i = 0; i < run.tensors.size(); ++i) {
    if (run.tensors[i].action == TensorAction::kFailed) {
      summary.tensors[i].action = "failed";
      summary.tensors[i].status = run.tensors[i].status;
    }
  }
  summary.num_failed = run.num_failed;
  summary.output = run.output;
  summary.wall_seconds = run.wall_seconds;
  return summary;
}

std::string FormatGgufTable(const GgufRunSummary& summary) {
  std::string out;
  constexpr double kMiB = 1024.0 * 1024.0;
  if (!summary.dry_run) out = FormatSummaryTable(summary.run);
  for (const GgufTensorSummary& s : summary.tensors) {
    if (!summary.dry_run) break;  // the plan table is for dry runs
    const std::string types =
        s.input_type == s.output_type
            ? s.output_type
            : absl::StrCat(s.input_type, " -> ", s.output_type);
    std::string line = absl::StrFormat(
        "%-40s %-18s %-16s", s.name, absl::StrJoin(s.shape, "x"), types);
    absl::StrAppendFormat(&line, " %9.3f MiB -> %9.3f MiB",
                          static_cast<double>(s.input_bytes) / kMiB,
                          static_cast<double>(s.output_bytes) / kMiB);
    if (!s.note.empty()) absl::StrAppend(&line, "  (", s.note, ")");
    absl::StrAppend(&out, line, "\n");
  }
  const double bpw_in = summary.params == 0
                            ? 0
                            : 8.0 * static_cast<double>(summary.input_bytes) /
                                  static_cast<double>(summary.params);
  const double bpw_out = summary.params == 0
                             ? 0
                             : 8.0 * static_cast<double>(summary.output_bytes) /
                                   static_cast<double>(summary.params);
  absl::StrAppendFormat(
      &out,
      "%s: %d tensors, model size %.2f MiB (%.2f BPW) -> %.2f MiB (%.2f BPW), "
      "%d fallbacks, %d failed, %.2f s\n",
      summary.preset, summary.tensors.size(),
      static_cast<double>(summary.input_bytes) / kMiB, bpw_in,
      static_cast<double>(summary.output_bytes) / kMiB, bpw_out,
      summary.num_fallbacks, summary.num_failed, summary.wall_seconds);
  if (summary.requires_imatrix) {
    absl::StrAppend(&out,
                    "warning: the real run will require an importance matrix "
                    "(--imatrix)\n");
  }
  return out;
}

}  // namespace quantd

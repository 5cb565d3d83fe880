#include "client/run_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace quantd {

const char* TensorActionName(TensorAction action) {
  switch (action) {
    case TensorAction::kQuantized:
      return "quantized";
    case TensorAction::kFakeQuantized:
      return "fake_quantized";
    case TensorAction::kCopied:
      return "copied";
    case TensorAction::kFailed:
      return "failed";
  }
  return "unknown";
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

OrderedJson MetricsToJson(const v1::Metrics& m) {
  OrderedJson j;
  j["mse"] = m.mse();
  j["rmse"] = m.rmse();
  j["max_abs_error"] = m.max_abs_error();
  j["sqnr_db"] = m.sqnr_db();
  j["cosine_similarity"] = m.cosine_similarity();
  j["bits_per_weight"] = m.bits_per_weight();
  return j;
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

namespace {

// `format` is a printf conversion of one double, e.g. "%.3f".
std::string Number(double v, const char* format) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, v);
  return buffer;
}

std::string Pad(absl::string_view text, size_t width, bool right) {
  if (text.size() >= width) return std::string(text);
  std::string fill(width - text.size(), ' ');
  return right ? absl::StrCat(fill, text) : absl::StrCat(text, fill);
}

}  // namespace

namespace {

// What a mixed-precision run achieved, from the final results.
struct MixedAchieved {
  uint64_t bytes = 0;       // quantized tensors packed + copied tensors
  double free_error = 0;    // total squared error of the chosen tensors
};

MixedAchieved Achieved(const RunSummary& s) {
  MixedAchieved a;
  absl::flat_hash_set<std::string> free;
  if (s.mixed) {
    for (const TensorCurve& curve : s.mixed->curves) free.insert(curve.name);
  }
  double bits = 0;
  for (const TensorSummary& t : s.tensors) {
    const auto n = static_cast<double>(t.num_elements);
    if (t.action == TensorAction::kCopied) {
      bits += 8.0 * static_cast<double>(t.bytes_out);
    } else if (t.action != TensorAction::kFailed) {
      bits += std::round(t.metrics.bits_per_weight() * n);
      if (free.contains(t.name)) a.free_error += t.metrics.mse() * n;
    }
  }
  a.bytes = static_cast<uint64_t>(std::ceil(bits / 8));
  return a;
}

}  // namespace

std::string FormatTotals(const RunSummary& s) {
  std::string mixed;
  if (s.mixed) {
    const MixedAchieved a = Achieved(s);
    mixed = absl::StrFormat(
        "mixed precision: %s  achieved: %.3f bpw over quantized tensors, %d "
        "bytes  error: %.4e (lower bound %.4e)  %d tensors chosen from %d "
        "candidates\n",
        s.mixed->target_bpw > 0
            ? absl::StrFormat("target %.3f bpw", s.mixed->target_bpw)
            : absl::StrFormat("target %d bytes", s.mixed->target_bytes),
        s.quantized_bits_per_weight, a.bytes, a.free_error,
        s.mixed->choice.lower_bound, s.mixed->curves.size(),
        s.mixed->candidates.size());
  }
  return absl::StrFormat(
      "tensors: %d (%d quantized%s, %d copied, %d failed)  params: %d  "
      "input: %.3f GB  output: %.3f GB  bpw: %.3f  %.3f GB/s  wall: %.2f s\n",
      s.num_tensors, s.num_quantized,
      s.num_resumed > 0 ? absl::StrCat(", ", s.num_resumed, " resumed") : "",
      s.num_copied, s.num_failed, s.params,
      static_cast<double>(s.input_bytes) / 1e9,
      static_cast<double>(s.output_bytes) / 1e9, s.bits_per_weight,
      s.bytes_per_second / 1e9, s.wall_seconds) +
         mixed;
}

std::string FormatSummaryTable(const RunSummary& summary) {
  // Output error (calibration sets) and W8A8 columns when any tensor has them.
  bool output = false;
  bool w8a8 = false;
  for (const TensorSummary& t : summary.tensors) {
    output |= t.output_metrics.has_value();
    w8a8 |= t.w8a8.has_value();
  }
  std::vector<std::string> header = {"name",    "shape",  "scheme",
                                     "bpw",     "MSE",    "max|err|",
                                     "SQNR dB", "cosine"};
  if (output) header.push_back("out err");
  if (w8a8) header.push_back("W8A8 err");
  header.push_back("ms");
  std::vector<std::vector<std::string>> rows;
  for (const TensorSummary& t : summary.tensors) {
    std::vector<std::string> row = {t.name, ShapeText(t.shape)};
    switch (t.action) {
      case TensorAction::kQuantized:
      case TensorAction::kFakeQuantized:
        row.push_back(t.action == TensorAction::kFakeQuantized
                          ? absl::StrCat(t.scheme, " (fake)")
                          : t.scheme);
        row.push_back(Number(t.metrics.bits_per_weight(), "%.3f"));
        row.push_back(Number(t.metrics.mse(), "%.3e"));
        row.push_back(Number(t.metrics.max_abs_error(), "%.3e"));
        row.push_back(Number(t.metrics.sqnr_db(), "%.2f"));
        row.push_back(Number(t.metrics.cosine_similarity(), "%.6f"));
        if (output) {
          row.push_back(t.output_metrics
                            ? Number(t.output_metrics->relative_error(), "%.4f")
                            : "-");
        }
        if (w8a8) {
          row.push_back(t.w8a8 ? Number(t.w8a8->relative_error(), "%.4f") : "-");
        }
        row.push_back(absl::StrCat(
            t.resumed ? "resumed"
                      : absl::StrCat(Number(t.seconds * 1e3, "%.1f"),
                                     t.moved ? " (moved)" : ""),
            t.note.empty() ? "" : absl::StrCat("  (", t.note, ")")));
        break;
      case TensorAction::kCopied:
        row.push_back(absl::StrCat("copy ", t.dtype));
        row.push_back(absl::StrCat("(", t.note, ")"));
        break;
      case TensorAction::kFailed:
        row.push_back(t.scheme.empty() ? "-" : t.scheme);
        row.push_back(absl::StrCat("FAILED: ", t.status.ToString()));
        break;
    }
    rows.push_back(std::move(row));
  }
  // Widths over complete rows only (notes and errors run to the end).
  std::vector<size_t> widths(header.size());
  for (size_t c = 0; c < header.size(); ++c) widths[c] = header[c].size();
  for (const auto& row : rows) {
    if (row.size() != header.size()) {
      for (size_t c = 0; c < 3; ++c)
        widths[c] = std::max(widths[c], row[c].size());
      continue;
    }
    for (size_t c = 0; c < row.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& row) {
    std::string out;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) out += "  ";
      bool last = c + 1 == row.size();
      out += last && row.size() != header.size()
                 ? row[c]
                 : Pad(row[c], widths[c], /*right=*/c >= 3);
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header);
  for (const auto& row : rows) out += line(row);
  for (const ServerSummary& server : summary.down_servers) {
    out += absl::StrCat("server left out: ", server.status.ToString(), "\n");
  }
  out += FormatTotals(summary);
  return out;
}

OrderedJson SummaryToJson(const RunSummary& s) {
  OrderedJson j;
  j["quantd_report_version"] = 1;
  j["model"] = s.model;
  j["output"] = s.output;
  if (!s.partial.empty()) j["partial"] = s.partial;
  j["scheme"] = s.scheme;
  j["fake_quant"] = s.fake_quant;
  OrderedJson servers = OrderedJson::array();
  for (const ServerSummary& server : s.servers) {
    OrderedJson e;
    e["address"] = server.address;
    e["version"] = server.info.version();
    e["build"] = server.info.build();
    e["kernel_isa"] = server.info.kernel_isa();
    e["workers"] = server.info.workers();
    e["limits"] = {
        {"max_tensor_bytes", server.info.limits().max_tensor_bytes()},
        {"max_chunk_bytes", server.info.limits().max_chunk_bytes()},
        {"memory_budget_bytes", server.info.limits().memory_budget_bytes()},
        {"max_queue_jobs", server.info.limits().max_queue_jobs()}};
    servers.push_back(std::move(e));
  }
  for (const ServerSummary& server : s.down_servers) {
    OrderedJson e;
    e["address"] = server.address;
    e["status"] = absl::StatusCodeToString(server.status.code());
    e["error"] = std::string(server.status.message());
    servers.push_back(std::move(e));
  }
  j["servers"] = std::move(servers);
  OrderedJson tensors = OrderedJson::array();
  for (const TensorSummary& t : s.tensors) {
    OrderedJson e;
    e["name"] = t.name;
    e["dtype"] = t.dtype;
    e["shape"] = t.shape;
    e["num_elements"] = t.num_elements;
    e["action"] = TensorActionName(t.action);
    e["scheme"] = t.scheme;
    if (!t.note.empty()) e["note"] = t.note;
    e["status"] = absl::StatusCodeToString(t.status.code());
    if (!t.status.ok()) e["error"] = std::string(t.status.message());
    if (t.action == TensorAction::kQuantized ||
        t.action == TensorAction::kFakeQuantized) {
      e["metrics"] = MetricsToJson(t.metrics);
      e["seconds"] = t.seconds;
      e["queue_seconds"] = t.queue_seconds;
      e["compute_seconds"] = t.compute_seconds;
      e["server"] = t.server;
      e["resumed"] = t.resumed;
      e["moved"] = t.moved;
      if (!t.calibration.empty()) e["calibration"] = t.calibration;
      if (t.output_metrics) {
        OrderedJson o;
        o["tokens"] = t.output_metrics->tokens();
        o["relative_error"] = t.output_metrics->relative_error();
        o["sqnr_db"] = t.output_metrics->sqnr_db();
        o["error_sq"] = t.output_metrics->error_sq();
        e["output_metrics"] = std::move(o);
      }
      if (t.activation_range) {
        OrderedJson r;
        r["method"] = v1::RangeMethod_Name(t.activation_range->method());
        r["symmetric"] = t.activation_range->symmetric();
        r["lo"] = t.activation_range->lo();
        r["hi"] = t.activation_range->hi();
        r["scale"] = t.activation_range->scale();
        r["zero_point"] = t.activation_range->zero_point();
        if (t.activation_range->channels_size() > 0) {
          std::vector<float> scales;
          std::vector<int32_t> zero_points;
          for (const v1::ChannelRange& c : t.activation_range->channels()) {
            scales.push_back(c.scale());
            zero_points.push_back(c.zero_point());
          }
          r["channel_scales"] = scales;
          r["channel_zero_points"] = zero_points;
        }
        e["activation_range"] = std::move(r);
      }
      if (t.w8a8) {
        OrderedJson w;
        w["rows"] = t.w8a8->rows();
        w["relative_error"] = t.w8a8->relative_error();
        w["sqnr_db"] = t.w8a8->sqnr_db();
        w["weight_only_relative_error"] = t.w8a8->weight_only_relative_error();
        w["clipped_fraction"] = t.w8a8->clipped_fraction();
        w["activation_scale"] = t.w8a8->activation_scale();
        w["gemm"] = t.w8a8->gemm();
        e["w8a8"] = std::move(w);
      }
    }
    e["bytes_in"] = t.bytes_in;
    e["bytes_out"] = t.bytes_out;
    e["attempts"] = t.attempts;
    tensors.push_back(std::move(e));
  }
  j["tensors"] = std::move(tensors);
  OrderedJson totals;
  totals["tensors"] = s.num_tensors;
  totals["quantized"] = s.num_quantized;
  totals["copied"] = s.num_copied;
  totals["failed"] = s.num_failed;
  totals["resumed"] = s.num_resumed;
  totals["params"] = s.params;
  totals["quantized_params"] = s.quantized_params;
  totals["input_bytes"] = s.input_bytes;
  totals["output_bytes"] = s.output_bytes;
  totals["bits_per_weight"] = s.bits_per_weight;
  totals["bytes_per_second"] = s.bytes_per_second;
  totals["wall_seconds"] = s.wall_seconds;
  totals["quantized_bits_per_weight"] = s.quantized_bits_per_weight;
  j["totals"] = std::move(totals);
  if (s.mixed) {
    OrderedJson mixed = MixedPrecisionToJson(*s.mixed);
    const MixedAchieved a = Achieved(s);
    mixed["achieved_bpw"] = s.quantized_bits_per_weight;
    mixed["achieved_bytes"] = a.bytes;
    mixed["achieved_error"] = a.free_error;
    j["mixed_precision"] = std::move(mixed);
  }
  return j;
}


}  // namespace quantd

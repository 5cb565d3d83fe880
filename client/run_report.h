// The result of a quantctl run and how it is shown: the per-tensor summary
// (RunSummary), the table and totals line printed on stdout, and the JSON
// report. The same for every container format.
//
//   RunSummary run = ...;  // filled by the pipeline
//   std::cout << FormatSummaryTable(run);
//   QUANTD_RETURN_IF_ERROR(
//       WriteTextFile(path, WritePrettyJson(SummaryToJson(run))));
//
// Thread-safety: the functions here are thread-compatible (no shared state).
#ifndef QUANTD_CLIENT_RUN_REPORT_H_
#define QUANTD_CLIENT_RUN_REPORT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/json.h"
#include "client/mixed_precision.h"
#include "quantd/v1/quantizer.pb.h"

namespace quantd {

enum class TensorAction {
  kQuantized,      // packed codes + scales (+ zero points)
  kFakeQuantized,  // dequantized F32 under the original name
  kCopied,         // passed through unchanged (see note)
  kFailed,         // status says why; the output was not written
};
const char* TensorActionName(TensorAction action);  // "quantized", ...

struct TensorSummary {
  std::string name;
  std::string dtype;  // input dtype, as in the file
  std::vector<int64_t> shape;
  int64_t num_elements = 0;
  TensorAction action = TensorAction::kCopied;
  std::string scheme;      // canonical scheme text; empty when copied
  std::string note;        // why copied, e.g. "1-D tensor", "dtype I64"
  absl::Status status;     // non-OK iff kFailed
  v1::Metrics metrics;     // quantized tensors only
  uint64_t bytes_in = 0;   // input bytes
  uint64_t bytes_out = 0;  // bytes written to the output for this tensor
  double seconds = 0;      // client wall time of the successful send
  double queue_seconds = 0;
  double compute_seconds = 0;
  std::string server;  // which server answered
  int attempts = 0;    // sends (0 for copied and resumed tensors)
  // Kept from an interrupted earlier run's partial output (not sent).
  bool resumed = false;
  // Answered by another server than the one a failed send went to.
  bool moved = false;
  // With a calibration set: its name and what the server measured on it.
  std::string calibration;
  std::optional<v1::OutputMetrics> output_metrics;
  std::optional<v1::ActivationRange> activation_range;
  std::optional<v1::W8A8Check> w8a8;
};

struct ServerSummary {
  std::string address;
  v1::ServerInfo info;
  absl::Status status;  // non-OK: did not answer at start, left out
};

struct RunSummary {
  std::vector<TensorSummary> tensors;       // in name order
  std::vector<ServerSummary> servers;       // the servers used
  std::vector<ServerSummary> down_servers;  // did not answer at start
  int64_t num_tensors = 0;
  int64_t num_quantized = 0;  // packed or fake-quantized
  int64_t num_copied = 0;
  int64_t num_failed = 0;
  int64_t num_resumed = 0;       // of num_quantized, kept from a partial output
  int64_t params = 0;            // elements of all tensors
  int64_t quantized_params = 0;  // elements of quantized tensors
  uint64_t input_bytes = 0;      // tensor bytes of the whole input
  uint64_t output_bytes = 0;     // tensor bytes of the output (no header)
  // 8 * output_bytes / params: the whole file's bits per weight.
  double bits_per_weight = 0;
  // Bits per weight over the quantized tensors: the servers'
  // bits_per_weight weighted by elements.
  double quantized_bits_per_weight = 0;
  // Input bytes of quantized tensors per wall second.
  double bytes_per_second = 0;
  double wall_seconds = 0;
  std::string scheme;  // canonical default scheme
  bool fake_quant = false;
  std::string model;
  std::string output;   // empty if not written (a tensor failed)
  std::string partial;  // OUTPUT.partial when kept for a rerun to resume
  std::string report;   // empty if not written
  // The mixed-precision plan, when a target was given.
  std::optional<MixedPrecisionPlan> mixed;
};

// The per-tensor table and totals line quantctl prints (columns: name,
// shape, scheme, bpw, MSE, max|err|, SQNR dB, cosine, ms), one line per
// tensor, in name order, failed tensors with their status.
std::string FormatSummaryTable(const RunSummary& summary);
// Just the totals line (and, for a mixed-precision run, a second line: the
// target against the achieved bits per weight or bytes, and the total error
// against its lower bound).
std::string FormatTotals(const RunSummary& summary);

// The JSON report: {"quantd_report_version": 1, "model", "output",
// "scheme", "fake_quant", "servers": [...], "tensors": [...], "totals":
// {...}, and for a mixed-precision run "mixed_precision": the curves, the
// choice and the uniform baselines (MixedPrecisionToJson) with the achieved
// figures}. Non-finite numbers (an error-free tensor's SQNR) are null.
OrderedJson SummaryToJson(const RunSummary& summary);

// "[2, 3]".
std::string ShapeText(const std::vector<int64_t>& shape);

// A Metrics message as the report and the manifest write it.
OrderedJson MetricsToJson(const v1::Metrics& m);

// Writes `text` to `path` (truncating). PermissionDenied naming the file.
absl::Status WriteTextFile(const std::string& path, const std::string& text);

}  // namespace quantd

#endif  // QUANTD_CLIENT_RUN_REPORT_H_

// QuantizeModel: a whole `quantctl quantize` run as a library call -- read a
// safetensors model, stream its tensors through one or more quantd servers
// on parallel streams, write the quantized safetensors file and a JSON
// report. quantctl's main only parses flags and calls this; end-to-end
// tests call it in-process.
//
//   QuantizeModelOptions options;
//   options.model = "/models/minilm";               // file, dir or index
//   options.output = "/tmp/minilm-int4.safetensors";
//   options.scheme = "int4_asym_g128";
//   options.servers = {"localhost:50051"};
//   QUANTD_ASSIGN_OR_RETURN(RunSummary summary, QuantizeModel(options));
//   std::cout << FormatSummaryTable(summary);
//   return summary.num_failed == 0 ? 0 : 1;
//
// Which tensors are quantized: float tensors (F32/F16/BF16) with at least
// two dimensions and no zero dimension (1-D and 0-D ones too with
// quantize_1d), except those an override marks "skip"; overrides choose the
// scheme of the tensors quantized but never make a 1-D tensor quantized.
// Everything else is copied through unchanged, with a note.
// The output format is described in client/README.md.
//
// Thread-safety: QuantizeModel may run concurrently with itself (each call
// owns its threads, channels and files).
#ifndef QUANTD_CLIENT_QUANTIZE_MODEL_H_
#define QUANTD_CLIENT_QUANTIZE_MODEL_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/json.h"
#include "client/mixed_precision.h"
#include "quantd/v1/quantizer.pb.h"

namespace quantd {

// Version of the output layout written into __metadata__ as
// quantd.format_version.
inline constexpr char kOutputFormatVersion[] = "2";

enum class ProgressStyle {
  kAuto,   // a bar if stderr is a terminal, else periodic lines
  kBar,    // a redrawn one-line bar on stderr
  kLines,  // a line on stderr every few seconds
  kNone,
};

struct QuantizeModelOptions {
  // A .safetensors file, a model.safetensors.index.json, or a directory
  // holding either (see SafetensorsModel::Open). Required.
  std::string model;
  // The output safetensors file. Required. Written as OUTPUT.partial and
  // renamed when complete; not written if any tensor failed (OUTPUT.partial
  // and its manifest stay, for a rerun to resume).
  std::string output;
  // The JSON report. Default (empty): output + ".report.json".
  std::string report;
  bool write_report = true;
  // Default scheme for every quantized tensor (ParseScheme text).
  std::string scheme = "int8";
  // "REGEX=SCHEME" rules, first match wins; SCHEME may be "skip". See
  // client/overrides.h.
  std::vector<std::string> overrides;
  // Server addresses (insecure, or TLS with tls_ca_file): "host:port" (one
  // channel to one server), or a gRPC target URI naming several replicas,
  // "dns:///quantd.ns.svc:50051" (every address the name resolves to, e.g.
  // a headless Service) or "ipv4:10.0.0.1:50051,10.0.0.2:50051". A URI
  // target gets one channel with the round_robin load-balancing policy and
  // streams_per_server streams per resolved address, spread over them...
  std::vector<std::string> servers;
  // ...or ready channels (tests, TLS). Used instead of `servers` when
  // non-empty; named "channel0", "channel1", ... in the report.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  // Parallel streams (jobs) per server; each is a thread. Default: 2.
  int streams_per_server = 2;
  // Tensors in flight per stream (see JobConfig). Default: 2.
  int max_in_flight_tensors = 2;
  // Write dequantized F32 tensors under their own names instead of packed
  // codes, scales and zero points.
  bool fake_quant = false;
  // Also quantize 1-D (and 0-D) float tensors: norms, biases.
  bool quantize_1d = false;
  // Sends of one tensor before it is reported failed (>= 1). A stream that
  // fails with several tensors in flight re-sends each alone, so one bad
  // tensor never fails its neighbours. Default: 3.
  int max_attempts = 3;
  // Resume from OUTPUT.partial and OUTPUT.partial.manifest when an earlier
  // run of the same plan (same input tensors' layout, schemes, metadata)
  // left them: tensors whose manifest line matches their input CRC-32C and
  // scheme, and whose output bytes in the partial file still match the
  // line's CRC-32C, are kept and not sent again. false: always start over.
  bool resume = true;
  ProgressStyle progress = ProgressStyle::kAuto;
  // JobStart.client. Default: "quantctl".
  std::string client_name = "quantctl";
  // Deadline for GetServerInfo at start. Default: 10 s.
  double connect_timeout_seconds = 10;
  // TLS for `servers`: the PEM CA that signed the servers' certificates;
  // with tls_cert_file and tls_key_file also a client certificate (mutual
  // TLS). Empty: insecure channels.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // Bearer token sent on every call (servers run with --auth_token_file).
  std::string auth_token;

  // Mixed precision (client/mixed_precision.h): with target_bpw > 0 or
  // target_bytes > 0 (not both), every quantized tensor that no override
  // fixes is first quantized with each of `candidates` that fits its shape,
  // then given the candidate that meets the target with the least total
  // squared weight error, and the run proceeds with those schemes.
  // target_bpw: bits per weight over the quantized tensors (codes, scales
  // and zero points as the servers count them; override-fixed tensors
  // included). target_bytes: bytes of the whole output's tensors, the
  // quantized ones in packed form (also with fake_quant) plus those copied
  // through. Tensors no candidate fits keep `scheme`.
  double target_bpw = 0;
  uint64_t target_bytes = 0;
  // Comma-separated candidate schemes. Default: kDefaultCandidates.
  std::string candidates = kDefaultCandidates;
  // What the mixed-precision choice minimises: "weight" (sum of squared
  // weight errors), "output" (each layer's output error over its
  // calibration set; every free tensor needs one) or "auto" (output when
  // every free tensor has a set, else weight). Default: "auto".
  std::string mixed_error = "auto";

  // Calibration (client/calibration_input.h): safetensors files of layer
  // inputs X, one ACTIVATIONS set per 2-D tensor, named after it. A weight
  // "M.weight" uses the set "M" (else one named like the weight) unless a
  // calibration rule "REGEX=SET" (first match; SET "none" for no set)
  // names another. A tensor with a set gets output metrics, its static
  // activation range and, for int8 with held-back rows, the W8A8 check;
  // methods (+gptq, +awq, +smoothquant) need one. Sets go in batches of at
  // most calibration_batch_bytes of server memory, each batch one round of
  // streams with the tensors that use it.
  std::vector<std::string> calibration_files;
  std::vector<std::string> calibration_rules;
  int64_t holdout_rows = 0;  // per set, for the W8A8 check (<= 4096)
  // The static activation range estimator: "minmax" (default),
  // "percentile[:P]", "mse" or "kl", with ",asym" and ",per_channel".
  std::string activation_range;
  int64_t calibration_batch_bytes = int64_t{1} << 30;
};

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

// Runs the whole quantization. Returns an error (and writes nothing) for
// problems before any tensor is sent: InvalidArgument for bad options,
// schemes, candidates or overrides, a mixed-precision target below what the
// candidates allow, or a malformed model; NotFound for a missing model;
// Unavailable (naming the server) if no server answers GetServerInfo
// (servers that do not answer while others do are left out and listed in
// down_servers). A tensor whose scheme does not fit its shape
// (InvalidArgument) or whose bytes exceed a server's max_tensor_bytes
// (ResourceExhausted) is failed without being sent. Once tensors are sent,
// per-tensor failures are returned in the summary (num_failed > 0, each failed
// tensor with its status), never as the call's status; the report is still
// written. An I/O error writing the output is returned as the call's status.
absl::StatusOr<RunSummary> QuantizeModel(const QuantizeModelOptions& options);

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

}  // namespace quantd

#endif  // QUANTD_CLIENT_QUANTIZE_MODEL_H_

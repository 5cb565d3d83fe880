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
#include "client/progress.h"
#include "client/run_options.h"
#include "client/run_report.h"
#include "quantd/v1/quantizer.pb.h"

namespace quantd {

// Version of the output layout written into __metadata__ as
// quantd.format_version.
inline constexpr char kOutputFormatVersion[] = "2";

// The options of a safetensors run: those of every run (RunOptions: output,
// report, servers, streams, attempts, resume, progress, TLS) and these.
struct QuantizeModelOptions : RunOptions {
  // A .safetensors file, a model.safetensors.index.json, or a directory
  // holding either (see SafetensorsModel::Open). Required.
  std::string model;
  // Default scheme for every quantized tensor (ParseScheme text).
  std::string scheme = "int8";
  // "REGEX=SCHEME" rules, first match wins; SCHEME may be "skip". See
  // client/overrides.h.
  std::vector<std::string> overrides;
  // Write dequantized F32 tensors under their own names instead of packed
  // codes, scales and zero points.
  bool fake_quant = false;
  // Also quantize 1-D (and 0-D) float tensors: norms, biases.
  bool quantize_1d = false;

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


}  // namespace quantd

#endif  // QUANTD_CLIENT_QUANTIZE_MODEL_H_

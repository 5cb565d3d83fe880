// QuantizeGguf: `quantctl quantize IN.gguf --type Q4_K_M --out OUT.gguf`,
// llama-quantize as a service. The tensors of a GGUF model are planned with
// llama.cpp's preset rules (llama_presets.h), the ones to quantize are sent
// through quantd servers (dispatcher.h) as ggml block formats, and a GGUF
// is written whose tensor bytes are the ones llama-quantize writes for the
// same input and options.
//
//   QuantizeGgufOptions options;
//   options.input = "model-f16.gguf";
//   options.output = "model-Q4_K_M.gguf";
//   options.preset = "Q4_K_M";
//   options.servers = {"localhost:50051"};
//   QUANTD_ASSIGN_OR_RETURN(GgufRunSummary summary, QuantizeGguf(options));
//   std::cout << FormatGgufTable(summary);
//
// The output keeps the input's metadata and tensor order; it sets
// general.file_type to the preset's llama_ftype value and
// general.quantization_version to 2, drops split.* keys, and with an
// importance matrix records quantize.imatrix.{file,dataset,entries_count,
// chunks_count} as llama-quantize does. Tensors llama.cpp leaves alone are
// copied; conversions between F32/F16/BF16 are done here; block formats by
// the servers, through the same pipeline as a safetensors run
// (client/pipeline.h): the same server set and down-server policy, resume
// from OUT.partial and OUT.partial.manifest, progress and JSON report.
// Written as OUT.partial and renamed when complete; if a tensor fails,
// OUT.partial and its manifest stay for a rerun to resume.
//
// Thread-safety: QuantizeGguf may run concurrently with itself.
#ifndef QUANTD_CLIENT_QUANTIZE_GGUF_H_
#define QUANTD_CLIENT_QUANTIZE_GGUF_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/run_options.h"
#include "client/run_report.h"
#include "quantd/v1/quantizer.pb.h"

namespace quantd {

// llama.cpp's GGML_QNT_VERSION, written as general.quantization_version.
inline constexpr uint32_t kGgmlQuantizationVersion = 2;

// The options of a GGUF run: those of every run (RunOptions: output,
// report, servers, streams, attempts, resume, progress, TLS) and these.
struct QuantizeGgufOptions : RunOptions {
  std::string input;   // a GGUF file. Required (output too, unless dry_run).
  std::string preset;  // ParseLlamaPreset text: "Q4_K_M", "q8_0", "15"
  bool pure = false;
  bool leave_output_tensor = false;
  std::string output_tensor_type;    // a ggml type name, or empty
  std::string token_embedding_type;  // a ggml type name, or empty
  std::vector<std::string> tensor_types;  // "REGEX=TYPE", first match wins
  std::string imatrix;  // an imatrix file (GGUF or legacy .dat), or empty
  // Plan and size only: no server is contacted, nothing is written.
  bool dry_run = false;
};

// The plan of one tensor (what llama.cpp's rules make of it).
struct GgufTensorSummary {
  std::string name;
  std::vector<int64_t> shape;  // row-major
  std::string input_type;      // ggml type names
  std::string output_type;
  // "quantized", "converted", "copied" or "failed".
  std::string action;
  std::string note;  // "fallback from Q4_K", "--tensor-type", ...
  absl::Status status;  // of a failed tensor
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;
};

struct GgufRunSummary {
  // The run's results as every run has them (the per-tensor table, the
  // JSON report, servers, totals, resumed tensors); empty for a dry run.
  RunSummary run;
  std::string preset;
  int ftype = 0;
  std::vector<GgufTensorSummary> tensors;  // the plan, in file order
  int64_t num_failed = 0;
  int64_t num_fallbacks = 0;
  int64_t params = 0;
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;
  // A dry run whose real run would stop for want of an importance matrix.
  bool requires_imatrix = false;
  bool dry_run = false;
  std::string output;  // empty if not written
  double wall_seconds = 0;
};

// Runs the whole quantization (or the dry run). Returns an error, before
// anything is sent, for bad options or presets (InvalidArgument), a
// malformed input or imatrix (InvalidArgument, NotFound), a plan llama.cpp
// would refuse (no fallback for a shape; an importance matrix required but
// not given: FailedPrecondition naming the tensor; an imatrix entry whose
// size does not match its tensor; an input tensor already quantized to
// another type), or a server that does not answer (Unavailable). Failed
// tensors after that are in the summary (num_failed > 0), and the output is
// not written.
absl::StatusOr<GgufRunSummary> QuantizeGguf(const QuantizeGgufOptions& options);

// The per-tensor table and totals of every run (FormatSummaryTable of
// summary.run; dry runs: the plan with types in -> out, notes and sizes),
// then the GGUF totals line (preset, sizes, fallbacks).
std::string FormatGgufTable(const GgufRunSummary& summary);

}  // namespace quantd

#endif  // QUANTD_CLIENT_QUANTIZE_GGUF_H_

// The client pipeline: the steps of a `quantctl quantize` run that are the
// same for every container format. A run (QuantizeModel for safetensors,
// QuantizeGguf for GGUF) reads its container and plans its tensors, then
// hands the requests and an OutputContainer (its writer) to these steps:
//
//   QUANTD_ASSIGN_OR_RETURN(ServerSet servers, ConnectServers(options));
//   ...  // plan: run.tensors, items, the writer
//   QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<Manifest> manifest,
//                           OpenManifest(output));
//   uint64_t send_bytes = KeepFinished(output, *manifest, items, run);
//   QUANTD_RETURN_IF_ERROR(SendItems(options, dispatch, servers.targets,
//                                    batch_sets, items, output, *manifest,
//                                    run, send_bytes, copy_while_sending));
//   ComputeTotals(send_bytes, start, run);
//   QUANTD_RETURN_IF_ERROR(FinishRun(options, output, *manifest, run));
//
// Resume: every answered request gets a manifest line (resume_manifest.h)
// after its output bytes are written: the request's name, its input's
// CRC-32C, the scheme, the output kind, each output part's CRC-32C, the
// metrics, the bytes written and the server. A rerun whose output reopened
// the partial file keeps every request whose line matches and whose parts
// the container still finds in the file (OutputContainer::Keep); the rest
// is sent.
//
// Thread-safety: the functions block; OutputContainer's Store and Keep run
// on the dispatcher's stream threads, concurrently for different items.
#ifndef QUANTD_CLIENT_PIPELINE_H_
#define QUANTD_CLIENT_PIPELINE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/dispatcher.h"
#include "client/json.h"
#include "client/quantd_client.h"
#include "client/resume_manifest.h"
#include "client/run_options.h"
#include "client/run_report.h"

namespace quantd {

// One request of a run and the tensor summary its answer fills. A tensor
// is one request, or several (pieces of one output tensor, e.g. the expert
// matrices of a GGUF tensor with per-expert importance weights).
struct PipelineItem {
  // What is sent; request.data (not owned) is the input whose CRC-32C the
  // manifest records. request.name names the manifest line.
  TensorRequest request;
  size_t summary = 0;  // index into RunSummary::tensors
  // The container's own index of this item (OutputContainer's argument).
  size_t container_index = 0;
  // Whether this request's metrics are the tensor's (the first piece).
  bool primary = true;
  // The calibration round it goes in (index into SendItems' batch_sets).
  size_t batch = 0;
};

// An output part an answer filled, as its manifest line records it.
struct StoredPart {
  std::string name;
  uint32_t crc32c = 0;
  uint64_t bytes = 0;
};

// What a container format does with answers: its writer. Implemented by
// the safetensors and the GGUF runs.
class OutputContainer {
 public:
  virtual ~OutputContainer() = default;
  // Whether the answer fits what the output was planned for; an error
  // fails the tensor (it names the tensor).
  virtual absl::Status Check(size_t container_index,
                             const TensorReply& reply) = 0;
  // Writes the answer; returns the parts written. An error is an I/O error:
  // it fails the tensor and the run.
  virtual absl::StatusOr<std::vector<StoredPart>> Write(
      size_t container_index, const TensorReply& reply) = 0;
  // Whether `parts` (a manifest line's {"name": crc32c, ...}) are still in
  // the reopened partial file as this item's output; if so counts them as
  // written.
  virtual bool Keep(size_t container_index, const Json& parts) = 0;
  // Whether the output reopened an earlier run's partial file.
  virtual bool resumed() const = 0;
  virtual const std::string& partial_path() const = 0;
  // Completes the output file (renames OUTPUT.partial into place).
  virtual absl::Status Finish() = 0;
  // Closes the output unfinished, keeping OUTPUT.partial for a rerun.
  virtual void Close() = 0;
};

// OUTPUT.partial.manifest, with the earlier run's lines when the output
// reopened its partial file.
absl::StatusOr<std::unique_ptr<Manifest>> OpenManifest(
    const OutputContainer& output);

// Drops from `items` those an interrupted earlier run finished (their
// summaries filled from the manifest, marked resumed when every piece of
// the tensor is) and returns the input bytes of the items left to send.
// `fake_quant`: the output kind the lines must record.
uint64_t KeepFinished(OutputContainer& output, const Manifest& manifest,
                      bool fake_quant, std::vector<PipelineItem>& items,
                      RunSummary& run);

// Sends `items` through `targets`, one round per entry of `batch_sets`
// (the calibration sets of that round; items go in their `batch`), storing
// each answer in `output` and the manifest and settling its summary, with
// progress on stderr. `copy_while_sending` runs on the calling thread
// meanwhile (the tensors copied through). Returns the first I/O error of
// the output or the manifest, or copy_while_sending's.
absl::Status SendItems(
    const RunOptions& options, bool fake_quant, const DispatchOptions& dispatch,
    absl::Span<const DispatchServer> targets,
    const std::vector<std::vector<CalibrationSetRequest>>& batch_sets,
    const std::vector<PipelineItem>& items, uint64_t send_bytes,
    OutputContainer& output, Manifest& manifest, RunSummary& run,
    const std::function<absl::Status()>& copy_while_sending);

// The totals of run.tensors: counts, bytes, bits per weight, throughput
// (send_bytes over the wall time since `start`).
void ComputeTotals(uint64_t send_bytes, absl::Time start, RunSummary& run);

// Finishes the output when no tensor failed (and removes the manifest),
// else keeps OUTPUT.partial and says so in run.partial; then writes the
// JSON report unless options.write_report is false.
absl::Status FinishRun(const RunOptions& options, OutputContainer& output,
                       Manifest& manifest, RunSummary& run);

}  // namespace quantd

#endif  // QUANTD_CLIENT_PIPELINE_H_

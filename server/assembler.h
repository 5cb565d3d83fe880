// StreamAssembler turns one Quantize stream's requests into complete
// tensors, enforcing the message order and limits of proto/README.md. It
// holds at most one open tensor; it never blocks and does no quantization.
//
//   StreamAssembler assembler(limits);
//   for (QuantizeRequest& req : requests) {
//     QUANTD_ASSIGN_OR_RETURN(StreamAssembler::Event ev, assembler.Consume(req));
//     if (ev.kind == Event::kHeader) reserve ev.working_set_bytes;
//     if (ev.kind == Event::kTensor) submit *ev.tensor;
//   }
//   QUANTD_RETURN_IF_ERROR(assembler.Finish());  // at half-close
//
// Errors (each message names the tensor when there is one):
//   INVALID_ARGUMENT: message before JobStart, two JobStarts, header inside
//     an open tensor, chunk/end without header, empty or duplicate name, bad
//     dtype/shape/scheme (including a row length that is not whole blocks of
//     a block format), importance weights that are not row_length finite
//     values >= 0 or sent with an int scheme, chunk offset not equal to
//     bytes received, more bytes than the shape holds, end with too few
//     bytes, stream ends inside a tensor.
//   UNIMPLEMENTED: importance weights for a block format whose importance
//     path the kernels do not implement.
//   RESOURCE_EXHAUSTED: tensor larger than max_tensor_bytes, chunk larger
//     than max_chunk_bytes (the message names the limit and its value).
//   DATA_LOSS: a chunk whose crc32c does not match its data, or a tensor
//     whose bytes do not match TensorEnd's crc32c.
// After an error the assembler must not be used again.
// Thread-compatible (one stream's reads are serialized).
#ifndef QUANTD_SERVER_ASSEMBLER_H_
#define QUANTD_SERVER_ASSEMBLER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "kernels/scheme.h"
#include "quantd/v1/quantizer.pb.h"
#include "server/quantize_job.h"

namespace quantd {

struct AssemblerLimits {
  int64_t max_tensor_bytes = int64_t{2} << 30;  // Default: 2 GiB
  int64_t max_chunk_bytes = int64_t{1} << 20;   // Default: 1 MiB
  int64_t max_name_bytes = 4096;
};

class StreamAssembler {
 public:
  struct Event {
    enum Kind { kNone, kStart, kHeader, kTensor };
    Kind kind = kNone;
    // kHeader: the tensor just opened and the bytes it will hold.
    std::string name;
    int64_t working_set_bytes = 0;
    // kTensor: the complete tensor, ready for a worker.
    std::unique_ptr<TensorInput> tensor;
  };

  explicit StreamAssembler(AssemblerLimits limits) : limits_(limits) {}

  // Consumes `request` (chunk data is moved out of it).
  absl::StatusOr<Event> Consume(v1::QuantizeRequest& request);
  // The client half-closed: INVALID_ARGUMENT if a tensor is still open.
  absl::Status Finish() const;

 private:
  absl::StatusOr<Event> OnStart(const v1::JobStart& start);
  absl::StatusOr<Event> OnHeader(const v1::TensorHeader& header);
  absl::StatusOr<Event> OnChunk(v1::TensorChunk& chunk);
  absl::StatusOr<Event> OnEnd(const v1::TensorEnd& end);

  const AssemblerLimits limits_;
  bool started_ = false;
  Scheme default_scheme_;
  OutputKind output_ = OutputKind::kPacked;
  absl::flat_hash_set<std::string> seen_names_;
  std::string open_name_;
  std::unique_ptr<TensorInput> open_;
  int64_t expected_bytes_ = 0;
  int64_t received_bytes_ = 0;
  uint32_t running_crc32c_ = 0;  // of the chunks so far
};

}  // namespace quantd

#endif  // QUANTD_SERVER_ASSEMBLER_H_

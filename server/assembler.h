// StreamAssembler turns one Quantize stream's requests into complete
// tensors, enforcing the message order and limits of proto/README.md. It
// holds at most one open tensor; it never blocks and does no quantization.
//
//   StreamAssembler assembler(limits);
//   for (QuantizeRequest& req : requests) {
//     QUANTD_ASSIGN_OR_RETURN(StreamAssembler::Event ev, assembler.Consume(req));
//     if (ev.kind == Event::kHeader) reserve ev.working_set_bytes;
//     if (ev.kind == Event::kTensor) submit *ev.tensor;
//     if (ev.kind == Event::kCalibrationHeader) reserve, open ev.calibration;
//     if (ev.kind == Event::kCalibrationChunk) fold ev.data (whole rows);
//     if (ev.kind == Event::kCalibrationEnd) complete with ev.payload;
//   }
//   QUANTD_RETURN_IF_ERROR(assembler.Finish());  // at half-close
//
// Calibration sets (CalibrationHeader, CalibrationChunk*, CalibrationEnd)
// are checked here -- order, names, kind/dtype/features/tokens, whole rows,
// byte counts, offsets, CRCs, finite activations -- but not folded: an
// activations chunk comes out as an event for the pool; the few bytes of a
// GRAM or IMPORTANCE set are buffered here and come out at its end. A
// tensor's `calibration` must name a set that ended earlier in the stream,
// with as many features as the tensor's row length.
//
// Errors (each message names the tensor or the set when there is one):
//   INVALID_ARGUMENT: message before JobStart, two JobStarts, header inside
//     an open tensor, chunk/end without header, empty or duplicate name, bad
//     dtype/shape/scheme (including a row length that is not whole blocks of
//     a block format), importance weights that are not row_length finite
//     values >= 0 or sent with an int scheme, chunk offset not equal to
//     bytes received, more bytes than the shape holds, end with too few
//     bytes, stream ends inside a tensor. Calibration: a set's message
//     inside an open tensor or a tensor's inside an open set, a chunk/end
//     without an open set, an empty, over-long or repeated set name, an
//     unknown kind, a bad dtype for the kind, features outside [1, 2^24],
//     tokens not 0 for ACTIVATIONS or < 1 for GRAM/IMPORTANCE, an
//     activations chunk that is not whole rows or holds a NaN/Inf (row,
//     token and column named), an offset not equal to the bytes received,
//     more or fewer bytes than a GRAM/IMPORTANCE set holds, an activations
//     set with no rows at its end, a tensor naming an unknown set (tensor
//     and set named) or one whose features differ from its row length
//     (both named), activation range options out of range.
//   UNIMPLEMENTED: importance weights for a block format whose importance
//     path the kernels do not implement.
//   RESOURCE_EXHAUSTED: tensor larger than max_tensor_bytes, chunk larger
//     than max_chunk_bytes (the message names the limit and its value).
//   DATA_LOSS: a chunk whose crc32c does not match its data, or a tensor
//     (set) whose bytes do not match TensorEnd's (CalibrationEnd's) crc32c.
// After an error the assembler must not be used again.
// Thread-compatible (one stream's reads are serialized).
#ifndef QUANTD_SERVER_ASSEMBLER_H_
#define QUANTD_SERVER_ASSEMBLER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "kernels/range_estimators.h"
#include "kernels/scheme.h"
#include "quantd/v1/quantizer.pb.h"
#include "server/calibration_set.h"
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
    enum Kind {
      kNone,
      kStart,
      kHeader,
      kTensor,
      kCalibrationHeader,
      kCalibrationChunk,
      kCalibrationEnd,
    };
    Kind kind = kNone;
    // kHeader: the tensor just opened and the bytes it will hold.
    // kCalibration*: the set's name; kCalibrationHeader: the bytes its
    // statistics hold (CalibrationSetBytes); kCalibrationChunk: the bytes
    // the chunk holds until folded (CalibrationChunkBytes).
    std::string name;
    int64_t working_set_bytes = 0;
    // kTensor: the complete tensor, ready for a worker. Its
    // calibration_name, when set, names a set that ended earlier.
    std::unique_ptr<TensorInput> tensor;
    // kCalibrationHeader: the set, and the bytes of its wire payload
    // (CalibrationBufferBytes) to reserve before its chunks arrive.
    CalibrationSpec calibration;
    int64_t buffer_bytes = 0;
    // kCalibrationChunk (activations): whole rows, checked finite, moved
    // out of the request.
    std::string data;
    // kCalibrationEnd: a GRAM / IMPORTANCE set's values.
    CalibrationPayload payload;
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
  absl::StatusOr<Event> OnCalibrationHeader(const v1::CalibrationHeader& header);
  absl::StatusOr<Event> OnCalibrationChunk(v1::CalibrationChunk& chunk);
  absl::StatusOr<Event> OnCalibrationEnd(const v1::CalibrationEnd& end);

  // A calibration set between its header and end.
  struct OpenSet {
    CalibrationSpec spec;
    int64_t expected_bytes = 0;  // GRAM / IMPORTANCE; 0 for activations
    int64_t received_bytes = 0;
    uint32_t running_crc32c = 0;
    CalibrationPayload payload;
  };

  const AssemblerLimits limits_;
  bool started_ = false;
  Scheme default_scheme_;
  OutputKind output_ = OutputKind::kPacked;
  RangeOptions default_range_;
  absl::flat_hash_set<std::string> seen_names_;
  std::string open_name_;
  std::unique_ptr<TensorInput> open_;
  int64_t expected_bytes_ = 0;
  int64_t received_bytes_ = 0;
  uint32_t running_crc32c_ = 0;  // of the chunks so far
  std::unique_ptr<OpenSet> open_set_;
  // Sets that ended: name -> feature count and held-back rows.
  struct EndedSet {
    int64_t features = 0;
    int64_t holdout_rows = 0;
  };
  absl::flat_hash_map<std::string, EndedSet> sets_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_ASSEMBLER_H_

// C++ client for the quantd.v1.Quantizer service: server info and streaming
// quantization jobs over one channel.
//
//   auto channel = grpc::CreateChannel("localhost:50051",
//                                      grpc::InsecureChannelCredentials());
//   quantd::QuantdClient client(channel);
//   QUANTD_ASSIGN_OR_RETURN(quantd::v1::ServerInfo info,
//                           client.GetServerInfo());
//
//   quantd::JobConfig job;
//   job.scheme = *quantd::ParseScheme("int4_asym_g128");
//   std::vector<quantd::TensorRequest> todo = ...;  // data: spans into mmaps
//   size_t next = 0;
//   absl::Status s = client.RunJob(
//       job,
//       [&]() -> std::optional<quantd::TensorRequest> {
//         if (next == todo.size()) return std::nullopt;
//         return todo[next++];
//       },
//       [&](const std::string& name, absl::StatusOr<quantd::TensorReply> r) {
//         ...  // one call per tensor that got an answer
//       });
//
// Errors: every function returns absl::Status; a gRPC status becomes the
// absl::Status with the same code and message (GrpcToAbslStatus), once, here.
#ifndef QUANTD_CLIENT_QUANTD_CLIENT_H_
#define QUANTD_CLIENT_QUANTD_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kernels/dtype.h"
#include "kernels/layout.h"
#include "kernels/parts.h"
#include "kernels/scheme.h"
#include "proto/wire_convert.h"
#include "quantd/v1/quantizer.grpc.pb.h"

namespace quantd {

// Same code, same message.
absl::Status GrpcToAbslStatus(const grpc::Status& status);

// One tensor to quantize.
struct TensorRequest {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  // Overrides JobConfig::scheme for this tensor when set.
  std::optional<Scheme> scheme;
  // Raw little-endian bytes, product(shape) * DTypeSize(dtype) of them. Not
  // owned: must stay valid until this tensor's result callback has run (or
  // RunJob has returned). Sent in chunks; never copied whole.
  absl::Span<const uint8_t> data;
  // Importance weights for a ggml block format (an imatrix entry): empty, or
  // one per column (the last dimension), finite and >= 0. Sent in the
  // header; the server answers INVALID_ARGUMENT naming the tensor for a
  // wrong count or value, or for weights with an int scheme (see
  // TensorHeader.importance in the proto).
  std::vector<float> importance;
  // Name of a calibration set of the job (JobConfig::calibration_sets)
  // whose activations are this tensor's input: its row length must equal
  // the set's features. The reply then carries output metrics and the
  // activation range (see TensorHeader.calibration). Empty: none.
  std::string calibration;
  // Overrides JobConfig::activation_range for this tensor when set.
  std::optional<v1::ActivationRangeOptions> activation_range;
  // QAT import (TensorHeader.scales / zero_points): externally learned
  // scales, one per group of the int scheme's layout, and for an asymmetric
  // scheme as many zero points; the server codes with them instead of
  // computing its own. Empty: none.
  std::vector<float> scales;
  std::vector<uint8_t> zero_points;
};

// A calibration set, sent after JobStart and before any tensor.
struct CalibrationSetRequest {
  std::string name;
  v1::CalibrationKind kind = v1::CALIBRATION_KIND_ACTIVATIONS;
  // ACTIVATIONS: F32, F16 or BF16 (ignored for GRAM and IMPORTANCE).
  DType dtype = DType::kF32;
  int64_t features = 0;
  // GRAM / IMPORTANCE: tokens the statistics came from (>= 1). Ignored for
  // ACTIVATIONS (the server counts).
  int64_t tokens = 0;
  // ACTIVATIONS: tokens x features values of `dtype`, row-major; GRAM:
  // features² f64; IMPORTANCE: features f32; little-endian. Not owned: must
  // stay valid until RunJob returns. Sent in chunks of whole rows (at most
  // JobConfig::chunk_bytes, at least one row), never copied whole.
  absl::Span<const uint8_t> data;
  // ACTIVATIONS: per-feature histograms too. Default: false.
  bool channel_histograms = false;
  // ACTIVATIONS: the first rows held back from the statistics for the
  // integer-only check of int8 tensors (CalibrationHeader.holdout_rows;
  // at most 4096). Default: 0.
  int64_t holdout_rows = 0;
};

// A tensor's quantized result, assembled from its ShardChunks and checked
// against the TensorResult (sizes against the layout, crc32c per part).
struct TensorReply {
  std::string name;
  v1::Layout layout;
  // The parts (kernels/parts.h), each exactly as many bytes as
  // PartBytes gives for the layout and the job's output kind, CRC-checked;
  // empty for the parts the layout or output kind does not have. E.g. a
  // packed int4_asym_g128 reply has part(Part::kCodes), kScales (f32 LE)
  // and kZeroPoints; AWQ and SmoothQuant add kChannelScales (s, f32 LE, one
  // per input column: divide the layer's input by s), GPTQ act_order with
  // dynamic groups kGroupIndex (int32 LE per column, checked to be in
  // range).
  PerPart<std::vector<uint8_t>> parts;
  const std::vector<uint8_t>& part(Part p) const { return parts[p]; }
  // CRC-32C of each part's bytes (0 for an empty part), as received and
  // checked against the server's TensorResult.
  PerPart<uint32_t> crc32c;
  v1::Metrics metrics;
  // With TensorRequest::calibration: output-space metrics over the set
  // (absent for an IMPORTANCE set), the set's static int8 activation range
  // (ACTIVATIONS sets), and whether the set gave a block format its
  // importance weights.
  std::optional<v1::OutputMetrics> output_metrics;
  std::optional<v1::ActivationRange> activation_range;
  bool importance_from_calibration = false;
  // The integer-only check on the set's held-back rows (int8 tensors).
  std::optional<v1::W8A8Check> w8a8;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  double queue_seconds = 0;    // as reported by the server
  double compute_seconds = 0;  // as reported by the server
  // Client wall time from sending the header to receiving the result.
  double seconds = 0;
};

struct JobConfig {
  // Default scheme of the job (JobStart.scheme). Default: int8 symmetric
  // per channel.
  Scheme scheme;
  // What the server returns. Default: packed codes, scales, zero points.
  v1::OutputKind output = v1::OUTPUT_KIND_PACKED;
  // JobStart.client, for server logs. Default: "quantd-client".
  std::string client_name = "quantd-client";
  // Tensors sent but not yet answered, at most. 2 (the default) keeps the
  // server busy -- tensor k+1 arrives while k is quantized -- without making
  // it hold more than two tensors of this stream. REQUIRES: >= 1.
  int max_in_flight_tensors = 2;
  // Bytes per TensorChunk; at most the server's max_chunk_bytes (1 MiB).
  uint64_t chunk_bytes = uint64_t{1} << 20;
  // Deadline for the whole stream. Default: none.
  absl::Duration timeout = absl::InfiniteDuration();
  // Calibration sets sent, in order, after JobStart and before the first
  // tensor. Default: none.
  std::vector<CalibrationSetRequest> calibration_sets;
  // JobOptions.activation_range: how tensors' activation ranges are
  // estimated. Default: min-max, symmetric.
  v1::ActivationRangeOptions activation_range;
};

// Produces the next tensor to send, or nullopt when the job has no more.
// Called on the job's sender thread, only when fewer than
// max_in_flight_tensors tensors are unanswered.
using TensorSource = std::function<std::optional<TensorRequest>()>;

// Called once per tensor that was answered: with the reply, or with the
// error found checking it (DataLoss for a crc32c or size mismatch, naming
// the tensor). Called on the thread that called RunJob, one call at a time.
using ResultCallback =
    std::function<void(const std::string& name, absl::StatusOr<TensorReply>)>;

// Thread-safety: a QuantdClient may be shared; each call is independent and
// may run concurrently with others (each RunJob is its own stream).
class QuantdClient {
 public:
  // `auth_token`, when not empty, is sent as "authorization: Bearer
  // <token>" on every call (servers started with --auth_token_file).
  explicit QuantdClient(std::shared_ptr<grpc::Channel> channel,
                        std::string auth_token = "");

  // The server's ServerInfo. Unavailable if it cannot be reached within
  // `timeout`. When `peer` is non-null it is set to the address of the
  // server that answered (gRPC's peer URI, e.g. "ipv4:10.0.0.7:50051"),
  // which tells the replicas of a load-balanced channel apart.
  absl::StatusOr<v1::ServerInfo> GetServerInfo(
      absl::Duration timeout = absl::Seconds(10), std::string* peer = nullptr);

  // Runs one Quantize stream: sends JobStart, then each tensor from `source`
  // (header, chunks, end) on a sender thread, while this thread receives and
  // assembles results and calls `on_result` for each. Returns when the
  // stream has finished: OK if the server finished with OK and every tensor
  // sent was answered; otherwise the stream's status (the server's, e.g.
  // InvalidArgument naming a bad tensor), or DataLoss/Internal for a
  // protocol violation by the server. Names of tensors taken from `source`
  // that got no on_result call are appended to `unanswered` when non-null,
  // in the order they were taken (so a caller can retry them).
  absl::Status RunJob(const JobConfig& config, const TensorSource& source,
                      const ResultCallback& on_result,
                      std::vector<std::string>* unanswered = nullptr);

 private:
  void Authorize(grpc::ClientContext& context) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Quantizer::Stub> stub_;
  std::string auth_token_;
};

// Channel credentials from PEM files: TLS when `ca_file` is set (the CA
// that signed the servers' certificates), mutual TLS when `cert_file` and
// `key_file` are set too; insecure when all are empty. InvalidArgument if a
// file cannot be read or only one of cert/key is given.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const std::string& ca_file, const std::string& cert_file,
    const std::string& key_file);

}  // namespace quantd

#endif  // QUANTD_CLIENT_QUANTD_CLIENT_H_

// Dispatch: sends a set of tensors through one or more quantd servers on
// parallel streams and settles every tensor exactly once -- answered, or
// failed after its attempts. The scheduling part of a `quantctl quantize`
// run, independent of the file format being read or written.
//
//   std::vector<DispatchServer> servers = {{&client_a, "a:50051", 1 << 20, 2},
//                                          {&client_b, "b:50051", 1 << 20, 2}};
//   DispatchOptions options;
//   options.job.scheme = *ParseScheme("int4_asym_g128");
//   Dispatch(options, servers, requests,
//            [&](size_t i, TensorReply reply, const DispatchInfo& info) {
//              return Store(i, reply);  // non-OK fails tensor i
//            },
//            [&](size_t i, const absl::Status& error, const DispatchInfo& info)
//            {
//              Report(i, error);
//            });
//
// How tensors move:
//   - Largest first (then by name). Each stream takes the next tensor when
//     it has room for one more in flight (JobConfig::max_in_flight_tensors).
//   - A stream that fails takes its unanswered tensors with it. A failure the
//     error message pins on one tensor (INVALID_ARGUMENT naming it) fails
//     that tensor at once; its innocent neighbours are sent again without
//     being charged an attempt. Transient codes (kRetryableCodes below:
//     UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED,
//     DATA_LOSS, INTERNAL, UNKNOWN, CANCELLED) are retried, each tensor alone
//     on a stream, after a jittered exponential backoff (base_backoff *
//     2^attempt, at most max_backoff, times a uniform factor in [0.5, 1]).
//   - A server whose stream fails UNAVAILABLE is marked down for a cooldown
//     (server_cooldown, doubling per consecutive failure up to
//     max_server_cooldown, jittered); its streams wait meanwhile and the
//     next stream they open is the probe. A tensor that failed on a server
//     is re-sent to another server when one is up ("moved").
//   - A tensor is failed after max_attempts sends. A server whose streams
//     fail max_attempts times in a row without answering anything (it cannot
//     open one, or it goes away) is given up on; when every server is, the
//     tensors still queued fail with its error, so a run against dead
//     servers ends within a few cooldowns.
//
// Thread-safety: Dispatch blocks until every tensor is settled; the
// callbacks run on its stream threads, concurrently for different tensors,
// never twice for one tensor.
#ifndef QUANTD_CLIENT_DISPATCHER_H_
#define QUANTD_CLIENT_DISPATCHER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/quantd_client.h"

namespace quantd {

// One server (or one load-balanced channel) to send to.
struct DispatchServer {
  QuantdClient* client = nullptr;  // not owned
  std::string name;                // for reports: "host:port"
  uint64_t chunk_bytes = uint64_t{1} << 20;
  int streams = 2;  // parallel streams (threads) on this server, >= 1
};

struct DispatchOptions {
  // Default scheme, output kind, client name and tensors in flight per
  // stream; chunk_bytes comes from each DispatchServer.
  JobConfig job;
  // Sends of one tensor before it is failed (>= 1).
  int max_attempts = 3;
  absl::Duration base_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(2);
  absl::Duration server_cooldown = absl::Milliseconds(500);
  absl::Duration max_server_cooldown = absl::Seconds(8);
};

// What a callback learns about the send that settled a tensor.
struct DispatchInfo {
  std::string server;  // the server that answered or failed last
  int attempts = 0;    // sends of this tensor, including the last
  bool moved = false;  // answered by another server than a failed send's
};

// Stores an answered tensor; a non-OK status fails it (not retried).
using DispatchReplyFn = std::function<absl::Status(
    size_t index, TensorReply reply, const DispatchInfo& info)>;
// Reports a failed tensor (final).
using DispatchFailureFn = std::function<void(
    size_t index, const absl::Status& status, const DispatchInfo& info)>;

// Sends requests[i] for every i and calls exactly one of on_reply /
// on_failure per i before returning. `requests` (and the bytes their spans
// point at) must outlive the call. REQUIRES: servers non-empty, each with a
// client and streams >= 1; options.max_attempts >= 1.
void Dispatch(const DispatchOptions& options,
              absl::Span<const DispatchServer> servers,
              const std::vector<TensorRequest>& requests,
              const DispatchReplyFn& on_reply,
              const DispatchFailureFn& on_failure);

// The codes a failed send is repeated for: the server, the network or a
// checksum failed, not the tensor. The one table of them; the Python SDK's
// set (quantd/client.py) is checked against the same list in
// tests/data/shared_cases.json, as is this table.
inline constexpr absl::StatusCode kRetryableCodes[] = {
    absl::StatusCode::kUnavailable, absl::StatusCode::kResourceExhausted,
    absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kAborted,
    absl::StatusCode::kDataLoss,    absl::StatusCode::kInternal,
    absl::StatusCode::kUnknown,     absl::StatusCode::kCancelled,
};

// Whether a failed send with this code is worth repeating: whether it is in
// kRetryableCodes.
bool IsRetryableCode(absl::StatusCode code);

}  // namespace quantd

#endif  // QUANTD_CLIENT_DISPATCHER_H_

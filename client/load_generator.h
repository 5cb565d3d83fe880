// RunLoad: a load generator for quantd servers (`quantctl bench`). Keeps
// `concurrency` streams busy for a duration with tensors of one shape and
// scheme, optionally mixed with deliberately bad requests, and reports
// throughput, per-tensor latency percentiles and every status seen.
//
//   LoadOptions options;
//   options.channel = grpc::CreateChannel("localhost:50051", creds);
//   options.concurrency = 8;
//   options.duration = absl::Seconds(30);
//   options.bad_fraction = 0.1;
//   QUANTD_ASSIGN_OR_RETURN(LoadReport report, RunLoad(options));
//   std::cout << FormatLoadReport(report);
//
// Good tensors are sent `tensors_per_stream` to a stream (pipelined,
// max_in_flight_tensors in flight); latency is the client's wall time from
// a tensor's header to its result. Bad requests are single-tensor streams of
// one of these kinds, each with the status a correct server answers:
//   nan       a NaN element                       INVALID_ARGUMENT
//   scheme    an unknown scheme format            INVALID_ARGUMENT
//   shape     a group size that does not divide   INVALID_ARGUMENT
//             the row
//   deadline  a 1 ms deadline on a stream of 64    DEADLINE_EXCEEDED
//             copies of the tensor (expires mid-upload)
// A bad request answered with another status counts as "unexpected".
//
// Thread-safety: RunLoad may run concurrently with itself.
#ifndef QUANTD_CLIENT_LOAD_GENERATOR_H_
#define QUANTD_CLIENT_LOAD_GENERATOR_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/json.h"
#include "kernels/dtype.h"
#include "kernels/scheme.h"

namespace quantd {

struct LoadOptions {
  // The server (or load-balanced channel). Required.
  std::shared_ptr<grpc::Channel> channel;
  std::string target;      // for the report
  std::string auth_token;  // bearer token, if the server wants one
  int concurrency = 4;     // parallel streams, >= 1
  absl::Duration duration = absl::Seconds(10);
  std::vector<int64_t> shape = {1024, 1024};
  DType dtype = DType::kF32;
  std::string scheme = "int8";  // ParseScheme text
  int tensors_per_stream = 16;  // good tensors per stream, >= 1
  int max_in_flight_tensors = 2;
  // Share (0..1) of the streams each worker opens that carry one bad
  // request instead of good tensors; the kind is drawn at random.
  double bad_fraction = 0;
  uint64_t seed = 1;
};

struct LoadReport {
  std::string target;
  std::string scheme;
  std::vector<int64_t> shape;
  DType dtype = DType::kF32;
  int concurrency = 0;
  double seconds = 0;  // wall time of the whole run
  int64_t tensor_bytes = 0;
  int64_t good_sent = 0;
  int64_t good_ok = 0;
  // Latency of each good tensor answered, milliseconds, sorted.
  std::vector<double> latencies_ms;
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0;
  double tensors_per_second = 0;
  double gigabytes_per_second = 0;  // input bytes of good tensors answered
  // Bad requests per kind: sent, answered with the expected status.
  struct BadKind {
    int64_t sent = 0;
    int64_t expected = 0;
    std::string expected_code;
  };
  std::map<std::string, BadKind> bad;
  // Final status code of every stream that did not end OK, and of good
  // tensors that failed, by code name.
  std::map<std::string, int64_t> errors;
  int64_t unexpected = 0;  // bad requests answered with another status
  int64_t good_failed = 0;
};

// InvalidArgument for bad options (no channel, concurrency < 1, a scheme
// that does not parse or does not fit the shape).
absl::StatusOr<LoadReport> RunLoad(const LoadOptions& options);

// The table `quantctl bench` prints.
std::string FormatLoadReport(const LoadReport& report);
OrderedJson LoadReportToJson(const LoadReport& report);

}  // namespace quantd

#endif  // QUANTD_CLIENT_LOAD_GENERATOR_H_

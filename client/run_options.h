// RunOptions: the options every `quantctl quantize` run has, whatever its
// container format -- the servers and how to reach them, the streams, the
// attempts, resuming, progress and the report. QuantizeModelOptions
// (safetensors) and QuantizeGgufOptions (GGUF) extend it with what only
// their format has.
//
//   QuantizeGgufOptions options;  // a RunOptions
//   options.output = "model-Q4_K_M.gguf";
//   options.servers = {"localhost:50051"};
//   options.resume = true;
//
// Thread-safety: a plain struct; copy it freely.
#ifndef QUANTD_CLIENT_RUN_OPTIONS_H_
#define QUANTD_CLIENT_RUN_OPTIONS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "client/progress.h"

namespace quantd {

struct RunOptions {
  // The output file. Required. Written as OUTPUT.partial and renamed when
  // complete; not written if any tensor failed (OUTPUT.partial and its
  // manifest stay, for a rerun to resume).
  std::string output;
  // The JSON report. Default (empty): output + ".report.json".
  std::string report;
  bool write_report = true;
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
};

}  // namespace quantd

#endif  // QUANTD_CLIENT_RUN_OPTIONS_H_

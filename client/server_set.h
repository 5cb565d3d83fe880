// The server set of a quantctl run, the same for every container format:
// the addresses given become channels (one per address, round_robin over
// the replicas a gRPC target URI names), each is asked GetServerInfo, and
// those that answer are the dispatch targets -- servers that do not answer
// are left out and reported as long as one answers.
//
//   QUANTD_ASSIGN_OR_RETURN(ServerSet set, ConnectServers(options));
//   Dispatch(dispatch, set.targets, requests, on_reply, on_failure);
//   run.servers = set.servers;
//   run.down_servers = set.down_servers;
//
// Thread-safety: ConnectServers may run concurrently with itself; a
// ServerSet's clients may be used from any thread (see QuantdClient).
#ifndef QUANTD_CLIENT_SERVER_SET_H_
#define QUANTD_CLIENT_SERVER_SET_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/dispatcher.h"
#include "client/quantd_client.h"
#include "client/run_options.h"
#include "client/run_report.h"

namespace quantd {

// For a gRPC target URI that names replicas ("dns:///host:port",
// "dns://authority/host:port", "ipv4:a:p,b:p", "ipv6:[a]:p,[b]:p"): how many
// addresses it stands for now (at least 1; a name that does not resolve
// counts 1 and gRPC reports the error). 0 for a plain "host:port".
int BalancedAddressCount(absl::string_view target);

// The servers that answered at start, ready for Dispatch.
struct ServerSet {
  std::vector<std::unique_ptr<QuantdClient>> clients;  // owned
  // One per answering server, in the order given; each points into
  // `clients` (stable when the set is moved).
  std::vector<DispatchServer> targets;
  std::vector<ServerSummary> servers;       // answered, with their info
  std::vector<ServerSummary> down_servers;  // did not answer at start
  // The smallest max_tensor_bytes of the servers (any tensor may go to any
  // of them) and which server has it; max() if none sets a limit.
  uint64_t max_tensor_bytes = std::numeric_limits<uint64_t>::max();
  std::string max_tensor_bytes_server;
};

// Makes the channels of options.servers (or takes options.channels), asks
// each GetServerInfo within options.connect_timeout_seconds, concurrently,
// and gives every answering one options.streams_per_server streams per
// replica. InvalidArgument if no server is given or the TLS files cannot be
// read; the first server's status (Unavailable, naming it) if none
// answers.
absl::StatusOr<ServerSet> ConnectServers(const RunOptions& options);

}  // namespace quantd

#endif  // QUANTD_CLIENT_SERVER_SET_H_

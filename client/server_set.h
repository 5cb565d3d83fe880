// The server set of a quantctl run: how the addresses given on the command
// line become channels (one per address, round_robin over the replicas a
// gRPC target URI names).
//
//   int replicas = BalancedAddressCount("dns:///quantd.ns.svc:50051");
//
// Thread-safety: the functions here are thread-compatible (no shared state).
#ifndef QUANTD_CLIENT_SERVER_SET_H_
#define QUANTD_CLIENT_SERVER_SET_H_

#include "absl/strings/string_view.h"

namespace quantd {

// For a gRPC target URI that names replicas ("dns:///host:port",
// "dns://authority/host:port", "ipv4:a:p,b:p", "ipv6:[a]:p,[b]:p"): how many
// addresses it stands for now (at least 1; a name that does not resolve
// counts 1 and gRPC reports the error). 0 for a plain "host:port".
int BalancedAddressCount(absl::string_view target);

}  // namespace quantd

#endif  // QUANTD_CLIENT_SERVER_SET_H_

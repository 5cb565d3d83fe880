#include "client/server_set.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace quantd {

int BalancedAddressCount(absl::string_view target) {
  for (absl::string_view scheme : {"ipv4:", "ipv6:"}) {
    if (absl::ConsumePrefix(&target, scheme)) {
      return static_cast<int>(
          std::vector<absl::string_view>(
              absl::StrSplit(target, ',', absl::SkipEmpty()))
              .size());
    }
  }
  if (!absl::ConsumePrefix(&target, "dns:")) return 0;
  if (absl::ConsumePrefix(&target, "//")) {
    const size_t slash = target.find('/');  // skip the DNS server authority
    target = slash == absl::string_view::npos ? "" : target.substr(slash + 1);
  }
  std::string host(target);
  std::string port = "443";  // gRPC's default port for dns: targets
  if (absl::ConsumePrefix(&target, "[")) {
    const size_t close = target.find(']');
    if (close == absl::string_view::npos) return 1;
    host = std::string(target.substr(0, close));
    if (absl::StartsWith(target.substr(close + 1), ":")) {
      port = std::string(target.substr(close + 2));
    }
  } else if (const size_t colon = target.rfind(':');
             colon != absl::string_view::npos) {
    host = std::string(target.substr(0, colon));
    port = std::string(target.substr(colon + 1));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return 1;
  absl::flat_hash_set<std::string> distinct;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    distinct.insert(
        std::string(reinterpret_cast<const char*>(a->ai_addr), a->ai_addrlen));
  }
  freeaddrinfo(found);
  return std::max(static_cast<int>(distinct.size()), 1);
}

}  // namespace quantd

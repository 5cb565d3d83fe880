#include "client/server_set.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <memory>
#include <thread>
#include <utility>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"

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

absl::StatusOr<ServerSet> ConnectServers(const RunOptions& options) {
  if (options.servers.empty() && options.channels.empty()) {
    return absl::InvalidArgumentError("no server given");
  }
  std::vector<std::shared_ptr<grpc::Channel>> channels = options.channels;
  std::vector<std::string> addresses;
  // Per channel: how many replicas it balances over (1 but for URI targets).
  std::vector<int> replicas(channels.size(), 1);
  if (channels.empty()) {
    QUANTD_ASSIGN_OR_RETURN(
        std::shared_ptr<grpc::ChannelCredentials> credentials,
        MakeChannelCredentials(options.tls_ca_file, options.tls_cert_file,
                               options.tls_key_file));
    for (const std::string& address : options.servers) {
      const int count = BalancedAddressCount(address);
      grpc::ChannelArguments args;
      if (count > 0) args.SetLoadBalancingPolicyName("round_robin");
      channels.push_back(grpc::CreateCustomChannel(address, credentials, args));
      addresses.push_back(address);
      replicas.push_back(std::max(count, 1));
    }
  } else {
    for (size_t i = 0; i < channels.size(); ++i) {
      addresses.push_back(absl::StrCat("channel", i));
    }
  }
  ServerSet set;
  std::vector<std::unique_ptr<QuantdClient>>& clients = set.clients;
  std::vector<uint64_t> chunk_bytes;
  // Servers that do not answer at start are left out (and reported) as long
  // as one answers.
  std::vector<std::unique_ptr<QuantdClient>> all_clients(channels.size());
  std::vector<absl::StatusOr<v1::ServerInfo>> infos(channels.size());
  std::vector<std::string> peers(channels.size());
  {
    std::vector<std::thread> probes;
    for (size_t i = 0; i < channels.size(); ++i) {
      all_clients[i] =
          std::make_unique<QuantdClient>(channels[i], options.auth_token);
      probes.emplace_back([&, i] {
        infos[i] = all_clients[i]->GetServerInfo(
            absl::Seconds(options.connect_timeout_seconds), &peers[i]);
      });
    }
    for (std::thread& t : probes) t.join();
  }
  std::vector<std::string> answering;
  std::vector<int> answering_replicas;
  for (size_t i = 0; i < channels.size(); ++i) {
    if (!infos[i].ok()) {
      ServerSummary down;
      down.address = addresses[i];
      down.status = absl::Status(infos[i].status().code(),
                                 absl::StrCat("server ", addresses[i], ": ",
                                              infos[i].status().message()));
      set.down_servers.push_back(std::move(down));
    }
  }
  if (set.down_servers.size() == channels.size()) {
    return set.down_servers.front().status;
  }
  for (size_t i = 0; i < channels.size(); ++i) {
    if (!infos[i].ok()) continue;
    clients.push_back(std::move(all_clients[i]));
    answering.push_back(addresses[i]);
    answering_replicas.push_back(replicas[i]);
    std::string peer = peers[i];
    absl::StatusOr<v1::ServerInfo>& info = infos[i];
    if (replicas[i] > 1) {
      // round_robin gives a new stream to the next *connected* replica, and
      // streams live for the whole run: wait (bounded) until every replica
      // has answered once, so the streams start spread over all of them.
      absl::flat_hash_set<std::string> answered = {peer};
      const absl::Time deadline = absl::Now() + absl::Seconds(2);
      while (static_cast<int>(answered.size()) < replicas[i] &&
             absl::Now() < deadline) {
        if (clients.back()->GetServerInfo(absl::Seconds(1), &peer).ok()) {
          answered.insert(peer);
        } else {
          absl::SleepFor(absl::Milliseconds(20));
        }
      }
    }
    uint64_t chunk = uint64_t{1} << 20;
    if (info->limits().max_chunk_bytes() > 0) {
      chunk = std::min(chunk, info->limits().max_chunk_bytes());
    }
    chunk_bytes.push_back(chunk);
    set.servers.push_back({addresses[i], *std::move(info), absl::OkStatus()});
  }
  addresses = std::move(answering);
  replicas = std::move(answering_replicas);

  // The smallest tensor limit of all servers (any tensor may go anywhere).
  for (const ServerSummary& server : set.servers) {
    uint64_t limit = server.info.limits().max_tensor_bytes();
    if (limit > 0 && limit < set.max_tensor_bytes) {
      set.max_tensor_bytes = limit;
      set.max_tensor_bytes_server = server.address;
    }
  }

  for (size_t i = 0; i < clients.size(); ++i) {
    set.targets.push_back({clients[i].get(), addresses[i], chunk_bytes[i],
                       options.streams_per_server * replicas[i]});
  }
  return set;
}

}  // namespace quantd

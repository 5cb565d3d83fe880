// QuantdServer: a running quantd — the gRPC server (Quantizer service,
// grpc.health.v1.Health, server reflection) and the Prometheus endpoint.
// main() is flag parsing around this class; tests start it in-process on
// loopback with port 0.
//
//   ServerOptions options;
//   options.listen = "127.0.0.1:0";
//   absl::StatusOr<std::unique_ptr<QuantdServer>> server =
//       QuantdServer::Start(options);
//   int port = (*server)->grpc_port();
//   ...
//   (*server)->Shutdown(absl::Seconds(30));
//
// Health: "" (liveness) is SERVING while the process runs;
// "quantd.v1.Quantizer" (readiness) is SERVING until Shutdown starts.
#ifndef QUANTD_SERVER_SERVER_H_
#define QUANTD_SERVER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/quantizer_service.h"

namespace grpc {
class Server;
}
namespace prometheus {
class Exposer;
}

namespace quantd {

struct ServerOptions {
  std::string listen = "0.0.0.0:50051";
  // Empty: no metrics endpoint.
  std::string metrics_listen = "0.0.0.0:9090";
  ServiceOptions service;
  // Largest gRPC message accepted: a chunk plus framing. Default: 4 MiB.
  int max_receive_message_bytes = 4 << 20;
};

class QuantdServer {
 public:
  // Binds both listeners and starts serving. UNAVAILABLE if a port cannot be
  // bound.
  static absl::StatusOr<std::unique_ptr<QuantdServer>> Start(
      const ServerOptions& options);
  ~QuantdServer();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  QuantizerService& service() { return *service_; }
  ServerMetrics& metrics() { return *metrics_; }

  // Readiness -> NOT_SERVING, refuse new streams, let running streams finish
  // until `drain` has passed, then cancel them. Idempotent.
  void Shutdown(absl::Duration drain);
  // Blocks until Shutdown has completed.
  void Wait();

 private:
  QuantdServer() = default;

  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<QuantizerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_SERVER_H_

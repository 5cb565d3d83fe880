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

struct TlsOptions {
  // PEM files. TLS is on when cert_file and key_file are set; with
  // client_ca_file, clients must present a certificate signed by it (mTLS).
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;
  // How often the files are checked for changes; a rotated certificate is
  // served from the next check on. Default: 60 s.
  int reload_seconds = 60;
};

struct ServerOptions {
  std::string listen = "0.0.0.0:50051";
  // Empty: no metrics endpoint.
  std::string metrics_listen = "0.0.0.0:9090";
  ServiceOptions service;
  TlsOptions tls;
  // Largest gRPC message accepted or sent: a chunk plus framing.
  // Default: 4 MiB.
  int max_message_bytes = 4 << 20;
  // Concurrent streams per HTTP/2 connection. Default: 64.
  int max_concurrent_streams = 64;
  // Server pings an idle connection after this long, and drops it if the
  // ping is not answered in keepalive_timeout_seconds. Defaults: 60 s, 20 s.
  int keepalive_time_seconds = 60;
  int keepalive_timeout_seconds = 20;
  // Connections are closed (GOAWAY) after this age, so clients re-resolve
  // and spread over new replicas; 0 means never. Running streams get
  // max_connection_age_grace_seconds to finish. Defaults: 0, 30 s.
  int max_connection_age_seconds = 0;
  int max_connection_age_grace_seconds = 30;
};

class QuantdServer {
 public:
  // Binds both listeners and starts serving. UNAVAILABLE if a port cannot be
  // bound; INVALID_ARGUMENT for an incomplete TLS configuration or
  // unreadable PEM files.
  static absl::StatusOr<std::unique_ptr<QuantdServer>> Start(
      const ServerOptions& options);
  ~QuantdServer();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  QuantizerService& service() { return *service_; }
  ServerMetrics& metrics() { return *metrics_; }

  // Readiness -> NOT_SERVING and new streams refused with UNAVAILABLE;
  // running streams may finish until `drain` has passed; those still
  // running then end with UNAVAILABLE (their jobs stop between steps).
  // Then the server stops. Idempotent.
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

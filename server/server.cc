#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <exception>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "prometheus/exposer.h"
#include "server/log.h"

namespace quantd {

constexpr char kReadinessService[] = "quantd.v1.Quantizer";

namespace {

absl::Status CheckReadable(const std::string& path, const char* flag) {
  std::ifstream f(path);
  if (!f.good()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", path, " cannot be read"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(
    const TlsOptions& tls) {
  if (tls.cert_file.empty() && tls.key_file.empty()) {
    if (!tls.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.cert_file.empty() || tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both --tls_cert_file and --tls_key_file");
  }
  QUANTD_RETURN_IF_ERROR(CheckReadable(tls.cert_file, "tls_cert_file"));
  QUANTD_RETURN_IF_ERROR(CheckReadable(tls.key_file, "tls_key_file"));
  if (!tls.client_ca_file.empty()) {
    QUANTD_RETURN_IF_ERROR(CheckReadable(tls.client_ca_file, "tls_client_ca_file"));
  }
  // The provider re-reads the files every reload_seconds, so rotated
  // certificates are picked up without a restart.
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, tls.client_ca_file,
      static_cast<unsigned int>(std::max(1, tls.reload_seconds)));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!tls.client_ca_file.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<QuantdServer>> QuantdServer::Start(
    const ServerOptions& options) {
  std::unique_ptr<QuantdServer> s(new QuantdServer());
  s->metrics_ = std::make_unique<ServerMetrics>();
  s->service_ = std::make_unique<QuantizerService>(options.service, s->metrics_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, *credentials, &s->grpc_port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             options.max_concurrent_streams);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             options.keepalive_time_seconds * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             options.keepalive_timeout_seconds * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Clients may ping as often as every 10 s without being sent GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             10000);
  if (options.max_connection_age_seconds > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               options.max_connection_age_seconds * 1000);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               options.max_connection_age_grace_seconds * 1000);
  }
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->grpc_port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on --listen=", options.listen));
  }
  grpc::HealthCheckServiceInterface* health = s->server_->GetHealthCheckService();
  health->SetServingStatus("", true);
  health->SetServingStatus(kReadinessService, true);

  if (!options.metrics_listen.empty()) {
    try {
      s->exposer_ = std::make_unique<prometheus::Exposer>(options.metrics_listen);
    } catch (const std::exception& e) {
      s->Shutdown(absl::ZeroDuration());
      return absl::UnavailableError(absl::StrCat(
          "cannot listen on --metrics_listen=", options.metrics_listen, ": ",
          e.what()));
    }
    s->exposer_->RegisterCollectable(s->metrics_->registry());
    s->exposer_->RegisterCollectable(s->metrics_->process_collector());
    const std::vector<int> ports = s->exposer_->GetListeningPorts();
    s->metrics_port_ = ports.empty() ? 0 : ports.front();
  }
  Log(LogLevel::kInfo, "serving",
      {{"listen", options.listen},
       {"grpc_port", s->grpc_port_},
       {"metrics_port", s->metrics_port_},
       {"workers", s->service_->pool().workers()},
       {"memory_budget_bytes", options.service.memory_budget_bytes},
       {"max_tensor_bytes", options.service.limits.max_tensor_bytes}});
  return s;
}

QuantdServer::~QuantdServer() {
  Shutdown(absl::ZeroDuration());
  // The service outlives the server; its destructor runs queued jobs.
  server_.reset();
  service_.reset();
  exposer_.reset();
}

void QuantdServer::Shutdown(absl::Duration drain) {
  if (shut_down_ || server_ == nullptr) return;  // stopped, or never started
  shut_down_ = true;
  Log(LogLevel::kInfo, "draining",
      {{"drain_seconds", absl::ToDoubleSeconds(drain)},
       {"streams", service_->active_streams()}});
  server_->GetHealthCheckService()->SetServingStatus(kReadinessService, false);
  service_->StartDraining();
  if (!service_->WaitForStreams(absl::Now() + drain)) {
    const int64_t left = service_->active_streams();
    Log(LogLevel::kWarning, "drain deadline passed", {{"streams", left}});
    service_->AbortAll(absl::UnavailableError(absl::StrCat(
        "server shut down: drain deadline of ", absl::ToDoubleSeconds(drain),
        " s passed; send the unanswered tensors again")));
    // Let the aborted streams send their status before connections close.
    service_->WaitForStreams(absl::Now() + absl::Seconds(5));
  }
  server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  Log(LogLevel::kInfo, "stopped");
}

void QuantdServer::Wait() { server_->Wait(); }

}  // namespace quantd

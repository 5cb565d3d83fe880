#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "prometheus/exposer.h"
#include "server/log.h"

namespace quantd {

constexpr char kReadinessService[] = "quantd.v1.Quantizer";

absl::StatusOr<std::unique_ptr<QuantdServer>> QuantdServer::Start(
    const ServerOptions& options) {
  std::unique_ptr<QuantdServer> s(new QuantdServer());
  s->metrics_ = std::make_unique<ServerMetrics>();
  s->service_ = std::make_unique<QuantizerService>(options.service, s->metrics_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &s->grpc_port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.SetMaxSendMessageSize(options.max_receive_message_bytes);
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
      s->server_->Shutdown();
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
  if (shut_down_) return;
  shut_down_ = true;
  Log(LogLevel::kInfo, "draining", {{"drain_seconds", absl::ToDoubleSeconds(drain)}});
  server_->GetHealthCheckService()->SetServingStatus(kReadinessService, false);
  service_->StartDraining();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + drain));
  Log(LogLevel::kInfo, "stopped");
}

void QuantdServer::Wait() { server_->Wait(); }

}  // namespace quantd

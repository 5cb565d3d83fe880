// quantd: the quantization server. `quantd --help` lists every flag with its
// default. SIGTERM or SIGINT drain the server (readiness NOT_SERVING, new
// streams refused, running streams get --drain_seconds) and exit 0.
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <algorithm>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu.h"
#include "kernels/version.h"
#include "server/log.h"
#include "server/server.h"
#include "server/token_file.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "gRPC listen address (host:port; port 0 picks a free port)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9090",
          "Prometheus /metrics listen address; empty disables it");
ABSL_FLAG(int32_t, workers, 0,
          "Worker threads that quantize; 0 means one per CPU core");
ABSL_FLAG(int64_t, memory_budget_bytes, int64_t{4} << 30,
          "Bytes all tensors in flight may hold together (input, f32 copy, "
          "outputs); a tensor over it gets RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_tensor_bytes, int64_t{2} << 30,
          "Largest tensor accepted, in input bytes");
ABSL_FLAG(int64_t, max_queue_jobs, 256,
          "Tensors that may wait for a worker; more gets RESOURCE_EXHAUSTED");
ABSL_FLAG(double, drain_seconds, 30,
          "On SIGTERM, how long running streams may take before they are "
          "cancelled");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(int32_t, max_pending_tensors_per_stream, 4,
          "Tensors of one stream received but not yet answered; at the limit "
          "the stream stops reading (backpressure)");
ABSL_FLAG(int32_t, max_message_bytes, 4 << 20,
          "Largest gRPC message received or sent, in bytes (a 1 MiB chunk "
          "plus framing fits the default)");
ABSL_FLAG(int32_t, max_concurrent_streams, 64,
          "Concurrent streams per client connection");
ABSL_FLAG(int32_t, keepalive_time_seconds, 60,
          "Ping an idle connection after this many seconds");
ABSL_FLAG(int32_t, keepalive_timeout_seconds, 20,
          "Drop a connection whose keepalive ping is unanswered this long");
ABSL_FLAG(int32_t, max_connection_age_seconds, 0,
          "Close connections after this age so clients rebalance over new "
          "replicas; 0 means never");
ABSL_FLAG(int32_t, max_connection_age_grace_seconds, 30,
          "Time running streams get after max_connection_age");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain; with --tls_key_file turns TLS on");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key for --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle; when set, clients must present a certificate it "
          "signed (mutual TLS)");
ABSL_FLAG(int32_t, tls_reload_seconds, 60,
          "How often the TLS files are checked for rotation");
ABSL_FLAG(std::string, auth_token_file, "",
          "File of accepted bearer tokens, one per line ('#' starts a "
          "comment); when set, Quantizer calls need 'authorization: Bearer "
          "<token>'. Health and reflection stay open");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "quantization as a service.\n"
      "Usage: quantd [--listen=0.0.0.0:50051] [--metrics_listen=0.0.0.0:9090] "
      "[--workers=N] [--memory_budget_bytes=B] [--max_tensor_bytes=B]");
  absl::FlagsUsageConfig usage_config;
  usage_config.version_string = [] {
    return std::string("quantd ") + QUANTD_VERSION + " (" + QUANTD_GIT_REV + ")\n";
  };
  // --help lists this file's flags (absl's default looks for quantd.cc).
  usage_config.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "server/main.cc");
  };
  absl::SetFlagsUsageConfig(usage_config);
  absl::ParseCommandLine(argc, argv);

  const std::string level = absl::GetFlag(FLAGS_log_level);
  quantd::SetMinLogLevel(level == "debug"     ? quantd::LogLevel::kDebug
                         : level == "warning" ? quantd::LogLevel::kWarning
                         : level == "error"   ? quantd::LogLevel::kError
                                              : quantd::LogLevel::kInfo);

  // Signals are taken synchronously by this thread; block them before any
  // other thread exists so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  quantd::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  int workers = absl::GetFlag(FLAGS_workers);
  if (workers <= 0) {
    workers = static_cast<int>(std::thread::hardware_concurrency());
    if (workers <= 0) workers = 1;
  }
  options.service.workers = workers;
  options.service.memory_budget_bytes = absl::GetFlag(FLAGS_memory_budget_bytes);
  options.service.max_queue_jobs = absl::GetFlag(FLAGS_max_queue_jobs);
  options.service.limits.max_tensor_bytes = absl::GetFlag(FLAGS_max_tensor_bytes);
  options.service.max_pending_tensors_per_stream =
      std::max(1, absl::GetFlag(FLAGS_max_pending_tensors_per_stream));
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.keepalive_time_seconds = absl::GetFlag(FLAGS_keepalive_time_seconds);
  options.keepalive_timeout_seconds = absl::GetFlag(FLAGS_keepalive_timeout_seconds);
  options.max_connection_age_seconds = absl::GetFlag(FLAGS_max_connection_age_seconds);
  options.max_connection_age_grace_seconds =
      absl::GetFlag(FLAGS_max_connection_age_grace_seconds);
  options.tls.cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.tls.key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  options.tls.reload_seconds = absl::GetFlag(FLAGS_tls_reload_seconds);
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file); !path.empty()) {
    absl::StatusOr<std::vector<std::string>> tokens = quantd::ReadTokenFile(path);
    if (!tokens.ok()) {
      quantd::Log(quantd::LogLevel::kError, "cannot start",
                  {{"error", tokens.status().ToString()}});
      return 1;
    }
    options.service.auth_tokens = *std::move(tokens);
  }

  quantd::Log(quantd::LogLevel::kInfo, "starting",
              {{"version", QUANTD_VERSION},
               {"revision", QUANTD_GIT_REV},
               {"kernel_isa", std::string(quantd::IsaName(quantd::DetectedIsa()))}});
  absl::StatusOr<std::unique_ptr<quantd::QuantdServer>> server =
      quantd::QuantdServer::Start(options);
  if (!server.ok()) {
    quantd::Log(quantd::LogLevel::kError, "cannot start",
                {{"error", server.status().ToString()}});
    return 1;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  quantd::Log(quantd::LogLevel::kInfo, "signal",
              {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_drain_seconds)));
  server->reset();
  return 0;
}

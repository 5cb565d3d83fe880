#include "server/server_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

#include "kernels/version.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace quantd {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

const Histogram::BucketBoundaries& SecondsBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
      0.5,    1,     2.5,    5,     10,   30,    60,   120, 300};
  return *b;
}

// process_* metrics from /proc/self, as the Prometheus client libraries of
// other languages export them.
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    auto gauge = [&out](const char* name, const char* help, double v,
                        prometheus::MetricType type = prometheus::MetricType::Gauge) {
      prometheus::MetricFamily f;
      f.name = name;
      f.help = help;
      f.type = type;
      prometheus::ClientMetric m;
      if (type == prometheus::MetricType::Counter) {
        m.counter.value = v;
      } else {
        m.gauge.value = v;
      }
      f.metric.push_back(m);
      out.push_back(std::move(f));
    };
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    std::ifstream stat("/proc/self/stat");
    std::string content((std::istreambuf_iterator<char>(stat)),
                        std::istreambuf_iterator<char>());
    // Fields after the parenthesised command name, which may hold spaces.
    const size_t close = content.rfind(')');
    if (close != std::string::npos) {
      std::istringstream fields(content.substr(close + 2));
      std::vector<std::string> f;
      std::string s;
      while (fields >> s) f.push_back(s);
      // f[0] is field 3 (state); utime=14, stime=15, starttime=22, vsize=23,
      // rss=24 in proc(5)'s numbering.
      if (f.size() > 21) {
        const double utime = std::stod(f[11]);
        const double stime = std::stod(f[12]);
        gauge("process_cpu_seconds_total",
              "Total user and system CPU time spent in seconds.",
              (utime + stime) / ticks, prometheus::MetricType::Counter);
        gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
              std::stod(f[20]));
        gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
              std::stod(f[21]) * page);
        std::ifstream uptime_file("/proc/uptime");
        double uptime = 0;
        uptime_file >> uptime;
        const double now = static_cast<double>(::time(nullptr));
        gauge("process_start_time_seconds",
              "Start time of the process since unix epoch in seconds.",
              std::floor(now - uptime + std::stod(f[19]) / ticks));
      }
    }
    double fds = 0;
    if (DIR* dir = opendir("/proc/self/fd")) {
      while (readdir(dir) != nullptr) ++fds;
      closedir(dir);
      fds -= 2;  // "." and ".."
    }
    gauge("process_open_fds", "Number of open file descriptors.", fds);
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
      gauge("process_max_fds", "Maximum number of open file descriptors.",
            static_cast<double>(lim.rlim_cur));
    }
    return out;
  }
};

}  // namespace

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  started_ = &BuildCounter()
                  .Name("grpc_server_started_total")
                  .Help("RPCs started on the server.")
                  .Register(r);
  handled_ = &BuildCounter()
                  .Name("grpc_server_handled_total")
                  .Help("RPCs completed on the server, by status code.")
                  .Register(r);
  handling_seconds_ = &BuildHistogram()
                           .Name("grpc_server_handling_seconds")
                           .Help("RPC duration until the status was sent.")
                           .Register(r);
  jobs_ = &BuildCounter()
               .Name("quantd_jobs_total")
               .Help("Tensors quantized, by scheme format and outcome.")
               .Register(r);
  job_duration_ = &BuildHistogram()
                       .Name("quantd_job_duration_seconds")
                       .Help("Worker time per tensor (convert, quantize, "
                             "dequantize, metrics).")
                       .Register(r);
  sqnr_ = &BuildHistogram()
               .Name("quantd_quantization_sqnr_db")
               .Help("Signal-to-quantization-noise ratio per tensor, in dB.")
               .Register(r);
  queue_wait_ = &BuildHistogram()
                     .Name("quantd_queue_wait_seconds")
                     .Help("Time a tensor waited for a worker.")
                     .Register(r)
                     .Add({}, SecondsBuckets());
  queue_depth_ = &BuildGauge()
                      .Name("quantd_queue_depth")
                      .Help("Tensors waiting for a worker.")
                      .Register(r)
                      .Add({});
  workers_busy_ = &BuildGauge()
                       .Name("quantd_workers_busy")
                       .Help("Workers running a job.")
                       .Register(r)
                       .Add({});
  memory_reserved_ = &BuildGauge()
                          .Name("quantd_memory_reserved_bytes")
                          .Help("Bytes reserved from the memory budget by "
                                "tensors in flight.")
                          .Register(r)
                          .Add({});
  memory_budget_ = &BuildGauge()
                        .Name("quantd_memory_budget_bytes")
                        .Help("The memory budget for tensors in flight "
                              "(--memory_budget_bytes).")
                        .Register(r)
                        .Add({});
  received_bytes_ = &BuildCounter()
                         .Name("quantd_received_bytes_total")
                         .Help("Tensor bytes received.")
                         .Register(r)
                         .Add({});
  sent_bytes_ = &BuildCounter()
                     .Name("quantd_sent_bytes_total")
                     .Help("Shard bytes sent.")
                     .Register(r)
                     .Add({});
  streams_active_ = &BuildGauge()
                         .Name("quantd_streams_active")
                         .Help("Quantize streams open.")
                         .Register(r)
                         .Add({});
  BuildGauge()
      .Name("quantd_build_info")
      .Help("Build information; always 1.")
      .Register(r)
      .Add({{"version", QUANTD_VERSION}, {"revision", QUANTD_GIT_REV}})
      .Set(1);
  process_collector_ = std::make_shared<ProcessCollector>();
}

void ServerMetrics::RpcStarted(absl::string_view method, absl::string_view type) {
  started_
      ->Add({{"grpc_service", "quantd.v1.Quantizer"},
             {"grpc_method", std::string(method)},
             {"grpc_type", std::string(type)}})
      .Increment();
}

void ServerMetrics::RpcHandled(absl::string_view method, absl::string_view type,
                               absl::string_view code, double seconds) {
  handled_
      ->Add({{"grpc_service", "quantd.v1.Quantizer"},
             {"grpc_method", std::string(method)},
             {"grpc_type", std::string(type)},
             {"grpc_code", std::string(code)}})
      .Increment();
  handling_seconds_
      ->Add({{"grpc_service", "quantd.v1.Quantizer"},
             {"grpc_method", std::string(method)},
             {"grpc_type", std::string(type)}},
            SecondsBuckets())
      .Observe(seconds);
}

void ServerMetrics::JobDone(absl::string_view scheme, absl::string_view outcome,
                            double seconds, double sqnr_db) {
  jobs_->Add({{"scheme", std::string(scheme)}, {"outcome", std::string(outcome)}})
      .Increment();
  if (outcome != "ok") return;
  job_duration_->Add({{"scheme", std::string(scheme)}}, SecondsBuckets())
      .Observe(seconds);
  static const Histogram::BucketBoundaries kSqnrBuckets = {
      0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 80};
  // An exact reconstruction has infinite SQNR: it lands in +Inf.
  sqnr_->Add({{"scheme", std::string(scheme)}}, kSqnrBuckets)
      .Observe(std::isfinite(sqnr_db) ? sqnr_db : 1e9);
}

}  // namespace quantd

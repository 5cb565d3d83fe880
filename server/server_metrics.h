// The server's Prometheus metrics (names, units and labels of DESIGN.md §6),
// registered on one registry that the metrics HTTP endpoint serves. Labels
// are low-cardinality: gRPC code and method, scheme format, outcome; never a
// tensor name or a job id.
//
// Thread-safe: prometheus-cpp metrics are atomic.
#ifndef QUANTD_SERVER_SERVER_METRICS_H_
#define QUANTD_SERVER_SERVER_METRICS_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace quantd {

class ServerMetrics {
 public:
  ServerMetrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  // process_* metrics; register beside registry() on the exposer.
  std::shared_ptr<prometheus::Collectable> process_collector() const {
    return process_collector_;
  }

  void RpcStarted(absl::string_view method, absl::string_view type);
  void RpcHandled(absl::string_view method, absl::string_view type,
                  absl::string_view code, double seconds);
  // `scheme` is the format name ("int4"); outcome "ok" or a lower-case code.
  void JobDone(absl::string_view scheme, absl::string_view outcome,
               double seconds, double sqnr_db);
  void QueueWait(double seconds) { queue_wait_->Observe(seconds); }
  void SetQueueDepth(double v) { queue_depth_->Set(v); }
  void SetWorkersBusy(double v) { workers_busy_->Set(v); }
  void SetMemoryReserved(double v) { memory_reserved_->Set(v); }
  // The configured --memory_budget_bytes; set once at start.
  void SetMemoryBudget(double v) { memory_budget_->Set(v); }
  void AddReceivedBytes(double v) { received_bytes_->Increment(v); }
  void AddSentBytes(double v) { sent_bytes_->Increment(v); }
  void SetStreamsActive(double v) { streams_active_->Set(v); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> process_collector_;
  prometheus::Family<prometheus::Counter>* started_;
  prometheus::Family<prometheus::Counter>* handled_;
  prometheus::Family<prometheus::Histogram>* handling_seconds_;
  prometheus::Family<prometheus::Counter>* jobs_;
  prometheus::Family<prometheus::Histogram>* job_duration_;
  prometheus::Family<prometheus::Histogram>* sqnr_;
  prometheus::Histogram* queue_wait_;
  prometheus::Gauge* queue_depth_;
  prometheus::Gauge* workers_busy_;
  prometheus::Gauge* memory_reserved_;
  prometheus::Gauge* memory_budget_;
  prometheus::Counter* received_bytes_;
  prometheus::Counter* sent_bytes_;
  prometheus::Gauge* streams_active_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_SERVER_METRICS_H_

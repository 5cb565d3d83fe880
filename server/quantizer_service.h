// The quantd.v1.Quantizer service on gRPC's callback API. A thin layer: the
// Quantize reactor parses requests with StreamAssembler, reserves memory
// from the shared MemoryBudget, submits complete tensors to the WorkerPool
// and streams each finished tensor back through a ShardWriter. Reactions
// never block on work: they only take a short lock.
//
// Thread-safe. Must outlive the grpc::Server it is registered on; destroy
// it after the server has shut down (it then finishes queued jobs).
#ifndef QUANTD_SERVER_QUANTIZER_SERVICE_H_
#define QUANTD_SERVER_QUANTIZER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "quantd/v1/quantizer.grpc.pb.h"
#include "server/assembler.h"
#include "server/memory_budget.h"
#include "server/server_metrics.h"
#include "server/worker_pool.h"

namespace quantd {

struct ServiceOptions {
  AssemblerLimits limits;
  int workers = 1;
  int64_t memory_budget_bytes = int64_t{4} << 30;
  int64_t max_queue_jobs = 256;
};

class QuantizerService final : public v1::Quantizer::CallbackService {
 public:
  // `metrics` must outlive the service.
  QuantizerService(const ServiceOptions& options, ServerMetrics* metrics);
  ~QuantizerService() override;

  grpc::ServerBidiReactor<v1::QuantizeRequest, v1::QuantizeResponse>* Quantize(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetServerInfo(
      grpc::CallbackServerContext* context,
      const v1::GetServerInfoRequest* request, v1::ServerInfo* info) override;

  // New Quantize streams are refused with UNAVAILABLE from now on.
  void StartDraining() { draining_.store(true); }

  const ServiceOptions& options() const { return options_; }
  MemoryBudget& budget() { return budget_; }
  WorkerPool& pool() { return *pool_; }
  ServerMetrics& metrics() { return *metrics_; }
  bool draining() const { return draining_.load(); }

 private:
  const ServiceOptions options_;
  ServerMetrics* const metrics_;
  MemoryBudget budget_;
  std::unique_ptr<WorkerPool> pool_;
  std::atomic<bool> draining_{false};
};

}  // namespace quantd

#endif  // QUANTD_SERVER_QUANTIZER_SERVICE_H_

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
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

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
  // Tensors of one stream received but not yet fully answered. At the
  // limit the stream stops reading until a tensor's responses are written,
  // so a client that does not read gets backpressure (HTTP/2 flow control)
  // instead of growing buffers. Default: 4.
  int max_pending_tensors_per_stream = 4;
  // Bearer tokens accepted on the Quantizer service ("authorization: Bearer
  // <token>"); empty disables authentication. Health and reflection stay
  // open. Compared in constant time.
  std::vector<std::string> auth_tokens;
};

// A running Quantize stream as the service sees it, so shutdown can end the
// streams still running when the drain deadline passes.
class StreamHandle {
 public:
  virtual ~StreamHandle() = default;
  // Ends the stream with `status` as soon as no write is in flight; its
  // running jobs stop between kernel steps and free their memory.
  virtual void Abort(const absl::Status& status) = 0;
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
  // Blocks until no Quantize stream is running or `deadline` passes;
  // returns whether none is running.
  bool WaitForStreams(absl::Time deadline);
  // Aborts every running stream with `status`.
  void AbortAll(const absl::Status& status);
  int64_t active_streams() const;

  // OK if the call carries an accepted token (or auth is off);
  // UNAUTHENTICATED without a bearer token, PERMISSION_DENIED with a wrong
  // one.
  absl::Status Authorize(const grpc::CallbackServerContext& context) const;

  // Called by streams on start and end.
  void Register(StreamHandle* stream);
  void Unregister(StreamHandle* stream);

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
  mutable absl::Mutex streams_mu_;
  absl::flat_hash_set<StreamHandle*> streams_ ABSL_GUARDED_BY(streams_mu_);
};

}  // namespace quantd

#endif  // QUANTD_SERVER_QUANTIZER_SERVICE_H_

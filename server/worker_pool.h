// A fixed pool of worker threads over a bounded FIFO job queue. Reactors
// enqueue; workers compute. Submit never blocks: a full queue is
// RESOURCE_EXHAUSTED naming max_queue_jobs.
//
//   WorkerPool pool({.workers = 4, .max_queue_jobs = 64});
//   absl::Status s = pool.Submit([](absl::Duration queue_wait) { ... });
//
// Thread-safe. The destructor stops accepting, runs every job already queued
// and joins the workers.
//
// Synchronization is std::mutex + std::condition_variable rather than
// absl::Mutex so that ThreadSanitizer, which intercepts pthreads, sees every
// hand-off (the system's Abseil is not built with TSan instrumentation).
#ifndef QUANTD_SERVER_WORKER_POOL_H_
#define QUANTD_SERVER_WORKER_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace quantd {

class WorkerPool {
 public:
  // A job receives how long it waited in the queue.
  using Job = std::function<void(absl::Duration queue_wait)>;

  struct Options {
    int workers = 1;               // >= 1
    int64_t max_queue_jobs = 256;  // queued (not yet running) jobs, >= 1
    // Called with (queue depth, busy workers) after every change; must not
    // call back into the pool.
    std::function<void(int64_t, int64_t)> on_change;
  };

  explicit WorkerPool(Options options);
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  ~WorkerPool();

  // Queues `job`. RESOURCE_EXHAUSTED if max_queue_jobs are already waiting,
  // UNAVAILABLE after Stop().
  absl::Status Submit(Job job);

  // Stops accepting; queued jobs still run. Idempotent.
  void Stop();

  int workers() const { return static_cast<int>(threads_.size()); }
  int64_t queue_depth() const;
  int64_t busy_workers() const;

 private:
  struct Entry {
    Job job;
    absl::Time enqueued;
  };
  void WorkerLoop();
  void NotifyLocked();  // with mu_ held

  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable work_;  // queue_ non-empty or stopping_
  // Guarded by mu_:
  std::deque<Entry> queue_;
  int64_t busy_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_WORKER_POOL_H_

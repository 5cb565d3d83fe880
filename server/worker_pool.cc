#include "server/worker_pool.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace quantd {

WorkerPool::WorkerPool(Options options) : options_(std::move(options)) {
  const int n = options_.workers < 1 ? 1 : options_.workers;
  threads_.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

WorkerPool::~WorkerPool() {
  Stop();
  for (std::thread& t : threads_) t.join();
}

void WorkerPool::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_.notify_all();
}

absl::Status WorkerPool::Submit(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("worker pool is stopping");
    if (static_cast<int64_t>(queue_.size()) >= options_.max_queue_jobs) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job queue full: max_queue_jobs=", options_.max_queue_jobs));
    }
    queue_.push_back(Entry{std::move(job), absl::Now()});
    NotifyLocked();
  }
  work_.notify_one();
  return absl::OkStatus();
}

int64_t WorkerPool::queue_depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

int64_t WorkerPool::busy_workers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_;
}

void WorkerPool::NotifyLocked() {
  if (options_.on_change) {
    options_.on_change(static_cast<int64_t>(queue_.size()), busy_);
  }
}

void WorkerPool::WorkerLoop() {
  while (true) {
    Entry entry;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [this] { return !queue_.empty() || stopping_; });
      if (queue_.empty()) return;  // stopping and drained
      entry = std::move(queue_.front());
      queue_.pop_front();
      ++busy_;
      NotifyLocked();
    }
    entry.job(absl::Now() - entry.enqueued);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --busy_;
      NotifyLocked();
    }
  }
}

}  // namespace quantd

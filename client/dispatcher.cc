#include "client/dispatcher.h"

#include <algorithm>
#include <deque>
#include <iterator>
#include <optional>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace quantd {

bool IsRetryableCode(absl::StatusCode code) {
  return std::ranges::find(kRetryableCodes, code) != std::end(kRetryableCodes);
}

namespace {

constexpr int kNoServer = -1;

// The state all streams share: the queues, each tensor's attempts, and which
// servers are down.
class Dispatcher {
 public:
  Dispatcher(const DispatchOptions& options,
             absl::Span<const DispatchServer> servers,
             const std::vector<TensorRequest>& requests,
             const DispatchReplyFn& on_reply,
             const DispatchFailureFn& on_failure)
      : options_(options),
        servers_(servers),
        requests_(requests),
        on_reply_(on_reply),
        on_failure_(on_failure),
        attempts_(requests.size(), 0),
        last_failed_server_(requests.size(), kNoServer),
        down_until_(servers.size(), absl::InfinitePast()),
        server_failures_(servers.size(), 0),
        dead_(servers.size(), false) {
    for (size_t i = 0; i < requests_.size(); ++i) {
      by_name_[requests_[i].name] = i;
    }
    std::vector<size_t> order(requests_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const size_t sa = requests_[a].data.size();
      const size_t sb = requests_[b].data.size();
      if (sa != sb) return sa > sb;
      return requests_[a].name < requests_[b].name;
    });
    absl::MutexLock lock(&mu_);
    normal_.assign(order.begin(), order.end());
    outstanding_ = static_cast<int64_t>(requests_.size());
  }

  void Run() {
    std::vector<std::thread> threads;
    for (size_t s = 0; s < servers_.size(); ++s) {
      for (int k = 0; k < servers_[s].streams; ++k) {
        threads.emplace_back([this, s] { Stream(static_cast<int>(s)); });
      }
    }
    for (std::thread& t : threads) t.join();
  }

 private:
  // What a stream takes next.
  struct Take {
    bool done = false;
    std::optional<size_t> solo;  // a re-send, alone on its stream
    int solo_attempts = 0;
  };

  // One stream's loop on server `s`: runs jobs until every tensor is settled.
  void Stream(int s) {
    const DispatchServer& server = servers_[static_cast<size_t>(s)];
    while (true) {
      const Take take = Next(s);
      if (take.done) return;
      if (take.solo) SleepFor(Backoff(take.solo_attempts));

      JobConfig config = options_.job;
      config.chunk_bytes = server.chunk_bytes;
      if (take.solo) config.max_in_flight_tensors = 1;
      bool solo_taken = false;
      auto source = [&]() -> std::optional<TensorRequest> {
        size_t next;
        {
          absl::MutexLock lock(&mu_);
          if (take.solo) {
            if (solo_taken) return std::nullopt;
            solo_taken = true;
            next = *take.solo;
          } else {
            if (normal_.empty()) return std::nullopt;
            next = normal_.front();
            normal_.pop_front();
          }
          ++attempts_[next];
        }
        return requests_[next];
      };
      bool answered_any = false;
      auto on_result = [&](const std::string& name,
                           absl::StatusOr<TensorReply> reply) {
        answered_any = true;
        auto it = by_name_.find(name);
        if (it == by_name_.end()) return;  // RunJob reports only ours
        if (reply.ok()) {
          Answer(it->second, *std::move(reply), s);
        } else {
          Reject(it->second, reply.status(), /*alone=*/false, s);
        }
      };
      std::vector<std::string> unanswered;
      const absl::Status status =
          server.client->RunJob(config, source, on_result, &unanswered);
      int failures = 0;
      {
        absl::MutexLock lock(&mu_);
        const size_t i = static_cast<size_t>(s);
        if (status.ok() || answered_any) {
          server_failures_[i] = 0;
        } else if (!NamesOneOf(status, unanswered) &&
                   (unanswered.empty() ||
                    status.code() == absl::StatusCode::kUnavailable)) {
          // The server's fault, not a tensor's: it could not open a
          // stream, or it went away.
          failures = ++server_failures_[i];
          if (status.code() == absl::StatusCode::kUnavailable) {
            CoolDown(i, failures);
          }
          if (failures >= options_.max_attempts) {
            dead_[i] = true;
            dead_status_ = absl::Status(
                status.code(), absl::StrCat(server.name, ": ", status.message(),
                                            " (no server reachable after ",
                                            failures, " attempts)"));
          }
        }
        if (take.solo && !solo_taken) {
          // The re-send never left: it goes back, not charged.
          retry_.push_front(*take.solo);
          ++retry_pushes_;
        }
      }
      if (status.ok()) continue;
      if (unanswered.empty()) {
        if (status.code() != absl::StatusCode::kUnavailable && failures > 0) {
          SleepFor(Backoff(failures));
        }
        continue;
      }
      // Which unanswered tensor does a tensor-specific error name?
      std::vector<size_t> named;
      for (const std::string& name : unanswered) {
        if (absl::StrContains(status.message(), name)) {
          named.push_back(by_name_.at(name));
        }
      }
      for (const std::string& name : unanswered) {
        const size_t index = by_name_.at(name);
        const bool alone = unanswered.size() == 1;
        if (!IsRetryableCode(status.code()) && !alone && named.size() == 1 &&
            named.front() != index) {
          // An innocent neighbour of the bad tensor: send it again, free.
          absl::MutexLock lock(&mu_);
          --attempts_[index];
          normal_.push_front(index);
          continue;
        }
        Reject(index,
               absl::Status(status.code(),
                            absl::StrCat(server.name, ": ", status.message())),
               alone || named.size() == 1, s);
      }
    }
  }

  // Blocks until there is work for server `s` (and it is not down), or all
  // tensors are settled.
  Take Next(int s) {
    std::vector<size_t> orphans;
    absl::Status orphan_status;
    Take take = NextLocked(s, orphans, orphan_status);
    for (size_t index : orphans) {
      DispatchInfo info;
      info.server = servers_[static_cast<size_t>(s)].name;
      {
        absl::MutexLock lock(&mu_);
        info.attempts = attempts_[index];
      }
      on_failure_(index, orphan_status, info);
      Settle();
    }
    return take;
  }

  Take NextLocked(int s, std::vector<size_t>& orphans,
                  absl::Status& orphan_status) {
    absl::MutexLock lock(&mu_);
    while (true) {
      if (outstanding_ == 0) return Take{.done = true};
      if (dead_[static_cast<size_t>(s)]) {
        // This server is given up on. When every server is, nothing can
        // send the tensors still queued: they fail.
        if (std::all_of(dead_.begin(), dead_.end(), [](bool d) { return d; })) {
          orphans.assign(normal_.begin(), normal_.end());
          orphans.insert(orphans.end(), retry_.begin(), retry_.end());
          normal_.clear();
          retry_.clear();
          orphan_status = dead_status_;
        }
        return Take{.done = true};
      }
      const absl::Time now = absl::Now();
      const absl::Time down_until = down_until_[static_cast<size_t>(s)];
      if (down_until > now) {
        // Wait out the cooldown (or the end of the run).
        mu_.AwaitWithDeadline(absl::Condition(this, &Dispatcher::AllSettled),
                              down_until);
        continue;
      }
      // A re-send that failed elsewhere first; one that failed here only if
      // no other server is up to take it.
      const bool others_up = OtherServerUp(s, now);
      for (auto it = retry_.begin(); it != retry_.end(); ++it) {
        if (last_failed_server_[*it] != s || !others_up) {
          Take take;
          take.solo = *it;
          take.solo_attempts = attempts_[*it];
          retry_.erase(it);
          return take;
        }
      }
      if (!normal_.empty()) return Take{};
      // Nothing for this server now: wait for a change (a re-send queued, a
      // tensor settled) or re-check in a while (another server went down).
      const size_t seen = retry_pushes_;
      auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return outstanding_ == 0 || !normal_.empty() || retry_pushes_ != seen;
      };
      mu_.AwaitWithTimeout(absl::Condition(&changed), absl::Milliseconds(100));
    }
  }

  bool AllSettled() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return outstanding_ == 0;
  }

  bool OtherServerUp(int s, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (size_t t = 0; t < servers_.size(); ++t) {
      if (static_cast<int>(t) != s && !dead_[t] && down_until_[t] <= now) {
        return true;
      }
    }
    return false;
  }

  static bool NamesOneOf(const absl::Status& status,
                         const std::vector<std::string>& names) {
    for (const std::string& name : names) {
      if (absl::StrContains(status.message(), name)) return true;
    }
    return false;
  }

  // Marks server i down for a cooldown that grows with its consecutive
  // failures.
  void CoolDown(size_t i, int failures) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::Duration cooldown = options_.server_cooldown;
    for (int k = 1; k < failures && cooldown < options_.max_server_cooldown;
         ++k) {
      cooldown *= 2;
    }
    cooldown = std::min(cooldown, options_.max_server_cooldown);
    const absl::Time until = absl::Now() + Jitter(cooldown);
    down_until_[i] = std::max(down_until_[i], until);
  }

  absl::Duration Backoff(int attempts) {
    absl::Duration backoff = options_.base_backoff;
    for (int k = 0; k < attempts && backoff < options_.max_backoff; ++k) {
      backoff *= 2;
    }
    return Jitter(std::min(backoff, options_.max_backoff));
  }

  // A uniform factor in [0.5, 1]: retries of many clients spread out.
  absl::Duration Jitter(absl::Duration d) {
    absl::MutexLock lock(&random_mu_);
    return d * absl::Uniform(random_, 0.5, 1.0);
  }

  static void SleepFor(absl::Duration d) { absl::SleepFor(d); }

  // A failed send of tensor `index` on server `s`. `alone`: the failure is
  // known to be this tensor's (alone in its stream, or the error names it).
  void Reject(size_t index, const absl::Status& status, bool alone, int s) {
    DispatchInfo info;
    info.server = servers_[static_cast<size_t>(s)].name;
    absl::Status final_status;
    {
      absl::MutexLock lock(&mu_);
      last_failed_server_[index] = s;
      info.attempts = attempts_[index];
      if (alone && !IsRetryableCode(status.code())) {
        final_status = status;
      } else if (attempts_[index] >= options_.max_attempts) {
        final_status = absl::Status(
            status.code(), absl::StrCat(status.message(), " (after ",
                                        attempts_[index], " attempts)"));
      } else {
        retry_.push_back(index);
        ++retry_pushes_;
        return;
      }
    }
    on_failure_(index, final_status, info);
    Settle();
  }

  void Answer(size_t index, TensorReply reply, int s) {
    DispatchInfo info;
    info.server = servers_[static_cast<size_t>(s)].name;
    {
      absl::MutexLock lock(&mu_);
      info.attempts = attempts_[index];
      info.moved = last_failed_server_[index] != kNoServer &&
                   last_failed_server_[index] != s;
    }
    absl::Status stored = on_reply_(index, std::move(reply), info);
    if (!stored.ok()) on_failure_(index, stored, info);
    Settle();
  }

  void Settle() {
    absl::MutexLock lock(&mu_);
    --outstanding_;
  }

  const DispatchOptions& options_;
  const absl::Span<const DispatchServer> servers_;
  const std::vector<TensorRequest>& requests_;
  const DispatchReplyFn& on_reply_;
  const DispatchFailureFn& on_failure_;
  absl::flat_hash_map<std::string, size_t> by_name_;  // fixed after ctor

  absl::Mutex mu_;
  std::deque<size_t> normal_ ABSL_GUARDED_BY(mu_);  // first sends
  std::deque<size_t> retry_ ABSL_GUARDED_BY(mu_);   // re-sends, one per job
  // Pushes onto retry_ so far; a waiting stream wakes when it changes.
  size_t retry_pushes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> attempts_ ABSL_GUARDED_BY(mu_);
  std::vector<int> last_failed_server_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Time> down_until_ ABSL_GUARDED_BY(mu_);
  // Consecutive failed streams per server; at max_attempts it is dead.
  std::vector<int> server_failures_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> dead_ ABSL_GUARDED_BY(mu_);
  absl::Status dead_status_ ABSL_GUARDED_BY(mu_);  // the last server's error
  int64_t outstanding_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex random_mu_;
  absl::BitGen random_ ABSL_GUARDED_BY(random_mu_);
};

}  // namespace

void Dispatch(const DispatchOptions& options,
              absl::Span<const DispatchServer> servers,
              const std::vector<TensorRequest>& requests,
              const DispatchReplyFn& on_reply,
              const DispatchFailureFn& on_failure) {
  if (requests.empty()) return;
  Dispatcher dispatcher(options, servers, requests, on_reply, on_failure);
  dispatcher.Run();
}

}  // namespace quantd

#include "server/worker_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace quantd {
namespace {

TEST(WorkerPoolTest, RunsEveryJob) {
  std::atomic<int> ran{0};
  {
    WorkerPool pool({.workers = 3, .max_queue_jobs = 1000});
    for (int i = 0; i < 500; ++i) {
      ASSERT_TRUE(pool.Submit([&](absl::Duration) { ++ran; }).ok());
    }
  }  // the destructor drains the queue
  EXPECT_EQ(ran.load(), 500);
}

TEST(WorkerPoolTest, FullQueueIsResourceExhaustedNamingTheLimit) {
  absl::Notification release;
  absl::Notification started;
  WorkerPool pool({.workers = 1, .max_queue_jobs = 2});
  ASSERT_TRUE(pool.Submit([&](absl::Duration) {
                    started.Notify();
                    release.WaitForNotification();
                  })
                  .ok());
  started.WaitForNotification();  // the worker is busy; the queue is empty
  ASSERT_TRUE(pool.Submit([](absl::Duration) {}).ok());
  ASSERT_TRUE(pool.Submit([](absl::Duration) {}).ok());
  absl::Status s = pool.Submit([](absl::Duration) {});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("max_queue_jobs=2"), absl::string_view::npos);
  EXPECT_EQ(pool.queue_depth(), 2);
  EXPECT_EQ(pool.busy_workers(), 1);
  release.Notify();
}

TEST(WorkerPoolTest, StopRefusesNewJobsButRunsQueuedOnes) {
  std::atomic<int> ran{0};
  absl::Notification release;
  WorkerPool pool({.workers = 1, .max_queue_jobs = 10});
  ASSERT_TRUE(pool.Submit([&](absl::Duration) {
                    release.WaitForNotification();
                    ++ran;
                  })
                  .ok());
  ASSERT_TRUE(pool.Submit([&](absl::Duration) { ++ran; }).ok());
  pool.Stop();
  EXPECT_EQ(pool.Submit([](absl::Duration) {}).code(),
            absl::StatusCode::kUnavailable);
  release.Notify();
  while (ran.load() < 2) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(ran.load(), 2);
}

TEST(WorkerPoolTest, ReportsDepthAndBusyThroughCallback) {
  std::atomic<int64_t> max_busy{0};
  {
    WorkerPool pool({.workers = 2,
                     .max_queue_jobs = 100,
                     .on_change = [&](int64_t, int64_t busy) {
                       int64_t prev = max_busy.load();
                       while (busy > prev &&
                              !max_busy.compare_exchange_weak(prev, busy)) {
                       }
                     }});
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(pool.Submit([](absl::Duration) {
                        absl::SleepFor(absl::Milliseconds(1));
                      })
                      .ok());
    }
  }
  EXPECT_GE(max_busy.load(), 1);
  EXPECT_LE(max_busy.load(), 2);
}

// Many submitters at once, jobs that write plain memory, the change
// callback counting under the pool's lock, and Stop racing the submitters:
// run under ThreadSanitizer (scripts/test.sh), any missing hand-off is a
// reported race.
TEST(WorkerPoolTest, ConcurrentSubmittersStopAndDrain) {
  constexpr int kThreads = 4;
  constexpr int kJobs = 1000;
  std::vector<int> slots(kThreads * kJobs, 0);  // each written by one job
  int64_t changes = 0;                          // written with the lock held
  int64_t max_depth = 0;                        // written with the lock held
  std::atomic<int> accepted{0};
  std::atomic<int> finished{0};
  {
    WorkerPool pool({.workers = 3,
                     .max_queue_jobs = 64,
                     .on_change = [&](int64_t depth, int64_t) {
                       ++changes;
                       max_depth = std::max(max_depth, depth);
                     }});
    std::vector<std::thread> submitters;
    for (int t = 0; t < kThreads; ++t) {
      submitters.emplace_back([&, t] {
        for (int j = 0; j < kJobs; ++j) {
          int* slot = &slots[static_cast<size_t>(t * kJobs + j)];
          absl::Status s = pool.Submit([slot, &finished](absl::Duration) {
            *slot = 1;
            ++finished;
          });
          if (s.ok()) {
            ++accepted;
          } else if (s.code() == absl::StatusCode::kResourceExhausted) {
            std::this_thread::yield();  // a full queue: try the next one
          } else {
            EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
            return;
          }
        }
      });
    }
    std::thread stopper([&] {
      while (accepted.load() < kJobs) std::this_thread::yield();
      pool.Stop();
    });
    for (std::thread& t : submitters) t.join();
    stopper.join();
    // Stopped: nothing more is accepted, and what was accepted drains
    // without the destructor's help.
    EXPECT_EQ(pool.Submit([](absl::Duration) {}).code(),
              absl::StatusCode::kUnavailable);
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while ((pool.queue_depth() > 0 || pool.busy_workers() > 0) &&
           absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_EQ(pool.queue_depth(), 0);
    EXPECT_EQ(pool.busy_workers(), 0);
    EXPECT_EQ(finished.load(), accepted.load());
  }  // joins
  int ran = 0;
  for (int v : slots) ran += v;
  EXPECT_EQ(ran, accepted.load());
  EXPECT_GE(changes, 2 * static_cast<int64_t>(ran));  // dequeue + done
  EXPECT_GE(max_depth, 1);
  EXPECT_LE(max_depth, 64);  // never past max_queue_jobs
}

// With every worker held inside a job, each Submit adds exactly one to the
// depth, and on_change reports the same numbers the getters do; once the
// workers are released the pool returns to (0, 0).
TEST(WorkerPoolTest, DepthAndBusyAreExactWhileEveryWorkerIsBlocked) {
  struct Case {
    int workers;
    int64_t queued;
  };
  for (const Case c : {Case{1, 0}, Case{1, 3}, Case{2, 1}, Case{3, 5}}) {
    SCOPED_TRACE(::testing::Message()
                 << "workers " << c.workers << " queued " << c.queued);
    absl::Notification release;
    std::atomic<int> started{0};
    std::atomic<int64_t> ran{0};
    std::mutex last_mu;
    std::pair<int64_t, int64_t> last{-1, -1};  // guarded by last_mu
    auto last_change = [&] {
      std::lock_guard<std::mutex> lock(last_mu);
      return last;
    };
    WorkerPool pool({.workers = c.workers,
                     .max_queue_jobs = 8,
                     .on_change = [&](int64_t depth, int64_t busy) {
                       std::lock_guard<std::mutex> lock(last_mu);
                       last = {depth, busy};
                     }});
    for (int i = 0; i < c.workers; ++i) {
      ASSERT_TRUE(pool.Submit([&](absl::Duration) {
                        ++started;
                        release.WaitForNotification();
                        ++ran;
                      })
                      .ok());
    }
    while (started.load() < c.workers) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_EQ(pool.busy_workers(), c.workers);
    EXPECT_EQ(pool.queue_depth(), 0);
    EXPECT_EQ(last_change(), std::make_pair(int64_t{0}, int64_t{c.workers}));
    for (int64_t k = 1; k <= c.queued; ++k) {
      ASSERT_TRUE(pool.Submit([&](absl::Duration) { ++ran; }).ok());
      EXPECT_EQ(pool.queue_depth(), k);
      EXPECT_EQ(pool.busy_workers(), c.workers);
      EXPECT_EQ(last_change(), std::make_pair(k, int64_t{c.workers}));
    }
    release.Notify();
    const int64_t total = c.workers + c.queued;
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while ((ran.load() < total || pool.busy_workers() > 0) &&
           absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_EQ(ran.load(), total);
    EXPECT_EQ(pool.queue_depth(), 0);
    EXPECT_EQ(pool.busy_workers(), 0);
    EXPECT_EQ(last_change(), std::make_pair(int64_t{0}, int64_t{0}));
  }
}

}  // namespace
}  // namespace quantd

#include "server/worker_pool.h"

#include <atomic>
#include <vector>

#include "absl/synchronization/notification.h"
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
                  }).ok());
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
                  }).ok());
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
                       while (busy > prev && !max_busy.compare_exchange_weak(prev, busy)) {
                       }
                     }});
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(pool.Submit([](absl::Duration) {
                        absl::SleepFor(absl::Milliseconds(1));
                      }).ok());
    }
  }
  EXPECT_GE(max_busy.load(), 1);
  EXPECT_LE(max_busy.load(), 2);
}

}  // namespace
}  // namespace quantd

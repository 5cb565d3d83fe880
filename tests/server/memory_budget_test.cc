#include "server/memory_budget.h"

#include <atomic>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace quantd {
namespace {

TEST(MemoryBudgetTest, ReserveAndReleaseTrackTotal) {
  int64_t last_seen = -1;
  MemoryBudget budget(100, [&](int64_t v) { last_seen = v; });
  absl::StatusOr<MemoryBudget::Reservation> a = budget.Reserve(60, "tensor a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(budget.reserved_bytes(), 60);
  EXPECT_EQ(last_seen, 60);
  {
    absl::StatusOr<MemoryBudget::Reservation> b =
        budget.Reserve(40, "tensor b");
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(budget.reserved_bytes(), 100);
  }
  EXPECT_EQ(budget.reserved_bytes(), 60);
  a->Release();
  EXPECT_EQ(budget.reserved_bytes(), 0);
  EXPECT_EQ(last_seen, 0);
}

TEST(MemoryBudgetTest, OverBudgetNamesLimitAndTensor) {
  MemoryBudget budget(100);
  absl::StatusOr<MemoryBudget::Reservation> a = budget.Reserve(70, "tensor a");
  ASSERT_TRUE(a.ok());
  absl::StatusOr<MemoryBudget::Reservation> b = budget.Reserve(31, "tensor b");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(b.status().message().find("memory_budget_bytes=100"),
            absl::string_view::npos);
  EXPECT_NE(b.status().message().find("tensor b"), absl::string_view::npos);
  EXPECT_EQ(budget.reserved_bytes(), 70);  // a failed reserve takes nothing
}

TEST(MemoryBudgetTest, MovedReservationReleasesOnce) {
  MemoryBudget budget(100);
  absl::StatusOr<MemoryBudget::Reservation> a = budget.Reserve(50, "a");
  ASSERT_TRUE(a.ok());
  MemoryBudget::Reservation moved = std::move(*a);
  EXPECT_EQ(moved.bytes(), 50);
  a->Release();  // the moved-from handle holds nothing
  EXPECT_EQ(budget.reserved_bytes(), 50);
  moved = MemoryBudget::Reservation();
  EXPECT_EQ(budget.reserved_bytes(), 0);
}

TEST(MemoryBudgetTest, NegativeIsInvalid) {
  MemoryBudget budget(100);
  EXPECT_EQ(budget.Reserve(-1, "x").status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Reservations taken and returned from many threads at once never exceed
// the limit and return to zero (run under ThreadSanitizer too).
TEST(MemoryBudgetTest, ConcurrentReservationsStayWithinTheLimit) {
  std::atomic<int64_t> max_seen{0};
  MemoryBudget budget(1000, [&](int64_t now) {
    int64_t seen = max_seen.load();
    while (now > seen && !max_seen.compare_exchange_weak(seen, now)) {
    }
  });
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        absl::StatusOr<MemoryBudget::Reservation> r =
            budget.Reserve(100 + 10 * t, "tensor");
        if (!r.ok()) {
          EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
          ++refused;
        }
      }  // each reservation is returned at the end of its iteration
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(budget.reserved_bytes(), 0);
  EXPECT_LE(max_seen.load(), 1000);
  EXPECT_GT(max_seen.load(), 0);
}

}  // namespace
}  // namespace quantd

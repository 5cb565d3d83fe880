#include "server/calibration_set.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/calibration_stats.h"

namespace quantd {
namespace {

std::string Rows(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

std::vector<float> RandomRows(int64_t rows, int64_t features, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(rows * features));
  for (float& x : v) x = dist(rng);
  return v;
}

// A StreamCalibration whose pool is a queue the test runs by hand.
struct Harness {
  explicit Harness(int64_t budget_bytes = int64_t{1} << 30)
      : budget(budget_bytes),
        calibration(
            StreamCalibration::Hooks{
                [this](std::function<void()> work) {
                  jobs.push_back(std::move(work));
                  return absl::OkStatus();
                },
                [this](const absl::Status& s) { failures.push_back(s); },
                [this] { ++progress; }},
            &cancelled) {}

  void RunJobs() {
    while (!jobs.empty()) {
      std::function<void()> job = std::move(jobs.front());
      jobs.erase(jobs.begin());
      job();
    }
  }

  void Open(const CalibrationSpec& spec) {
    auto set = budget.Reserve(CalibrationSetBytes(spec), spec.name);
    ASSERT_TRUE(set.ok()) << set.status();
    auto buffer = budget.Reserve(CalibrationBufferBytes(spec), spec.name);
    ASSERT_TRUE(buffer.ok()) << buffer.status();
    calibration.Open(spec, *std::move(set), *std::move(buffer));
  }

  void Add(const CalibrationSpec& spec, std::string bytes) {
    auto r = budget.Reserve(
        CalibrationChunkBytes(spec.dtype, static_cast<int64_t>(bytes.size())),
        spec.name);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(calibration.AddChunk(std::move(bytes), *std::move(r)).ok());
  }

  MemoryBudget budget;
  std::atomic<bool> cancelled{false};
  std::vector<std::function<void()>> jobs;
  std::vector<absl::Status> failures;
  int progress = 0;
  StreamCalibration calibration;
};

TEST(CalibrationSetTest, ReservedBytesCoverWhatTheSetHolds) {
  for (int64_t features : {1, 7, 64, 300}) {
    for (bool histograms : {false, true}) {
      SCOPED_TRACE(absl::StrCat(features, " features, histograms ", histograms));
      CalibrationSpec spec{"x", CalibrationKind::kActivations, DType::kF32,
                           features, 0, histograms};
      MemoryBudget budget(int64_t{1} << 30);
      auto r = budget.Reserve(CalibrationSetBytes(spec), "x");
      ASSERT_TRUE(r.ok());
      CalibrationSet set(spec, *std::move(r));
      ASSERT_TRUE(set.AddRows(Rows(RandomRows(3, features, 1))).ok());
      ASSERT_TRUE(set.Complete({}).ok());
      const auto held = static_cast<int64_t>(
          set.accumulator().MemoryBytes() + set.gram().size() * 8 +
          set.importance().size() * 4);
      EXPECT_LE(held, CalibrationSetBytes(spec));
      // Not wildly more either: within the GEMM scratch and a few vectors.
      EXPECT_LE(CalibrationSetBytes(spec), held + 4 * features * 256 + 64 * features + 4096);
    }
  }
  for (CalibrationKind kind : {CalibrationKind::kGram, CalibrationKind::kImportance}) {
    const int64_t f = 50;
    CalibrationSpec spec{"s", kind, DType::kF32, f, 9, false};
    MemoryBudget budget(int64_t{1} << 30);
    CalibrationSet set(spec, *budget.Reserve(CalibrationSetBytes(spec), "s"));
    CalibrationPayload payload;
    if (kind == CalibrationKind::kGram) {
      payload.gram.assign(static_cast<size_t>(f * f), 0.0);
      for (int64_t i = 0; i < f; ++i) payload.gram[static_cast<size_t>(i * f + i)] = 2.0;
      EXPECT_EQ(CalibrationBufferBytes(spec), 8 * f * f);
    } else {
      payload.importance.assign(static_cast<size_t>(f), 1.5f);
      EXPECT_EQ(CalibrationBufferBytes(spec), 4 * f);
    }
    ASSERT_TRUE(set.Complete(std::move(payload)).ok());
    EXPECT_EQ(set.tokens(), 9);
    EXPECT_EQ(set.importance().size(), static_cast<size_t>(f));
    EXPECT_EQ(set.gram().size(), kind == CalibrationKind::kGram ? static_cast<size_t>(f * f) : 0u);
    EXPECT_LE(static_cast<int64_t>(set.accumulator().MemoryBytes() + set.gram().size() * 8 +
                                   set.importance().size() * 4),
              CalibrationSetBytes(spec));
  }
}

TEST(CalibrationSetTest, ChunksFoldInOrderAndTensorsWaitForTheSet) {
  Harness h;
  const int64_t f = 16;
  const CalibrationSpec spec{"x", CalibrationKind::kActivations, DType::kF32, f, 0, false};
  const std::vector<float> x = RandomRows(700, f, 7);  // > one 512-row block
  h.Open(spec);
  // Chunks of 1, 99, 600 rows; only the first submits a drain job.
  int64_t row = 0;
  for (int64_t rows : {1, 99, 600}) {
    h.Add(spec, Rows(std::vector<float>(x.begin() + row * f, x.begin() + (row + rows) * f)));
    row += rows;
  }
  EXPECT_EQ(h.calibration.queued_chunks(), 3);
  ASSERT_TRUE(h.calibration.Close({}).ok());
  EXPECT_EQ(h.jobs.size(), 1u);
  std::vector<std::shared_ptr<const CalibrationSet>> started;
  auto start = [&](std::shared_ptr<const CalibrationSet> set) {
    started.push_back(std::move(set));
    return absl::OkStatus();
  };
  ASSERT_TRUE(h.calibration.WhenComplete("x", start).ok());
  ASSERT_TRUE(h.calibration.WhenComplete("x", start).ok());
  EXPECT_TRUE(started.empty());  // waiting, not queued
  EXPECT_EQ(h.calibration.WhenComplete("y", start).code(), absl::StatusCode::kNotFound);
  h.RunJobs();
  EXPECT_TRUE(h.failures.empty());
  EXPECT_EQ(h.progress, 3);
  EXPECT_EQ(h.calibration.queued_chunks(), 0);
  ASSERT_EQ(started.size(), 2u);
  EXPECT_EQ(started[0].get(), started[1].get());
  // A complete set starts a tensor at once.
  ASSERT_TRUE(h.calibration.WhenComplete("x", start).ok());
  EXPECT_EQ(started.size(), 3u);

  // The same statistics as one accumulator over all rows at once.
  auto whole = CalibrationAccumulator::Create("x", f, CalibrationOptionsFor(spec));
  ASSERT_TRUE(whole.ok());
  ASSERT_TRUE(whole->Add(x.data(), 700, f).ok());
  auto g = whole->Gram();
  ASSERT_TRUE(g.ok());
  const CalibrationSet& set = *started[0];
  EXPECT_EQ(set.tokens(), 700);
  ASSERT_EQ(set.gram().size(), g->size());
  for (size_t i = 0; i < g->size(); ++i) ASSERT_EQ(set.gram()[i], (*g)[i]) << i;
  EXPECT_EQ(std::vector<float>(set.importance().begin(), set.importance().end()),
            *whole->Importance());

  started.clear();
  h.calibration.Abandon();
  EXPECT_EQ(h.budget.reserved_bytes(), 0);
}

TEST(CalibrationSetTest, AFailedSetFailsTheStreamAndStartsNothing) {
  Harness h;
  const CalibrationSpec spec{"bad", CalibrationKind::kActivations, DType::kF32, 4, 0, false};
  h.Open(spec);
  std::vector<float> rows(8, 1.0f);
  rows[5] = std::numeric_limits<float>::infinity();  // past the assembler
  h.Add(spec, Rows(rows));
  h.Add(spec, Rows(std::vector<float>(4, 2.0f)));
  ASSERT_TRUE(h.calibration.Close({}).ok());
  bool started = false;
  ASSERT_TRUE(h.calibration
                  .WhenComplete("bad",
                                [&](std::shared_ptr<const CalibrationSet>) {
                                  started = true;
                                  return absl::OkStatus();
                                })
                  .ok());
  h.RunJobs();
  ASSERT_EQ(h.failures.size(), 1u);
  EXPECT_EQ(h.failures[0].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(h.failures[0].message().find("calibration set 'bad'"), std::string::npos)
      << h.failures[0];
  EXPECT_FALSE(started);
  EXPECT_EQ(h.calibration.queued_chunks(), 0);
  h.calibration.Abandon();
  EXPECT_EQ(h.budget.reserved_bytes(), 0);
}

TEST(CalibrationSetTest, CancelledOrAbandonedStreamsDropQueuedWork) {
  Harness h;
  const CalibrationSpec spec{"x", CalibrationKind::kActivations, DType::kF32, 8, 0, false};
  h.Open(spec);
  h.Add(spec, Rows(RandomRows(4, 8, 1)));
  h.Add(spec, Rows(RandomRows(4, 8, 2)));
  ASSERT_TRUE(h.calibration.Close({}).ok());
  bool started = false;
  ASSERT_TRUE(h.calibration
                  .WhenComplete("x",
                                [&](std::shared_ptr<const CalibrationSet>) {
                                  started = true;
                                  return absl::OkStatus();
                                })
                  .ok());
  EXPECT_GT(h.budget.reserved_bytes(), 0);
  h.cancelled.store(true);
  h.RunJobs();  // the drain sees the flag and drops everything
  EXPECT_FALSE(started);
  EXPECT_TRUE(h.failures.empty());
  EXPECT_EQ(h.calibration.queued_chunks(), 0);
  h.calibration.Abandon();
  EXPECT_EQ(h.budget.reserved_bytes(), 0);
}

}  // namespace
}  // namespace quantd

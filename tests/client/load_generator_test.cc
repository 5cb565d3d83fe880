// RunLoad's option checks and report formatting need no server; one short
// run against a real quantd (tests/e2e/test_server.h) checks the counts a
// report adds up to.
#include "client/load_generator.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "kernels/scheme.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

// A channel that is never used: RunLoad checks its options first. (gRPC
// channels connect lazily, so nothing is dialled.)
std::shared_ptr<grpc::Channel> UnusedChannel() {
  return grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
}

TEST(LoadGeneratorTest, BadOptionsAreInvalidArgumentBeforeAnyCall) {
  struct Case {
    const char* what;
    void (*change)(LoadOptions&);
    const char* message;  // a part of the message
  };
  const Case cases[] = {
      {"no channel", [](LoadOptions& o) { o.channel = nullptr; }, "no server"},
      {"concurrency 0", [](LoadOptions& o) { o.concurrency = 0; }, ">= 1"},
      {"tensors per stream 0", [](LoadOptions& o) { o.tensors_per_stream = 0; },
       ">= 1"},
      {"in flight 0", [](LoadOptions& o) { o.max_in_flight_tensors = 0; }, ">= 1"},
      {"bad fraction < 0", [](LoadOptions& o) { o.bad_fraction = -0.01; },
       "bad fraction"},
      {"bad fraction > 1", [](LoadOptions& o) { o.bad_fraction = 1.5; },
       "bad fraction"},
      {"bad fraction NaN",
       [](LoadOptions& o) { o.bad_fraction = std::numeric_limits<double>::quiet_NaN(); },
       "bad fraction"},
      {"unknown scheme", [](LoadOptions& o) { o.scheme = "int99"; },
       "scheme \"int99\""},
      {"group does not divide the row",
       [](LoadOptions& o) {
         o.scheme = "int4_asym_g128";
         o.shape = {4, 100};
       },
       "on shape [4, 100]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    LoadOptions options;
    options.channel = UnusedChannel();
    options.duration = absl::Seconds(30);  // a run that started would show
    c.change(options);
    const absl::StatusOr<LoadReport> report = RunLoad(options);
    EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(report.status().message(), c.message))
        << report.status();
  }
}

LoadReport HandMadeReport() {
  LoadReport r;
  r.target = "q:50051";
  r.scheme = "int8";
  r.shape = {2, 3};
  r.dtype = DType::kBF16;
  r.concurrency = 4;
  r.seconds = 2.0;
  r.tensor_bytes = 12;
  r.good_sent = 10;
  r.good_ok = 9;
  r.good_failed = 1;
  r.latencies_ms = {1.0, 2.0, 3.0};
  r.p50_ms = 2.0;
  r.p90_ms = 2.8;
  r.p99_ms = 2.98;
  r.max_ms = 3.0;
  r.tensors_per_second = 4.5;
  r.gigabytes_per_second = 0.0126;
  r.bad["nan"] = {3, 2, "INVALID_ARGUMENT"};
  r.bad["deadline"] = {1, 1, "DEADLINE_EXCEEDED"};
  r.errors["UNAVAILABLE"] = 1;
  r.errors["DEADLINE_EXCEEDED (nan)"] = 1;
  r.unexpected = 1;
  return r;
}

TEST(LoadGeneratorTest, FormatLoadReportPrintsEveryCount) {
  const std::string text = FormatLoadReport(HandMadeReport());
  const char* lines[] = {
      "load: q:50051  4 streams  2.0 s  int8 on [2, 3] BF16 (0.00 MB per tensor)\n",
      "good tensors: 10 sent, 9 answered, 1 failed  4.5 tensors/s  0.013 GB/s\n",
      "latency ms:   p50 2.0  p90 2.8  p99 3.0  max 3.0  (n=3)\n",
      "bad requests: kind      sent  as expected  expected status\n",
      "              deadline     1            1  DEADLINE_EXCEEDED\n",
      "              nan          3            2  INVALID_ARGUMENT\n",
      "statuses:     DEADLINE_EXCEEDED (nan) 1, UNAVAILABLE 1\n",
      "unexpected:   1\n",
  };
  std::string want;
  for (const char* line : lines) want += line;
  EXPECT_EQ(text, want);
}

TEST(LoadGeneratorTest, FormatLoadReportLeavesOutEmptySections) {
  LoadReport r = HandMadeReport();
  for (auto& [kind, counts] : r.bad) counts.sent = 0;
  r.errors.clear();
  const std::string text = FormatLoadReport(r);
  EXPECT_FALSE(absl::StrContains(text, "bad requests:")) << text;
  EXPECT_FALSE(absl::StrContains(text, "statuses:")) << text;
  EXPECT_TRUE(absl::StrContains(text, "unexpected:   1\n")) << text;
}

TEST(LoadGeneratorTest, LoadReportToJsonHoldsEveryCount) {
  const OrderedJson j = LoadReportToJson(HandMadeReport());
  std::vector<std::string> keys;
  for (const auto& item : j.items()) keys.push_back(item.key());
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "target", "scheme", "shape", "dtype", "concurrency",
                      "seconds", "tensor_bytes", "good", "latency_ms", "bad",
                      "statuses", "unexpected"}));
  EXPECT_EQ(j["target"], "q:50051");
  EXPECT_EQ(j["shape"], OrderedJson({2, 3}));
  EXPECT_EQ(j["dtype"], "BF16");
  EXPECT_EQ(j["concurrency"], 4);
  EXPECT_EQ(j["tensor_bytes"], 12);
  EXPECT_EQ(j["good"]["sent"], 10);
  EXPECT_EQ(j["good"]["answered"], 9);
  EXPECT_EQ(j["good"]["failed"], 1);
  EXPECT_EQ(j["good"]["tensors_per_second"], 4.5);
  EXPECT_EQ(j["latency_ms"]["p90"], 2.8);
  EXPECT_EQ(j["latency_ms"]["count"], 3);
  EXPECT_EQ(j["bad"]["nan"]["sent"], 3);
  EXPECT_EQ(j["bad"]["nan"]["as_expected"], 2);
  EXPECT_EQ(j["bad"]["nan"]["expected_status"], "INVALID_ARGUMENT");
  EXPECT_EQ(j["statuses"]["UNAVAILABLE"], 1);
  EXPECT_EQ(j["unexpected"], 1);
}

// A short run with every kind of bad request against a correct server: the
// counts add up, every bad request gets its expected status, the
// percentiles are in order and come from the latencies.
TEST(LoadGeneratorTest, ShortRunAgainstARealServerAddsUp) {
  const std::unique_ptr<QuantdServer> server = testing::StartTestServer();
  ASSERT_NE(server, nullptr);
  LoadOptions options;
  options.channel = testing::ChannelTo(*server);
  options.target = "test";
  options.concurrency = 2;
  options.duration = absl::Milliseconds(600);
  options.shape = {16, 256};
  options.scheme = "int4_g128";
  options.tensors_per_stream = 4;
  options.bad_fraction = 0.5;
  options.seed = 5;
  SCOPED_TRACE(::testing::Message() << "seed " << options.seed);
  const absl::StatusOr<LoadReport> report = RunLoad(options);
  ASSERT_TRUE(report.ok()) << report.status();
  const LoadReport& r = *report;
  EXPECT_EQ(r.target, "test");
  EXPECT_EQ(r.scheme, SchemeToString(*ParseScheme("int4_g128")));
  EXPECT_EQ(r.shape, options.shape);
  EXPECT_EQ(r.concurrency, 2);
  EXPECT_EQ(r.tensor_bytes, 16 * 256 * 4);
  EXPECT_GE(r.seconds, 0.6);
  EXPECT_GT(r.good_sent, 0);
  EXPECT_EQ(r.good_ok, r.good_sent);
  EXPECT_EQ(r.good_failed, 0);
  EXPECT_EQ(r.unexpected, 0);
  EXPECT_TRUE(r.errors.empty());
  ASSERT_EQ(r.latencies_ms.size(), static_cast<size_t>(r.good_ok));
  EXPECT_TRUE(std::is_sorted(r.latencies_ms.begin(), r.latencies_ms.end()));
  EXPECT_GT(r.latencies_ms.front(), 0);
  EXPECT_LE(r.latencies_ms.front(), r.p50_ms);
  EXPECT_LE(r.p50_ms, r.p90_ms);
  EXPECT_LE(r.p90_ms, r.p99_ms);
  EXPECT_LE(r.p99_ms, r.max_ms);
  EXPECT_EQ(r.max_ms, r.latencies_ms.back());
  EXPECT_NEAR(r.tensors_per_second, static_cast<double>(r.good_ok) / r.seconds,
              1e-9 * r.tensors_per_second);
  EXPECT_NEAR(r.gigabytes_per_second,
              r.tensors_per_second * static_cast<double>(r.tensor_bytes) / 1e9,
              1e-9 * r.gigabytes_per_second);
  ASSERT_EQ(r.bad.size(), 4u);
  int64_t bad_sent = 0;
  for (const auto& [kind, counts] : r.bad) {
    SCOPED_TRACE(kind);
    EXPECT_EQ(counts.expected, counts.sent);
    EXPECT_EQ(counts.expected_code, kind == "deadline" ? "DEADLINE_EXCEEDED"
                                                       : "INVALID_ARGUMENT");
    bad_sent += counts.sent;
  }
  EXPECT_GT(bad_sent, 0);
}

}  // namespace
}  // namespace quantd

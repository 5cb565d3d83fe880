// Scrapes the real /metrics endpoint after real traffic: every metric of
// DESIGN.md §6 is present, counters moved, no tensor name leaks into a label,
// and promtool (Prometheus' own linter) finds nothing wrong.
#include <cstdio>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

using testing::AppendTensor;
using testing::ChannelTo;
using testing::RandomWeights;
using testing::RunRawStream;
using testing::StartRequest;

// Value of the first sample line that starts with `prefix` (name{labels}).
double Sample(const std::string& text, const std::string& prefix) {
  size_t pos = 0;
  while ((pos = text.find(prefix, pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      const size_t space = text.find(' ', pos + prefix.size());
      const size_t eol = text.find('\n', space);
      return std::stod(text.substr(space + 1, eol - space - 1));
    }
    pos += prefix.size();
  }
  return -1;
}

TEST(MetricsE2eTest, ScrapeShowsEveryMetricAndCountersMove) {
  auto server = testing::StartTestServer();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->metrics_port(), 0);
  auto stub = v1::Quantizer::NewStub(ChannelTo(*server));

  std::vector<float> w = RandomWeights(32 * 64, 9);
  std::vector<v1::QuantizeRequest> reqs = {
      StartRequest("int4", true, v1::GRANULARITY_PER_GROUP, 32)};
  AppendTensor(reqs, "secret.tensor.name", {32, 64}, w.data(), w.size() * 4);
  ASSERT_TRUE(RunRawStream(*stub, reqs).status.ok());
  std::vector<v1::QuantizeRequest> bad = {
      StartRequest("int4", true, v1::GRANULARITY_PER_GROUP, 32)};
  w[0] = std::numeric_limits<float>::infinity();
  AppendTensor(bad, "bad", {32, 64}, w.data(), w.size() * 4);
  ASSERT_EQ(RunRawStream(*stub, bad).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // OnDone (which counts handled RPCs) may run just after the client saw
  // the status.
  std::string text;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<std::string> body = testing::HttpGet(server->metrics_port(), "/metrics");
    ASSERT_TRUE(body.ok()) << body.status();
    text = *body;
    if (text.find("grpc_code=\"INVALID_ARGUMENT\"") != std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(20));
  }

  for (const char* name :
       {"grpc_server_started_total", "grpc_server_handled_total",
        "grpc_server_handling_seconds", "quantd_jobs_total",
        "quantd_job_duration_seconds", "quantd_queue_wait_seconds",
        "quantd_queue_depth", "quantd_workers_busy",
        "quantd_memory_reserved_bytes", "quantd_memory_budget_bytes",
        "quantd_received_bytes_total",
        "quantd_sent_bytes_total", "quantd_quantization_sqnr_db",
        "quantd_build_info", "process_cpu_seconds_total",
        "process_resident_memory_bytes", "process_open_fds",
        "process_start_time_seconds"}) {
    SCOPED_TRACE(name);
    EXPECT_NE(text.find(absl::StrCat("# TYPE ", name, " ")), std::string::npos);
  }
  EXPECT_EQ(Sample(text, "quantd_received_bytes_total"), 2.0 * 32 * 64 * 4);
  EXPECT_GT(Sample(text, "quantd_sent_bytes_total"), 0);
  EXPECT_EQ(Sample(text, "quantd_jobs_total{outcome=\"ok\",scheme=\"int4\"}"), 1);
  EXPECT_EQ(Sample(text, "quantd_jobs_total{outcome=\"invalid_argument\",scheme=\"int4\"}"), 1);
  EXPECT_EQ(Sample(text, "quantd_memory_reserved_bytes"), 0);
  EXPECT_EQ(Sample(text, "quantd_memory_budget_bytes"),
            static_cast<double>(ServiceOptions{}.memory_budget_bytes));
  EXPECT_EQ(Sample(text, "quantd_quantization_sqnr_db_count{scheme=\"int4\"}"), 1);
  EXPECT_NE(text.find("grpc_code=\"OK\""), std::string::npos);
  EXPECT_NE(text.find("grpc_code=\"INVALID_ARGUMENT\""), std::string::npos);
  EXPECT_EQ(text.find("secret.tensor.name"), std::string::npos)
      << "a tensor name leaked into the metrics";

  // promtool's linter, when installed (the project's dependency script
  // installs it).
  const char* promtool = "/usr/bin/promtool";
  if (std::ifstream(promtool).good()) {
    const std::string path = ::testing::TempDir() + "/metrics.txt";
    std::ofstream(path) << text;
    const std::string cmd =
        absl::StrCat(promtool, " check metrics < ", path, " 2>&1");
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
    const int rc = pclose(p);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_EQ(out, "") << out;
  } else {
    GTEST_SKIP() << "promtool not installed";
  }
}

}  // namespace
}  // namespace quantd

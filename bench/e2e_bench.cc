// End-to-end throughput: quantctl's client library streaming synthetic
// LLM-shaped f32 tensors to a quantd server over loopback gRPC, in GB/s of
// f32 input, beside a plain memory copy of the same bytes measured in the
// same run (the anchor). By default the server runs in this process on
// 127.0.0.1 with an ephemeral port (real gRPC over TCP); --server targets
// a running quantd instead.
//
//   quantd_e2e_bench [--gb=1.0] [--streams=2] [--schemes=int8,int4_sym_g128]
//                    [--server=host:port] [--workers=N] [--repeats=3]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/quantd_client.h"
#include "server/server.h"

ABSL_FLAG(double, gb, 1.0, "GB of f32 input per measurement");
ABSL_FLAG(int, streams, 2, "parallel Quantize streams");
ABSL_FLAG(std::string, schemes, "int8,int4_sym_g128,int4_asym_g128",
          "comma-separated schemes to measure");
ABSL_FLAG(std::string, server, "", "host:port of a running quantd; empty: "
          "start one in this process on loopback");
ABSL_FLAG(int, workers, 0, "in-process server workers (0: one per core)");
ABSL_FLAG(int, repeats, 3, "measurements per row; the median is printed");

namespace {

using Clock = std::chrono::steady_clock;

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  const std::vector<float>* data;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Llama-7B-like projections: q/k/v/o [4096,4096], gate/up [11008,4096],
// down [4096,11008]. One buffer per shape, reused under many names.
std::vector<std::vector<float>> MakeBuffers(
    const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<std::vector<float>> buffers;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (const auto& s : shapes) {
    std::vector<float> b(static_cast<size_t>(s[0] * s[1]));
    for (float& x : b) x = normal(rng);
    for (size_t i = 0; i < b.size(); i += 4099) b[i] *= 30.0f;
    buffers.push_back(std::move(b));
  }
  return buffers;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const double gb = absl::GetFlag(FLAGS_gb);
  const int streams = std::max(1, absl::GetFlag(FLAGS_streams));
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));

  const std::vector<std::vector<int64_t>> shapes = {
      {4096, 4096}, {11008, 4096}, {4096, 11008}};
  const std::vector<std::vector<float>> buffers = MakeBuffers(shapes);
  std::vector<Tensor> tensors;
  double total_bytes = 0;
  for (int i = 0; total_bytes < gb * 1e9; ++i) {
    const size_t k = static_cast<size_t>(i) % shapes.size();
    tensors.push_back({absl::StrCat("layers.", i / 3, ".proj", k), shapes[k],
                       &buffers[k]});
    total_bytes += static_cast<double>(buffers[k].size() * sizeof(float));
  }

  // Anchor: copy the same bytes once (read + write), same buffers.
  std::vector<double> copy_gbps;
  {
    std::vector<float> dst(buffers[1].size());
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = Clock::now();
      for (const Tensor& t : tensors) {
        std::memcpy(dst.data(), t.data->data(), t.data->size() * sizeof(float));
      }
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      copy_gbps.push_back(total_bytes / s / 1e9);
      if (dst[7] == 12345.0f) std::puts("");  // keep the copy observable
    }
  }

  std::unique_ptr<quantd::QuantdServer> server;
  std::string target = absl::GetFlag(FLAGS_server);
  if (target.empty()) {
    quantd::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    int workers = absl::GetFlag(FLAGS_workers);
    if (workers <= 0) workers = static_cast<int>(std::thread::hardware_concurrency());
    options.service.workers = std::max(1, workers);
    options.service.memory_budget_bytes = int64_t{8} << 30;
    auto started = quantd::QuantdServer::Start(options);
    if (!started.ok()) {
      std::fprintf(stderr, "cannot start server: %s\n",
                   started.status().ToString().c_str());
      return 1;
    }
    server = *std::move(started);
    target = absl::StrCat("127.0.0.1:", server->grpc_port());
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);

  std::printf("quantd end-to-end benchmark: %zu tensors, %.2f GB of f32 per run, "
              "%d stream(s), server %s%s, median of %d\n",
              tensors.size(), total_bytes / 1e9, streams, target.c_str(),
              server ? " (in process)" : "", repeats);
  std::printf("%-24s %10s %12s\n", "path", "GB/s", "x memcpy");
  const double anchor = Median(copy_gbps);
  std::printf("%-24s %10.2f %12.2f\n", "memcpy (anchor)", anchor, 1.0);

  const std::vector<std::string> scheme_texts = absl::StrSplit(
      absl::GetFlag(FLAGS_schemes), ',', absl::SkipEmpty());
  for (const std::string& scheme_text : scheme_texts) {
    absl::StatusOr<quantd::Scheme> scheme = quantd::ParseScheme(scheme_text);
    if (!scheme.ok()) {
      std::fprintf(stderr, "%s\n", scheme.status().ToString().c_str());
      return 1;
    }
    std::vector<double> gbps;
    for (int r = 0; r < repeats; ++r) {
      std::atomic<size_t> next{0};
      std::atomic<int> failures{0};
      std::mutex error_mu;
      std::string first_error;
      const auto t0 = Clock::now();
      std::vector<std::thread> threads;
      for (int s = 0; s < streams; ++s) {
        threads.emplace_back([&] {
          quantd::QuantdClient client(grpc::CreateCustomChannel(
              target, grpc::InsecureChannelCredentials(), args));
          quantd::JobConfig job;
          job.scheme = *scheme;
          job.client_name = "e2e-bench";
          absl::Status st = client.RunJob(
              job,
              [&]() -> std::optional<quantd::TensorRequest> {
                const size_t i = next.fetch_add(1);
                if (i >= tensors.size()) return std::nullopt;
                const Tensor& t = tensors[i];
                quantd::TensorRequest req;
                req.name = t.name;
                req.shape = t.shape;
                req.data = absl::Span<const uint8_t>(
                    reinterpret_cast<const uint8_t*>(t.data->data()),
                    t.data->size() * sizeof(float));
                return req;
              },
              [&](const std::string&, absl::StatusOr<quantd::TensorReply> reply) {
                if (!reply.ok()) ++failures;
              });
          if (!st.ok()) {
            ++failures;
            std::lock_guard<std::mutex> lock(error_mu);
            if (first_error.empty()) first_error = st.ToString();
          }
        });
      }
      for (std::thread& t : threads) t.join();
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (failures.load() != 0) {
        std::fprintf(stderr, "%s: %d failure(s): %s\n", scheme_text.c_str(),
                     failures.load(), first_error.c_str());
        return 1;
      }
      gbps.push_back(total_bytes / s / 1e9);
    }
    const double m = Median(gbps);
    std::printf("%-24s %10.2f %12.2f\n", scheme_text.c_str(), m, m / anchor);
  }
  return 0;
}

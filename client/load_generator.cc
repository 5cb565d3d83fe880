#include "client/load_generator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/quantd_client.h"
#include "kernels/convert.h"

namespace quantd {
namespace {

struct BadRequest {
  const char* kind;
  absl::StatusCode expected;
};
constexpr BadRequest kBadRequests[] = {
    {"nan", absl::StatusCode::kInvalidArgument},
    {"scheme", absl::StatusCode::kInvalidArgument},
    {"shape", absl::StatusCode::kInvalidArgument},
    {"deadline", absl::StatusCode::kDeadlineExceeded},
};

// The deadline of the "deadline" kind's streams. Long enough that the call
// is well under way when it expires: gRPC 1.51's sync client could lose a
// deadline of 1 ms that had passed by the time the call started (the call
// then never ended, not even on TryCancel; about once in 100 such streams on
// a loaded machine).
constexpr absl::Duration kDeadlineKindTimeout = absl::Milliseconds(50);

// Random normal values in `dtype`'s bytes.
std::vector<uint8_t> RandomTensor(int64_t n, DType dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<uint8_t> bytes(static_cast<size_t>(n) *
                             static_cast<size_t>(DTypeSize(dtype)));
  for (int64_t i = 0; i < n; ++i) {
    const float x = normal(rng);
    const size_t at = static_cast<size_t>(i);
    if (dtype == DType::kF32) {
      std::memcpy(&bytes[4 * at], &x, 4);
    } else {
      const uint16_t h =
          dtype == DType::kF16 ? FloatToHalf(x) : FloatToBFloat16(x);
      std::memcpy(&bytes[2 * at], &h, 2);
    }
  }
  return bytes;
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = p * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

class Load {
 public:
  Load(const LoadOptions& options, const Scheme& scheme, int64_t n)
      : options_(options),
        scheme_(scheme),
        client_(options.channel, options.auth_token),
        good_(RandomTensor(n, options.dtype, options.seed)),
        deadline_(absl::Now() + options.duration) {
    // A NaN in the middle of an otherwise good tensor.
    nan_ = good_;
    const size_t mid = (static_cast<size_t>(n) / 2) *
                       static_cast<size_t>(DTypeSize(options.dtype));
    if (options.dtype == DType::kF32) {
      const float q = std::numeric_limits<float>::quiet_NaN();
      std::memcpy(&nan_[mid], &q, 4);
    } else {
      const uint16_t q = 0x7e00;  // a quiet NaN in f16 and bf16 alike
      std::memcpy(&nan_[mid], &q, 2);
    }
    for (const BadRequest& bad : kBadRequests) {
      report_.bad[bad.kind].expected_code =
          absl::StatusCodeToString(bad.expected);
    }
  }

  void Stream(int index) {
    std::mt19937_64 rng(options_.seed * 7919 + static_cast<uint64_t>(index));
    std::uniform_real_distribution<double> coin(0.0, 1.0);
    std::uniform_int_distribution<size_t> pick(0, std::size(kBadRequests) - 1);
    while (absl::Now() < deadline_) {
      if (options_.bad_fraction > 0 && coin(rng) < options_.bad_fraction) {
        SendBad(kBadRequests[pick(rng)], index);
      } else {
        SendGood(index);
      }
    }
  }

  LoadReport Finish(double seconds) {
    absl::MutexLock lock(&mu_);
    LoadReport report = std::move(report_);
    report.seconds = seconds;
    std::sort(report.latencies_ms.begin(), report.latencies_ms.end());
    report.p50_ms = Percentile(report.latencies_ms, 0.50);
    report.p90_ms = Percentile(report.latencies_ms, 0.90);
    report.p99_ms = Percentile(report.latencies_ms, 0.99);
    report.max_ms =
        report.latencies_ms.empty() ? 0 : report.latencies_ms.back();
    report.tensors_per_second =
        static_cast<double>(report.good_ok) / std::max(seconds, 1e-9);
    report.gigabytes_per_second = static_cast<double>(report.good_ok) *
                                  static_cast<double>(good_.size()) / 1e9 /
                                  std::max(seconds, 1e-9);
    return report;
  }

 private:
  TensorRequest Request(const std::string& name,
                        const std::vector<uint8_t>& data) const {
    TensorRequest request;
    request.name = name;
    request.dtype = options_.dtype;
    request.shape = options_.shape;
    request.data = data;
    return request;
  }

  void SendGood(int index) {
    JobConfig config;
    config.scheme = scheme_;
    config.client_name = "quantctl-bench";
    config.max_in_flight_tensors = options_.max_in_flight_tensors;
    int sent = 0;
    auto source = [&]() -> std::optional<TensorRequest> {
      if (sent == options_.tensors_per_stream || absl::Now() >= deadline_) {
        return std::nullopt;
      }
      ++sent;
      {
        absl::MutexLock lock(&mu_);
        ++report_.good_sent;
      }
      return Request(absl::StrCat("load.", index, ".", sent), good_);
    };
    auto on_result = [&](const std::string&,
                         absl::StatusOr<TensorReply> reply) {
      absl::MutexLock lock(&mu_);
      if (reply.ok()) {
        ++report_.good_ok;
        report_.latencies_ms.push_back(reply->seconds * 1e3);
      } else {
        ++report_.good_failed;
        ++report_.errors[absl::StatusCodeToString(reply.status().code())];
      }
    };
    std::vector<std::string> unanswered;
    absl::Status status =
        client_.RunJob(config, source, on_result, &unanswered);
    if (!status.ok()) {
      absl::MutexLock lock(&mu_);
      report_.good_failed += static_cast<int64_t>(unanswered.size());
      ++report_.errors[absl::StatusCodeToString(status.code())];
    }
  }

  void SendBad(const BadRequest& bad, int index) {
    JobConfig config;
    config.scheme = scheme_;
    config.client_name = "quantctl-bench";
    config.max_in_flight_tensors = 2;
    TensorRequest request =
        Request(absl::StrCat("bad.", bad.kind, ".", index), good_);
    const std::string kind = bad.kind;
    if (kind == "nan") {
      request.data = nan_;
    } else if (kind == "scheme") {
      Scheme unknown = scheme_;
      unknown.format = "int99";
      request.scheme = unknown;
    } else if (kind == "shape") {
      Scheme odd;
      odd.format = "int4";
      odd.granularity = Granularity::kPerGroup;
      odd.group_size = options_.shape.back() + 1;  // never divides the row
      request.scheme = odd;
    } else if (kind == "deadline") {
      config.timeout = kDeadlineKindTimeout;
      config.chunk_bytes = 64 << 10;  // many chunks: it expires mid-upload
    }
    // The deadline kind sends its tensor again and again on one stream until
    // the deadline ends it, however fast the server.
    const bool endless = kind == "deadline";
    int taken = 0;
    auto source = [&]() -> std::optional<TensorRequest> {
      if (!endless && taken == 1) return std::nullopt;
      TensorRequest next = request;
      next.name = absl::StrCat(request.name, ".", taken++);
      return next;
    };
    absl::StatusCode got = absl::StatusCode::kOk;
    auto on_result = [&](const std::string&,
                         absl::StatusOr<TensorReply> reply) {
      if (got == absl::StatusCode::kOk) got = reply.status().code();
    };
    absl::Status status = client_.RunJob(config, source, on_result);
    if (!status.ok()) got = status.code();
    absl::MutexLock lock(&mu_);
    LoadReport::BadKind& counts = report_.bad[kind];
    ++counts.sent;
    if (got == bad.expected) {
      ++counts.expected;
    } else {
      ++report_.unexpected;
      ++report_.errors[absl::StrCat(absl::StatusCodeToString(got), " (", kind,
                                    ")")];
    }
  }

  const LoadOptions& options_;
  const Scheme scheme_;
  QuantdClient client_;
  const std::vector<uint8_t> good_;
  std::vector<uint8_t> nan_;
  const absl::Time deadline_;
  absl::Mutex mu_;
  LoadReport report_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<LoadReport> RunLoad(const LoadOptions& options) {
  if (options.channel == nullptr) {
    return absl::InvalidArgumentError("no server given");
  }
  if (options.concurrency < 1 || options.tensors_per_stream < 1 ||
      options.max_in_flight_tensors < 1) {
    return absl::InvalidArgumentError(
        "concurrency, tensors per stream and tensors in flight must be >= 1");
  }
  if (!(options.bad_fraction >= 0 && options.bad_fraction <= 1)) {
    return absl::InvalidArgumentError("bad fraction must be in [0, 1]");
  }
  absl::StatusOr<Scheme> scheme = ParseScheme(options.scheme);
  if (!scheme.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheme \"", options.scheme, "\": ", scheme.status().message()));
  }
  absl::StatusOr<Layout> layout = MakeLayout(*scheme, options.shape);
  if (!layout.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheme ", options.scheme, " on shape [",
        absl::StrJoin(options.shape, ", "), "]: ", layout.status().message()));
  }
  const absl::Time start = absl::Now();
  Load load(options, *scheme, layout->num_elements);
  std::vector<std::thread> streams;
  for (int i = 0; i < options.concurrency; ++i) {
    streams.emplace_back([&load, i] { load.Stream(i); });
  }
  for (std::thread& t : streams) t.join();
  LoadReport report = load.Finish(absl::ToDoubleSeconds(absl::Now() - start));
  report.target = options.target;
  report.scheme = SchemeToString(*scheme);
  report.shape = options.shape;
  report.dtype = options.dtype;
  report.concurrency = options.concurrency;
  report.tensor_bytes = layout->num_elements * DTypeSize(options.dtype);
  return report;
}

std::string FormatLoadReport(const LoadReport& r) {
  std::string out = absl::StrFormat(
      "load: %s  %d streams  %.1f s  %s on [%s] %s (%.2f MB per tensor)\n",
      r.target, r.concurrency, r.seconds, r.scheme,
      absl::StrJoin(r.shape, ", "), DTypeName(r.dtype),
      static_cast<double>(r.tensor_bytes) / 1e6);
  out += absl::StrFormat(
      "good tensors: %d sent, %d answered, %d failed  %.1f tensors/s  "
      "%.3f GB/s\n",
      r.good_sent, r.good_ok, r.good_failed, r.tensors_per_second,
      r.gigabytes_per_second);
  out += absl::StrFormat(
      "latency ms:   p50 %.1f  p90 %.1f  p99 %.1f  max %.1f  (n=%d)\n",
      r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.latencies_ms.size());
  int64_t bad_sent = 0;
  for (const auto& [kind, counts] : r.bad) bad_sent += counts.sent;
  if (bad_sent > 0) {
    out += "bad requests: kind      sent  as expected  expected status\n";
    for (const auto& [kind, counts] : r.bad) {
      out +=
          absl::StrFormat("              %-8s %5d  %11d  %s\n", kind,
                          counts.sent, counts.expected, counts.expected_code);
    }
  }
  if (!r.errors.empty()) {
    std::vector<std::string> parts;
    for (const auto& [code, count] : r.errors) {
      parts.push_back(absl::StrCat(code, " ", count));
    }
    out += absl::StrCat("statuses:     ", absl::StrJoin(parts, ", "), "\n");
  }
  out += absl::StrFormat("unexpected:   %d\n", r.unexpected);
  return out;
}

OrderedJson LoadReportToJson(const LoadReport& r) {
  OrderedJson j;
  j["target"] = r.target;
  j["scheme"] = r.scheme;
  j["shape"] = r.shape;
  j["dtype"] = std::string(DTypeName(r.dtype));
  j["concurrency"] = r.concurrency;
  j["seconds"] = r.seconds;
  j["tensor_bytes"] = r.tensor_bytes;
  j["good"] = {{"sent", r.good_sent},
               {"answered", r.good_ok},
               {"failed", r.good_failed},
               {"tensors_per_second", r.tensors_per_second},
               {"gigabytes_per_second", r.gigabytes_per_second}};
  j["latency_ms"] = {{"p50", r.p50_ms},
                     {"p90", r.p90_ms},
                     {"p99", r.p99_ms},
                     {"max", r.max_ms},
                     {"count", r.latencies_ms.size()}};
  OrderedJson bad = OrderedJson::object();
  for (const auto& [kind, counts] : r.bad) {
    bad[kind] = {{"sent", counts.sent},
                 {"as_expected", counts.expected},
                 {"expected_status", counts.expected_code}};
  }
  j["bad"] = std::move(bad);
  OrderedJson errors = OrderedJson::object();
  for (const auto& [code, count] : r.errors) errors[code] = count;
  j["statuses"] = std::move(errors);
  j["unexpected"] = r.unexpected;
  return j;
}

}  // namespace quantd

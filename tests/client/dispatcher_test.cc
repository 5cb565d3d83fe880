// Dispatch against in-process servers: each DispatchServer is a FlakyProxy,
// a small Quantizer service that forwards streams to one real quantd (so the
// replies are real ones) and fails a stream when a tensor header matches its
// rule, as a server or the network would. Servers that are down are a
// channel to a socket nobody listens on.
#include "client/dispatcher.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "kernels/scheme.h"
#include "quantd/v1/quantizer.grpc.pb.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

// Forwards each Quantize stream to `upstream`; before forwarding a tensor
// header it asks `rule` (the tensor's name, how many times this proxy has
// seen it, 1 first) and, given a status, fails the stream with it instead.
class FlakyProxy final : public v1::Quantizer::Service {
 public:
  using Rule =
      std::function<std::optional<grpc::Status>(const std::string&, int)>;

  FlakyProxy(const std::shared_ptr<grpc::Channel>& upstream, Rule rule)
      : stub_(v1::Quantizer::NewStub(upstream)), rule_(std::move(rule)) {
    grpc::ServerBuilder builder;
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~FlakyProxy() override { server_->Shutdown(); }

  std::shared_ptr<grpc::Channel> Channel() {
    return server_->InProcessChannel(grpc::ChannelArguments());
  }

  // Tensor headers this proxy received, in arrival order.
  std::vector<std::string> headers() const {
    absl::MutexLock lock(&mu_);
    return headers_;
  }
  int Seen(const std::string& name) const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(std::count(headers_.begin(), headers_.end(), name));
  }

  grpc::Status Quantize(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::QuantizeResponse, v1::QuantizeRequest>*
          stream) override {
    grpc::ClientContext upstream_context;
    auto upstream = stub_->Quantize(&upstream_context);
    std::thread back([&] {
      v1::QuantizeResponse response;
      bool open = true;
      while (upstream->Read(&response)) {
        if (open && !stream->Write(response)) {
          open = false;
          upstream_context.TryCancel();
        }
      }
    });
    std::optional<grpc::Status> failure;
    v1::QuantizeRequest request;
    while (stream->Read(&request)) {
      if (request.has_header()) {
        const std::string& name = request.header().name();
        int seen;
        {
          absl::MutexLock lock(&mu_);
          headers_.push_back(name);
          seen = static_cast<int>(
              std::count(headers_.begin(), headers_.end(), name));
        }
        failure = rule_(name, seen);
        if (failure) break;
      }
      if (!upstream->Write(request)) break;
    }
    if (failure) {
      upstream_context.TryCancel();
    } else {
      upstream->WritesDone();
    }
    back.join();
    const grpc::Status status = upstream->Finish();
    return failure ? *failure : status;
  }

 private:
  std::unique_ptr<v1::Quantizer::Stub> stub_;
  const Rule rule_;
  std::unique_ptr<grpc::Server> server_;
  mutable absl::Mutex mu_;
  std::vector<std::string> headers_ ABSL_GUARDED_BY(mu_);
};

FlakyProxy::Rule NoFaults() {
  return [](const std::string&, int) { return std::optional<grpc::Status>(); };
}

// What the callbacks saw for one tensor.
struct Outcome {
  int replies = 0;
  int failures = 0;
  std::string reply_name;
  uint64_t reply_rows = 0;
  absl::Status status;
  DispatchInfo info;
};

// Runs Dispatch and records every callback.
class Recorder {
 public:
  explicit Recorder(size_t n) : outcomes_(n) {}

  // `refuse`: on_reply returns this error for that tensor's name.
  void Run(const DispatchOptions& options,
           const std::vector<DispatchServer>& servers,
           const std::vector<TensorRequest>& requests,
           const std::string& refuse = "") {
    Dispatch(
        options, servers, requests,
        [&](size_t i, TensorReply reply, const DispatchInfo& info) {
          absl::MutexLock lock(&mu_);
          Outcome& o = outcomes_.at(i);
          ++o.replies;
          o.reply_name = reply.name;
          o.reply_rows = reply.layout.rows();
          o.info = info;
          if (requests[i].name == refuse) {
            return absl::DataLossError("the test refuses to store it");
          }
          return absl::OkStatus();
        },
        [&](size_t i, const absl::Status& status, const DispatchInfo& info) {
          absl::MutexLock lock(&mu_);
          Outcome& o = outcomes_.at(i);
          ++o.failures;
          o.status = status;
          o.info = info;
        });
  }

  // Each tensor settled exactly once (a refused store is a reply and a
  // failure).
  std::vector<Outcome> outcomes() const {
    absl::MutexLock lock(&mu_);
    return outcomes_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<Outcome> outcomes_ ABSL_GUARDED_BY(mu_);
};

// Tensors of shape [rows_i, 64] with seeded normal values; the bytes live in
// `storage`.
std::vector<TensorRequest> MakeRequests(const std::vector<std::string>& names,
                                        const std::vector<int64_t>& rows,
                                        uint32_t seed,
                                        std::vector<std::vector<float>>& storage) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  storage.assign(names.size(), {});
  std::vector<TensorRequest> requests(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    storage[i].resize(static_cast<size_t>(rows[i] * 64));
    for (float& x : storage[i]) x = normal(rng);
    requests[i].name = names[i];
    requests[i].dtype = DType::kF32;
    requests[i].shape = {rows[i], 64};
    requests[i].data = {reinterpret_cast<const uint8_t*>(storage[i].data()),
                        storage[i].size() * sizeof(float)};
  }
  return requests;
}

DispatchOptions FastOptions() {
  DispatchOptions options;
  options.job.scheme = *ParseScheme("int8");
  options.max_attempts = 3;
  options.base_backoff = absl::Milliseconds(1);
  options.max_backoff = absl::Milliseconds(4);
  options.server_cooldown = absl::Milliseconds(1);
  options.max_server_cooldown = absl::Milliseconds(8);
  return options;
}

// A channel to a Unix socket nobody listens on: every call is UNAVAILABLE.
std::shared_ptr<grpc::Channel> DeadChannel() {
  return grpc::CreateChannel(
      absl::StrCat("unix:", ::testing::TempDir(), "quantd_dispatcher_test_",
                   ::testing::UnitTest::GetInstance()->random_seed(),
                   "_nobody.sock"),
      grpc::InsecureChannelCredentials());
}

class DispatcherTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { quantd_ = testing::StartTestServer().release(); }
  static void TearDownTestSuite() {
    delete quantd_;
    quantd_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(quantd_, nullptr); }

  static std::shared_ptr<grpc::Channel> Quantd() {
    return testing::ChannelTo(*quantd_);
  }

  static QuantdServer* quantd_;
};
QuantdServer* DispatcherTest::quantd_ = nullptr;

TEST(IsRetryableCodeTest, TransientCodesOnly) {
  const std::pair<absl::StatusCode, bool> table[] = {
      {absl::StatusCode::kOk, false},
      {absl::StatusCode::kCancelled, true},
      {absl::StatusCode::kUnknown, true},
      {absl::StatusCode::kInvalidArgument, false},
      {absl::StatusCode::kDeadlineExceeded, true},
      {absl::StatusCode::kNotFound, false},
      {absl::StatusCode::kAlreadyExists, false},
      {absl::StatusCode::kPermissionDenied, false},
      {absl::StatusCode::kResourceExhausted, true},
      {absl::StatusCode::kFailedPrecondition, false},
      {absl::StatusCode::kAborted, true},
      {absl::StatusCode::kOutOfRange, false},
      {absl::StatusCode::kUnimplemented, false},
      {absl::StatusCode::kInternal, true},
      {absl::StatusCode::kUnavailable, true},
      {absl::StatusCode::kDataLoss, true},
      {absl::StatusCode::kUnauthenticated, false},
  };
  for (const auto& [code, retryable] : table) {
    SCOPED_TRACE(absl::StatusCodeToString(code));
    EXPECT_EQ(IsRetryableCode(code), retryable);
  }
}

TEST_F(DispatcherTest, AnswersEveryTensorOnceOverServersAndStreams) {
  const uint32_t seed = 11;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::vector<std::string> names;
  std::vector<int64_t> rows;
  for (int i = 0; i < 24; ++i) {
    names.push_back(absl::StrCat("layers.", i, ".weight"));
    rows.push_back(1 + i % 7);
  }
  std::vector<std::vector<float>> storage;
  const std::vector<TensorRequest> requests =
      MakeRequests(names, rows, seed, storage);
  FlakyProxy a(Quantd(), NoFaults()), b(Quantd(), NoFaults());
  QuantdClient client_a(a.Channel()), client_b(b.Channel());
  Recorder recorder(requests.size());
  recorder.Run(FastOptions(), {{&client_a, "a", 1 << 20, 2}, {&client_b, "b", 1 << 20, 2}},
               requests);
  const std::vector<Outcome> outcomes = recorder.outcomes();
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(outcomes[i].replies, 1);
    EXPECT_EQ(outcomes[i].failures, 0) << outcomes[i].status;
    EXPECT_EQ(outcomes[i].reply_name, names[i]);
    EXPECT_EQ(outcomes[i].reply_rows, static_cast<uint64_t>(rows[i]));
    EXPECT_EQ(outcomes[i].info.attempts, 1);
    EXPECT_FALSE(outcomes[i].info.moved);
    EXPECT_TRUE(outcomes[i].info.server == "a" || outcomes[i].info.server == "b")
        << outcomes[i].info.server;
    EXPECT_EQ(a.Seen(names[i]) + b.Seen(names[i]), 1);
  }
}

TEST_F(DispatcherTest, SendsLargestFirstThenByName) {
  const uint32_t seed = 12;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const std::vector<std::string> names = {"c", "a", "big", "b", "tiny", "mid"};
  const std::vector<int64_t> rows = {4, 4, 9, 4, 1, 6};
  std::vector<std::vector<float>> storage;
  const std::vector<TensorRequest> requests =
      MakeRequests(names, rows, seed, storage);
  FlakyProxy proxy(Quantd(), NoFaults());
  QuantdClient client(proxy.Channel());
  Recorder recorder(requests.size());
  recorder.Run(FastOptions(), {{&client, "only", 1 << 20, 1}}, requests);
  EXPECT_EQ(proxy.headers(),
            (std::vector<std::string>{"big", "mid", "a", "b", "c", "tiny"}));
  for (const Outcome& o : recorder.outcomes()) EXPECT_EQ(o.replies, 1);
}

TEST_F(DispatcherTest, AnErrorNamingOneTensorFailsOnlyThatOne) {
  const uint32_t seed = 13;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::vector<std::string> names;
  for (int i = 0; i < 10; ++i) names.push_back(absl::StrCat("t", i));
  names[4] = "t4.bad";  // sent fifth, after answered neighbours
  const std::vector<int64_t> rows(names.size(), 3);
  std::vector<std::vector<float>> storage;
  const std::vector<TensorRequest> requests =
      MakeRequests(names, rows, seed, storage);
  FlakyProxy proxy(Quantd(), [](const std::string& name, int) {
    return absl::StrContains(name, "bad")
               ? std::optional<grpc::Status>(grpc::Status(
                     grpc::StatusCode::INVALID_ARGUMENT,
                     absl::StrCat("tensor \"", name, "\": rejected by the test")))
               : std::nullopt;
  });
  QuantdClient client(proxy.Channel());
  Recorder recorder(requests.size());
  recorder.Run(FastOptions(), {{&client, "only", 1 << 20, 1}}, requests);
  const std::vector<Outcome> outcomes = recorder.outcomes();
  for (size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    const Outcome& o = outcomes[i];
    if (names[i] == "t4.bad") {
      EXPECT_EQ(o.replies, 0);
      ASSERT_EQ(o.failures, 1);
      EXPECT_EQ(o.status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_TRUE(absl::StrContains(o.status.message(), "only: tensor \"t4.bad\""))
          << o.status;
      EXPECT_EQ(o.info.attempts, 1);  // not retried
      EXPECT_EQ(proxy.Seen(names[i]), 1);
    } else {
      EXPECT_EQ(o.replies, 1);
      EXPECT_EQ(o.failures, 0) << o.status;
      // A neighbour sent again is not charged for the bad tensor's stream.
      EXPECT_EQ(o.info.attempts, 1);
    }
  }
}

TEST_F(DispatcherTest, TransientErrorsAreRetriedUpToMaxAttempts) {
  const uint32_t seed = 14;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  // Largest first: "flaky" goes first and "doomed" last, so neither is
  // ever in flight on the other's failing stream.
  const std::vector<std::string> names = {"doomed", "flaky", "n0", "n1",
                                          "n2",     "n3",    "n4"};
  const std::vector<int64_t> rows = {1, 3, 2, 2, 2, 2, 2};
  std::vector<std::vector<float>> storage;
  const std::vector<TensorRequest> requests =
      MakeRequests(names, rows, seed, storage);
  FlakyProxy proxy(Quantd(), [](const std::string& name, int seen) {
    if (name == "doomed") {
      return std::optional<grpc::Status>(
          grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "busy, always"));
    }
    if (name == "flaky" && seen == 1) {
      return std::optional<grpc::Status>(
          grpc::Status(grpc::StatusCode::ABORTED, "busy once"));
    }
    return std::optional<grpc::Status>();
  });
  QuantdClient client(proxy.Channel());
  Recorder recorder(requests.size());
  const DispatchOptions options = FastOptions();
  recorder.Run(options, {{&client, "only", 1 << 20, 2}}, requests);
  const std::vector<Outcome> outcomes = recorder.outcomes();
  for (size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    const Outcome& o = outcomes[i];
    EXPECT_EQ(o.replies + o.failures, 1);
    if (names[i] == "doomed") {
      ASSERT_EQ(o.failures, 1);
      EXPECT_EQ(o.status.code(), absl::StatusCode::kResourceExhausted);
      EXPECT_TRUE(absl::StrContains(o.status.message(), "busy, always"));
      EXPECT_TRUE(absl::StrContains(
          o.status.message(), absl::StrCat("(after ", options.max_attempts, " attempts)")))
          << o.status;
      EXPECT_EQ(o.info.attempts, options.max_attempts);
      EXPECT_EQ(proxy.Seen("doomed"), options.max_attempts);
    } else if (names[i] == "flaky") {
      EXPECT_EQ(o.replies, 1) << o.status;
      EXPECT_EQ(o.info.attempts, 2);
      EXPECT_EQ(proxy.Seen("flaky"), 2);
    } else {
      // A neighbour may share a failed stream once, then goes alone.
      EXPECT_EQ(o.replies, 1) << o.status;
      EXPECT_LE(o.info.attempts, 2);
    }
  }
}

TEST_F(DispatcherTest, TensorsMoveAwayFromADeadServer) {
  const uint32_t seed = 15;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::vector<std::string> names;
  for (int i = 0; i < 12; ++i) names.push_back(absl::StrCat("t", i));
  const std::vector<int64_t> rows(names.size(), 2);
  std::vector<std::vector<float>> storage;
  const std::vector<TensorRequest> requests =
      MakeRequests(names, rows, seed, storage);
  FlakyProxy live(Quantd(), NoFaults());
  QuantdClient dead_client(DeadChannel()), live_client(live.Channel());
  Recorder recorder(requests.size());
  recorder.Run(FastOptions(),
               {{&dead_client, "dead", 1 << 20, 2}, {&live_client, "live", 1 << 20, 1}},
               requests);
  for (size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    const Outcome o = recorder.outcomes()[i];
    EXPECT_EQ(o.replies, 1);
    EXPECT_EQ(o.failures, 0) << o.status;
    EXPECT_EQ(o.info.server, "live");
    // Only "dead" ever fails a send, so a tensor sent more than once was
    // moved from it.
    EXPECT_EQ(o.info.moved, o.info.attempts > 1);
    EXPECT_LE(o.info.attempts, FastOptions().max_attempts);
  }
}

TEST_F(DispatcherTest, EveryTensorFailsOnceWhenNoServerIsReachable) {
  const uint32_t seed = 16;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::vector<std::string> names;
  for (int i = 0; i < 8; ++i) names.push_back(absl::StrCat("t", i));
  const std::vector<int64_t> rows(names.size(), 2);
  std::vector<std::vector<float>> storage;
  const std::vector<TensorRequest> requests =
      MakeRequests(names, rows, seed, storage);
  QuantdClient a(DeadChannel()), b(DeadChannel());
  Recorder recorder(requests.size());
  const absl::Time start = absl::Now();
  recorder.Run(FastOptions(), {{&a, "a", 1 << 20, 2}, {&b, "b", 1 << 20, 1}},
               requests);
  // A few cooldowns of at most 8 ms each; far less than this.
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  for (size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    const Outcome o = recorder.outcomes()[i];
    EXPECT_EQ(o.replies, 0);
    EXPECT_EQ(o.failures, 1);
    EXPECT_EQ(o.status.code(), absl::StatusCode::kUnavailable) << o.status;
    EXPECT_LE(o.info.attempts, FastOptions().max_attempts);
  }
}

TEST_F(DispatcherTest, AStoreErrorFailsTheTensorWithoutResending) {
  const uint32_t seed = 17;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const std::vector<std::string> names = {"keep.0", "refused", "keep.1"};
  const std::vector<int64_t> rows = {3, 2, 1};
  std::vector<std::vector<float>> storage;
  const std::vector<TensorRequest> requests =
      MakeRequests(names, rows, seed, storage);
  FlakyProxy proxy(Quantd(), NoFaults());
  QuantdClient client(proxy.Channel());
  Recorder recorder(requests.size());
  recorder.Run(FastOptions(), {{&client, "only", 1 << 20, 1}}, requests,
               "refused");
  const std::vector<Outcome> outcomes = recorder.outcomes();
  EXPECT_EQ(outcomes[1].replies, 1);
  EXPECT_EQ(outcomes[1].failures, 1);
  EXPECT_EQ(outcomes[1].status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(outcomes[1].status.message(), "the test refuses to store it");
  EXPECT_EQ(proxy.Seen("refused"), 1);
  for (size_t i : {size_t{0}, size_t{2}}) {
    EXPECT_EQ(outcomes[i].replies, 1);
    EXPECT_EQ(outcomes[i].failures, 0);
  }
}

}  // namespace
}  // namespace quantd

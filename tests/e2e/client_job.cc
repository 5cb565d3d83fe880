#include "tests/e2e/client_job.h"

#include <optional>
#include <utility>

namespace quantd::testing {

absl::StatusOr<std::map<std::string, TensorReply>> RunClientJob(
    std::shared_ptr<grpc::Channel> channel, const JobConfig& config,
    const std::vector<TensorRequest>& tensors) {
  QuantdClient client(std::move(channel));
  size_t next = 0;
  std::map<std::string, TensorReply> replies;
  absl::Status failed;
  absl::Status s = client.RunJob(
      config,
      [&]() -> std::optional<TensorRequest> {
        if (next == tensors.size()) return std::nullopt;
        return tensors[next++];
      },
      [&](const std::string& name, absl::StatusOr<TensorReply> r) {
        if (!r.ok()) {
          if (failed.ok()) failed = r.status();
          return;
        }
        replies[name] = *std::move(r);
      });
  if (!s.ok()) return s;
  if (!failed.ok()) return failed;
  return replies;
}

}  // namespace quantd::testing

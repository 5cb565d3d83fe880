// Runs a job through the C++ client (client/quantd_client.h) for end-to-end
// tests: the replies by tensor name, or an error.
#ifndef QUANTD_TESTS_E2E_CLIENT_JOB_H_
#define QUANTD_TESTS_E2E_CLIENT_JOB_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/quantd_client.h"

namespace quantd::testing {

// Sends `tensors` (in order) on one stream with `config`. The stream's
// error if it failed, else the first tensor's error, else every reply.
absl::StatusOr<std::map<std::string, TensorReply>> RunClientJob(
    std::shared_ptr<grpc::Channel> channel, const JobConfig& config,
    const std::vector<TensorRequest>& tensors);

}  // namespace quantd::testing

#endif  // QUANTD_TESTS_E2E_CLIENT_JOB_H_

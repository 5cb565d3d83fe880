// The one place absl::Status becomes grpc::Status (and back, for clients of
// the same conventions). Codes map one to one; the message is kept.
#ifndef QUANTD_SERVER_STATUS_UTIL_H_
#define QUANTD_SERVER_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace quantd {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);
// Canonical upper-case name of a code ("RESOURCE_EXHAUSTED"), for labels.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace quantd

#endif  // QUANTD_SERVER_STATUS_UTIL_H_

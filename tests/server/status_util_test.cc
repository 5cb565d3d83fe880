#include "server/status_util.h"

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace quantd {
namespace {

// Every canonical code: its absl and gRPC spellings and its label.
struct CodeCase {
  absl::StatusCode absl_code;
  grpc::StatusCode grpc_code;
  const char* name;
};
constexpr CodeCase kCodes[] = {
    {absl::StatusCode::kOk, grpc::StatusCode::OK, "OK"},
    {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED, "CANCELLED"},
    {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN, "UNKNOWN"},
    {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT,
     "INVALID_ARGUMENT"},
    {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED,
     "DEADLINE_EXCEEDED"},
    {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND, "NOT_FOUND"},
    {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS,
     "ALREADY_EXISTS"},
    {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED,
     "PERMISSION_DENIED"},
    {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED,
     "RESOURCE_EXHAUSTED"},
    {absl::StatusCode::kFailedPrecondition,
     grpc::StatusCode::FAILED_PRECONDITION, "FAILED_PRECONDITION"},
    {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED, "ABORTED"},
    {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE,
     "OUT_OF_RANGE"},
    {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED,
     "UNIMPLEMENTED"},
    {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL, "INTERNAL"},
    {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE,
     "UNAVAILABLE"},
    {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS, "DATA_LOSS"},
    {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED,
     "UNAUTHENTICATED"},
};

// Messages as the service writes them: plain, with punctuation and quotes,
// UTF-8, and long.
const std::string kMessages[] = {
    "max_queue_jobs=64",
    "tensor \"layers.0.mlp.weight\": element 17 is NaN",
    "r\xc3\xa9sum\xc3\xa9 \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac",
    std::string(5000, 'x'),
};

TEST(StatusUtilTest, ToGrpcKeepsEveryCodeAndTheMessage) {
  for (const CodeCase& c : kCodes) {
    if (c.absl_code == absl::StatusCode::kOk) continue;
    for (const std::string& message : kMessages) {
      SCOPED_TRACE(absl::StrCat(c.name, " message of ", message.size(), " bytes"));
      const grpc::Status got = ToGrpcStatus(absl::Status(c.absl_code, message));
      EXPECT_EQ(got.error_code(), c.grpc_code);
      EXPECT_EQ(got.error_message(), message);
      EXPECT_FALSE(got.ok());
    }
  }
}

TEST(StatusUtilTest, FromGrpcKeepsEveryCodeAndTheMessage) {
  for (const CodeCase& c : kCodes) {
    if (c.grpc_code == grpc::StatusCode::OK) continue;
    for (const std::string& message : kMessages) {
      SCOPED_TRACE(absl::StrCat(c.name, " message of ", message.size(), " bytes"));
      const absl::Status got = FromGrpcStatus(grpc::Status(c.grpc_code, message));
      EXPECT_EQ(got.code(), c.absl_code);
      EXPECT_EQ(got.message(), message);
    }
  }
}

TEST(StatusUtilTest, RoundTripIsTheIdentity) {
  for (const CodeCase& c : kCodes) {
    SCOPED_TRACE(c.name);
    const absl::Status status(c.absl_code, "why");
    EXPECT_EQ(FromGrpcStatus(ToGrpcStatus(status)), status);
  }
}

TEST(StatusUtilTest, OkIsOkBothWays) {
  const grpc::Status to = ToGrpcStatus(absl::OkStatus());
  EXPECT_TRUE(to.ok());
  EXPECT_EQ(to.error_message(), "");
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(StatusUtilTest, EveryCodeHasItsCanonicalName) {
  for (const CodeCase& c : kCodes) {
    SCOPED_TRACE(c.name);
    EXPECT_STREQ(GrpcCodeName(c.grpc_code), c.name);
    // The same spelling as Abseil's, so labels from either side agree.
    EXPECT_EQ(absl::StatusCodeToString(c.absl_code), c.name);
  }
  // A code past the last one (a newer peer's) is labelled UNKNOWN.
  EXPECT_STREQ(GrpcCodeName(static_cast<grpc::StatusCode>(17)), "UNKNOWN");
}

}  // namespace
}  // namespace quantd

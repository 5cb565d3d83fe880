// Status propagation macros with the meaning of Abseil's later
// ABSL_RETURN_IF_ERROR / ABSL_ASSIGN_OR_RETURN (absent from absl 20220623),
// so an upgrade is a rename.
//
//   QUANTD_RETURN_IF_ERROR(Validate(header));
//   QUANTD_ASSIGN_OR_RETURN(Layout layout, MakeLayout(scheme, shape));
#ifndef QUANTD_BASE_STATUS_MACROS_H_
#define QUANTD_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define QUANTD_RETURN_IF_ERROR(expr)                      \
  do {                                                    \
    ::absl::Status quantd_status_ = (expr);               \
    if (!quantd_status_.ok()) return quantd_status_;      \
  } while (0)

#define QUANTD_STATUS_CONCAT_INNER_(a, b) a##b
#define QUANTD_STATUS_CONCAT_(a, b) QUANTD_STATUS_CONCAT_INNER_(a, b)

#define QUANTD_ASSIGN_OR_RETURN(lhs, rexpr)                                   \
  QUANTD_ASSIGN_OR_RETURN_IMPL_(                                              \
      QUANTD_STATUS_CONCAT_(quantd_statusor_, __LINE__), lhs, rexpr)

#define QUANTD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()

#endif  // QUANTD_BASE_STATUS_MACROS_H_

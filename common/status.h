// Small helpers Debian's Abseil (20220623) lacks: early-return macros and string_view conversion.
#ifndef TESTSHARD_COMMON_STATUS_H_
#define TESTSHARD_COMMON_STATUS_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#define TS_STATUS_CONCAT_INNER_(a, b) a##b
#define TS_STATUS_CONCAT_(a, b) TS_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define TS_RETURN_IF_ERROR(expr)                         \
  do {                                                   \
    ::absl::Status ts_status_ = (expr);                  \
    if (!ts_status_.ok()) return ts_status_;             \
  } while (0)

// `TS_ASSIGN_OR_RETURN(auto x, F());` assigns the value of an absl::StatusOr or returns its status.
// It expands to several statements: brace it when it is the body of an if or a loop.
#define TS_ASSIGN_OR_RETURN(lhs, expr) \
  TS_ASSIGN_OR_RETURN_IMPL_(TS_STATUS_CONCAT_(ts_statusor_, __LINE__), lhs, expr)
#define TS_ASSIGN_OR_RETURN_IMPL_(var, lhs, expr) \
  auto var = (expr);                              \
  if (!var.ok()) return std::move(var).status();  \
  lhs = std::move(var).value()

namespace testshard {

// Abseil's string_view is not std::string_view in this Abseil; convert at the boundary.
inline absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }
inline std::string_view ToStd(absl::string_view s) { return std::string_view(s.data(), s.size()); }

// Prefixes a non-OK status's message with context, keeping its code.
inline absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), std::string(context) + ": " + std::string(ToStd(status.message())));
}

}  // namespace testshard

#endif  // TESTSHARD_COMMON_STATUS_H_

#ifndef TESTSHARD_COMMON_TESTING_STATUS_MATCHERS_H_
#define TESTSHARD_COMMON_TESTING_STATUS_MATCHERS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status.h"
#include "gmock/gmock.h"

namespace testshard::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// EXPECT_THAT(F(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 3")));
MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s.ToString();
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

MATCHER(IsOk, "") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s.ToString();
  return s.ok();
}

}  // namespace testshard::testing

#define TS_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  TS_ASSERT_OK_AND_ASSIGN_IMPL_(TS_STATUS_CONCAT_(ts_assert_, __LINE__), lhs, expr)
#define TS_ASSERT_OK_AND_ASSIGN_IMPL_(var, lhs, expr) \
  auto var = (expr);                                  \
  ASSERT_TRUE(var.ok()) << var.status();              \
  lhs = std::move(var).value()

#endif  // TESTSHARD_COMMON_TESTING_STATUS_MATCHERS_H_

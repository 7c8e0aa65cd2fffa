// The row level security preflight: connected to a clone as the tests' role, find what would let the tests see
// every tenant's rows whatever the policies say, so the user hears it before a green run means nothing.
#ifndef TESTSHARD_AGENT_RLS_CHECK_H_
#define TESTSHARD_AGENT_RLS_CHECK_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/sql_session.h"

namespace testshard::agent {

// One line per finding:
//  - the role is a superuser, or has BYPASSRLS (policies never apply to it);
//  - the role owns (or inherits the owner of) tables whose row level security is not FORCEd, so their policies do
//    not apply to it;
//  - tables have policies while row level security is not enabled on them, so the policies apply to nobody.
// An empty list means none of these. Errors are the session's.
absl::StatusOr<std::vector<std::string>> CheckRowLevelSecurity(pg::SqlSession& as_test_role);

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_RLS_CHECK_H_

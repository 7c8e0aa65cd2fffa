// One Redis and one PostgreSQL per test binary, for the contract tests that hold every backend to one behaviour.
// Servers are slow to start, so they are started on first use and shared; tests keep apart by project names.
#ifndef TESTSHARD_COMMON_TESTING_SHARED_SERVERS_H_
#define TESTSHARD_COMMON_TESTING_SHARED_SERVERS_H_

#include <string>

#include "absl/status/statusor.h"

namespace testshard::testing {

// A store spec ("unix:/PATH" for OpenHistoryStore / ParseRedisUrl) of a private redis-server on a unix socket, or
// why it could not be started (the same error on every call).
absl::StatusOr<std::string> SharedRedisUrl();
// A libpq URI of an embedded PostgreSQL on a private unix socket, or why it could not be started.
// REQUIRES (both): called from the main thread (the servers live as long as the process; see ProcessSpec).
absl::StatusOr<std::string> SharedPostgresUrl();

}  // namespace testshard::testing

#endif  // TESTSHARD_COMMON_TESTING_SHARED_SERVERS_H_

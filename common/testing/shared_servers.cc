#include "common/testing/shared_servers.h"

#include <memory>

#include "common/postgres/embedded_postgres.h"
#include "common/testing/redis_server.h"

namespace testshard::testing {

absl::StatusOr<std::string> SharedRedisUrl() {
  // Destroyed at exit, which stops the server and removes its directory.
  static const absl::StatusOr<std::unique_ptr<RedisServer>> server = RedisServer::Start();
  if (!server.ok()) return server.status();
  return (*server)->url();
}

absl::StatusOr<std::string> SharedPostgresUrl() {
  // Destroyed at exit, which stops the server and removes its data directory.
  static const absl::StatusOr<std::unique_ptr<pg::EmbeddedPostgres>> server =
      pg::EmbeddedPostgres::Start(pg::EmbeddedOptions{});
  if (!server.ok()) return server.status();
  return (*server)->admin().Url();
}

}  // namespace testshard::testing

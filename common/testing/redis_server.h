// A throwaway redis-server for tests: private temp dir, unix socket only (no TCP port at all), no persistence.
#ifndef TESTSHARD_COMMON_TESTING_REDIS_SERVER_H_
#define TESTSHARD_COMMON_TESTING_REDIS_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace testshard::testing {

// Start() forks and execs `redis-server` (found on PATH) and returns once it answers on its socket. The destructor
// stops it (SIGTERM, then SIGKILL) and removes the directory. The child also dies with the test process
// (PR_SET_PDEATHSIG), so a crashed test leaves no server behind. Not thread-safe; one per fixture.
class RedisServer {
 public:
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(const std::string& extra_config = "");
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  const std::string& socket_path() const { return socket_path_; }
  // A spec for OpenHistoryStore / ParseRedisUrl.
  std::string url() const { return "unix:" + socket_path_; }
  pid_t pid() const { return pid_; }

 private:
  RedisServer() = default;
  std::string dir_;
  std::string socket_path_;
  pid_t pid_ = -1;
};

}  // namespace testshard::testing

#endif  // TESTSHARD_COMMON_TESTING_REDIS_SERVER_H_

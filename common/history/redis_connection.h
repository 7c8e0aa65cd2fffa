// One connection to a Redis server, shared by everything testshard keeps in Redis (the duration history, run
// journals): address parsing, connect with AUTH/SELECT, pipelined commands, errors as absl::Status.
#ifndef TESTSHARD_COMMON_HISTORY_REDIS_CONNECTION_H_
#define TESTSHARD_COMMON_HISTORY_REDIS_CONNECTION_H_

#include <signal.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct redisContext;
struct redisReply;

namespace testshard::history {

struct RedisAddress {
  std::string host;         // TCP host, when unix_socket is empty
  int port = 6379;
  std::string unix_socket;  // path of a unix socket; wins over host
  std::string password;
  int db = 0;
  absl::Duration timeout = absl::Seconds(10);  // connect and per-command
};

// Parses redis://[:PASSWORD@]HOST[:PORT][/DB], unix:/PATH[?db=N&password=P], redis+unix:///PATH[?db=N].
absl::StatusOr<RedisAddress> ParseRedisUrl(std::string_view url);

struct RedisReplyDeleter {
  void operator()(redisReply* r) const;
};
using RedisReply = std::unique_ptr<redisReply, RedisReplyDeleter>;
using RedisCommand = std::vector<std::string>;

// A reply of type REDIS_REPLY_ERROR as a canonical status (NOAUTH → kPermissionDenied, WRONGTYPE →
// kFailedPrecondition, LOADING/BUSY → kUnavailable, else kInternal).
absl::Status RedisReplyError(const redisReply* r, std::string_view what);

// hiredis writes with write(2), so a server that went away raises SIGPIPE, whose default action kills the whole
// process. A library must not change the process's signal dispositions, so for the duration of a call the signal
// is blocked in this thread only, and one it raised is consumed before unblocking (the classic recipe for
// libraries, as in libcurl's sigpipe.h). Hold one around every use of a RedisConnection.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock();
  ~ScopedSigpipeBlock();
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

// Not thread-safe: the owner serialises calls (each store holds it under its own mutex). A broken connection is
// re-opened by the next EnsureConnected(); callers Drop() it after a transport error or mid-transaction failure.
class RedisConnection {
 public:
  explicit RedisConnection(RedisAddress address) : address_(std::move(address)) {}
  ~RedisConnection() { Drop(); }
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Connects (AUTH, SELECT) unless already connected. kUnavailable when the server cannot be reached,
  // kPermissionDenied when it refuses the password.
  absl::Status EnsureConnected();
  void Drop();
  // Sends `commands` in one pipeline and returns their replies; a transport failure is kUnavailable. Reply errors
  // are returned as replies, for the caller to judge. REQUIRES: connected.
  absl::StatusOr<std::vector<RedisReply>> Pipeline(const std::vector<RedisCommand>& commands);
  // One command; a reply error becomes a status.
  absl::StatusOr<RedisReply> Call(const RedisCommand& command);
  // "unix:/path" or "redis://host:port/db", without the password.
  std::string Describe() const;

 private:
  const RedisAddress address_;
  redisContext* context_ = nullptr;
};

}  // namespace testshard::history

#endif  // TESTSHARD_COMMON_HISTORY_REDIS_CONNECTION_H_

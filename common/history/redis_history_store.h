// The duration history in Redis, for fleets and CI runners that share one server.
#ifndef TESTSHARD_COMMON_HISTORY_REDIS_HISTORY_STORE_H_
#define TESTSHARD_COMMON_HISTORY_REDIS_HISTORY_STORE_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/history/history_store.h"

struct redisContext;

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

// One hash per project, key "testshard:history:{PROJECT}", field = test id, value = the record as JSON
// (history.h EncodeJson). Update() is optimistic: WATCH the hash, read the touched fields in one pipeline, fold the
// samples in here (the same ApplySample as every backend), then MULTI/HSET/EXEC in one pipeline; a concurrent
// writer makes EXEC fail and the whole read-modify-write is retried with jittered back-off, so no sample is lost.
//
// Thread-safe: one connection, used under a mutex (a call holds it for its whole round trip; the store is used
// a few times per run, not per test). A broken connection is dropped and re-opened by the next call.
class RedisHistoryStore final : public HistoryStore {
 public:
  // kUnavailable when the server cannot be reached, kPermissionDenied when it refuses the password.
  static absl::StatusOr<std::unique_ptr<RedisHistoryStore>> Connect(RedisAddress address,
                                                                     HistoryOptions options = {});
  ~RedisHistoryStore() override;

  absl::StatusOr<std::vector<TestHistory>> Read(std::string_view project,
                                                const std::vector<std::string>& test_ids) override;
  absl::StatusOr<std::vector<TestHistory>> ReadAll(std::string_view project) override;
  absl::Status Update(std::string_view project, const std::vector<Sample>& samples) override;
  absl::Status Put(std::string_view project, const std::vector<TestHistory>& records) override;
  std::string Describe() const override;

  static std::string KeyFor(std::string_view project);

 private:
  RedisHistoryStore(RedisAddress address, HistoryOptions options);
  absl::Status EnsureConnectedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AuthAndSelectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One optimistic read-modify-write of `samples` (WATCH, HMGET, fold, MULTI/HSET/EXEC). False when a concurrent
  // writer made EXEC fail.
  absl::StatusOr<bool> TryUpdateLocked(const std::string& key, const std::vector<std::string>& ids,
                                       const std::vector<Sample>& samples) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads the records of `ids` (skipping absent ones) with pipelined HMGETs.
  absl::StatusOr<std::vector<TestHistory>> ReadLocked(const std::string& key, const std::vector<std::string>& ids)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `records` in one MULTI/EXEC. Returns false (and OK) when EXEC was aborted by a WATCHed change.
  absl::StatusOr<bool> WriteLocked(const std::string& key, const std::vector<TestHistory>& records)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RedisAddress address_;
  const HistoryOptions options_;
  absl::Mutex mu_;
  redisContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace testshard::history

#endif  // TESTSHARD_COMMON_HISTORY_REDIS_HISTORY_STORE_H_

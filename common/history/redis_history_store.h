// The duration history in Redis, for fleets and CI runners that share one server.
#ifndef TESTSHARD_COMMON_HISTORY_REDIS_HISTORY_STORE_H_
#define TESTSHARD_COMMON_HISTORY_REDIS_HISTORY_STORE_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/history/history_store.h"
#include "common/history/redis_connection.h"

namespace testshard::history {

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

  const HistoryOptions options_;
  absl::Mutex mu_;
  RedisConnection conn_ ABSL_GUARDED_BY(mu_);
};

}  // namespace testshard::history

#endif  // TESTSHARD_COMMON_HISTORY_REDIS_HISTORY_STORE_H_

// The JournalLogs on servers: a Redis list and a PostgreSQL table, over the history stores' connections
// (common/history/redis_connection.h, postgres_connection.h). Only run_journal_backends.cc needs these.
#ifndef TESTSHARD_COORDINATOR_RUN_JOURNAL_SERVERS_H_
#define TESTSHARD_COORDINATOR_RUN_JOURNAL_SERVERS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/history/postgres_connection.h"
#include "common/history/redis_connection.h"
#include "coordinator/run_journal_backends.h"

namespace testshard::coordinator {

// A Redis list, key "testshard:{PROJECT}:run:RUN_ID:journal" (the braces a Cluster hash tag, as the history's):
// RPUSH per batch, LRANGE to read. Every append also sets the key to expire kExpiry later, so the lists of old
// runs go away by themselves.
class RedisJournalLog final : public JournalLog {
 public:
  static constexpr absl::Duration kExpiry = absl::Hours(24 * 7);
  static absl::StatusOr<std::unique_ptr<RedisJournalLog>> Connect(history::RedisAddress address,
                                                                  std::string_view project, std::string_view run_id);
  static std::string KeyFor(std::string_view project, std::string_view run_id);

  absl::Status Append(const std::vector<std::string>& lines) override;
  absl::StatusOr<std::vector<std::string>> ReadAll() override;
  absl::StatusOr<int64_t> Count() override;
  std::string Describe() const override;

 private:
  RedisJournalLog(history::RedisAddress address, std::string key) : conn_(std::move(address)), key_(std::move(key)) {}
  // Connects if need be and sends one command; drops the connection when it broke.
  absl::StatusOr<history::RedisReply> CallLocked(const history::RedisCommand& command)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Mutex mu_;
  history::RedisConnection conn_ ABSL_GUARDED_BY(mu_);
  const std::string key_;
};

// Rows of testshard_run_journal (project, run_id, seq bigserial, event text, created), created if missing: one
// transaction per batch (COPY), SELECT ... ORDER BY seq to read. Opening the journal of a new run deletes runs
// older than kExpiry. `event` is text, not jsonb: the line is stored byte for byte, never re-parsed by the server.
class PostgresJournalLog final : public JournalLog {
 public:
  static constexpr absl::Duration kExpiry = absl::Hours(24 * 7);
  // `conninfo`: a libpq URI or key=value string. `prune`: delete journals older than kExpiry.
  static absl::StatusOr<std::unique_ptr<PostgresJournalLog>> Connect(std::string conninfo, std::string_view project,
                                                                     std::string_view run_id, bool prune);

  absl::Status Append(const std::vector<std::string>& lines) override;
  absl::StatusOr<std::vector<std::string>> ReadAll() override;
  absl::StatusOr<int64_t> Count() override;
  std::string Describe() const override;

 private:
  PostgresJournalLog(std::string conninfo, std::string project, std::string run_id);
  // Runs `sql` with $1 = project, $2 = run id in a transaction of its own.
  absl::StatusOr<pqxx::result> QueryLocked(const char* sql, std::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  mutable absl::Mutex mu_;
  history::PostgresConnection conn_ ABSL_GUARDED_BY(mu_);
  const std::string project_;
  const std::string run_id_;
};

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_RUN_JOURNAL_SERVERS_H_

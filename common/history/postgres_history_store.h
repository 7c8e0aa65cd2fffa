// The duration history in PostgreSQL, for fleets that already run one (often the same server the tests use).
#ifndef TESTSHARD_COMMON_HISTORY_POSTGRES_HISTORY_STORE_H_
#define TESTSHARD_COMMON_HISTORY_POSTGRES_HISTORY_STORE_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/history/history_store.h"
#include "common/history/postgres_connection.h"

namespace testshard::history {

// One table, testshard_history (project, test_id) → ewma_s, p90_s, recent_s float8[], outcomes, last_seen
// timestamptz, runs; created on first connect. Batches go through COPY into a temporary table and one
// INSERT ... ON CONFLICT DO UPDATE, so a run of thousands of tests is a handful of round trips. Update() takes a
// transaction-scoped advisory lock per project (pg_advisory_xact_lock), reads the touched rows, folds the
// samples in here (the same ApplySample as every backend) and upserts: writers of one project serialise, and a
// row that did not exist yet cannot be inserted twice with one sample lost.
//
// Thread-safe: one connection used under a mutex; a broken one is re-opened by the next call. libpqxx exceptions
// never leave this class: a lost server is kUnavailable, a refused login kPermissionDenied, a deadlock or
// serialisation failure kAborted.
class PostgresHistoryStore final : public HistoryStore {
 public:
  // `conninfo`: a libpq URI (postgresql://...) or key=value string.
  static absl::StatusOr<std::unique_ptr<PostgresHistoryStore>> Connect(std::string conninfo,
                                                                        HistoryOptions options = {});
  ~PostgresHistoryStore() override;

  absl::StatusOr<std::vector<TestHistory>> Read(std::string_view project,
                                                const std::vector<std::string>& test_ids) override;
  absl::StatusOr<std::vector<TestHistory>> ReadAll(std::string_view project) override;
  absl::Status Update(std::string_view project, const std::vector<Sample>& samples) override;
  absl::Status Put(std::string_view project, const std::vector<TestHistory>& records) override;
  std::string Describe() const override;

 private:
  PostgresHistoryStore(std::string conninfo, HistoryOptions options);

  const HistoryOptions options_;
  mutable absl::Mutex mu_;
  PostgresConnection conn_ ABSL_GUARDED_BY(mu_);
};

}  // namespace testshard::history

#endif  // TESTSHARD_COMMON_HISTORY_POSTGRES_HISTORY_STORE_H_

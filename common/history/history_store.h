// Where the duration history lives. One interface, three backends (file, Redis, PostgreSQL), one contract test
// (history_store_contract_test.cc) that every backend passes.
#ifndef TESTSHARD_COMMON_HISTORY_HISTORY_STORE_H_
#define TESTSHARD_COMMON_HISTORY_HISTORY_STORE_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/history/history.h"

namespace testshard::history {

// Records are keyed by (project, test id). A project is any non-empty string (a repository name, say); test ids
// are arbitrary strings (pytest node ids with brackets, quotes, spaces, unicode).
//
// Thread-safety: every implementation is safe to call from several threads at once, and several processes (CI
// jobs, coordinators) may share one store: Update() is atomic per call with respect to every other Update() and
// Put() on the same project — no sample is ever lost to a concurrent writer.
//
// Errors: kUnavailable when the backend cannot be reached (retry later), kDataLoss when what is stored cannot be
// read back, kInvalidArgument for an empty project, kAborted when a concurrent writer kept winning and the
// update gave up (retry).
class HistoryStore {
 public:
  virtual ~HistoryStore() = default;

  // The records for those of `test_ids` that have one, in no particular order. Unknown ids are simply absent.
  virtual absl::StatusOr<std::vector<TestHistory>> Read(std::string_view project,
                                                        const std::vector<std::string>& test_ids) = 0;
  // Every record of the project, in no particular order.
  virtual absl::StatusOr<std::vector<TestHistory>> ReadAll(std::string_view project) = 0;
  // Folds a run's results in (ApplySample, in the order given). A run updates thousands of tests at once, so this
  // is one round of batched I/O, not one per test.
  virtual absl::Status Update(std::string_view project, const std::vector<Sample>& samples) = 0;
  // Writes whole records, replacing any with the same test id (used to copy a history between stores).
  virtual absl::Status Put(std::string_view project, const std::vector<TestHistory>& records) = 0;
  // What the store is, for messages ("file:/repo/.testshard").
  virtual std::string Describe() const = 0;
};

// Opens a store from a spec:
//   file:DIR                       the embedded file store (default: file:.testshard)
//   redis://[:PASSWORD@]HOST[:PORT][/DB]   or   unix:/PATH/redis.sock   or   redis+unix:///PATH[?db=N]
//   postgresql://...  or  postgres://...  (any libpq URI or "host=... dbname=..." after "postgresql:")
// kInvalidArgument for an unknown scheme; kUnavailable when the server cannot be reached.
absl::StatusOr<std::unique_ptr<HistoryStore>> OpenHistoryStore(std::string_view spec,
                                                               const HistoryOptions& options = {});

// Which backend a spec names, and what follows the scheme: the directory for kFile, the whole URL for kRedis
// (for ParseRedisUrl), the libpq conninfo for kPostgres. kInvalidArgument as OpenHistoryStore. Whatever else
// testshard keeps beside the history (run journals) dispatches on this too.
struct StoreSpec {
  enum Kind { kFile, kRedis, kPostgres } kind = kFile;
  std::string target;
};
absl::StatusOr<StoreSpec> ParseStoreSpec(std::string_view spec);

// Validates a project name the same way for every backend.
absl::Status CheckProject(std::string_view project);

}  // namespace testshard::history

#endif  // TESTSHARD_COMMON_HISTORY_HISTORY_STORE_H_

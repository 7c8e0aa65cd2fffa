// The default store: plain files under a directory (normally .testshard/ in the project), no server needed.
#ifndef TESTSHARD_COMMON_HISTORY_FILE_HISTORY_STORE_H_
#define TESTSHARD_COMMON_HISTORY_FILE_HISTORY_STORE_H_

#include <string>

#include "common/history/history_store.h"

namespace testshard::history {

// One file per project, DIR/history/<project>.jsonl: a header line, then one JSON record per line (so a damaged
// line is reported by its number). Writers serialise on flock(2) of a sibling .lock file (which works between
// processes and between threads of one process, since each call opens its own descriptor), write a temporary file
// in the same directory, fsync it and rename(2) it over the old one, then fsync the directory: a crash at any
// point leaves either the old history or the new one, never a torn file. Readers take no lock; rename makes them
// see one whole version.
//
// flock is advisory and is not reliable on some network filesystems (NFS before Linux 2.6.12 emulates it with
// fcntl locks); keep DIR on a local disk, or use the Redis or PostgreSQL store for a fleet.
//
// Thread-safe; holds no state but the directory name.
class FileHistoryStore final : public HistoryStore {
 public:
  explicit FileHistoryStore(std::string dir, HistoryOptions options = {});

  absl::StatusOr<std::vector<TestHistory>> Read(std::string_view project,
                                                const std::vector<std::string>& test_ids) override;
  absl::StatusOr<std::vector<TestHistory>> ReadAll(std::string_view project) override;
  absl::Status Update(std::string_view project, const std::vector<Sample>& samples) override;
  absl::Status Put(std::string_view project, const std::vector<TestHistory>& records) override;
  std::string Describe() const override { return "file:" + dir_; }

  // The file holding `project`'s history (exposed for tests and messages).
  std::string PathFor(std::string_view project) const;

 private:
  template <typename Mutate>
  absl::Status Rewrite(std::string_view project, Mutate mutate);

  const std::string dir_;
  const HistoryOptions options_;
};

}  // namespace testshard::history

#endif  // TESTSHARD_COMMON_HISTORY_FILE_HISTORY_STORE_H_

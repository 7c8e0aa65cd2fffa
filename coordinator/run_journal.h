// What a coordinator must remember to resume a run after a restart: each stage's collected tests, every test
// attempt, and how stages ended. Results are the only thing that cannot be recomputed; leases are not kept (a
// restarted coordinator re-queues what had no result, and agents re-register).
#ifndef TESTSHARD_COORDINATOR_RUN_JOURNAL_H_
#define TESTSHARD_COORDINATOR_RUN_JOURNAL_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/test_result.h"

namespace testshard::coordinator {

struct JournalEvent {
  enum Kind { kCollected, kAttempt, kStageEnd } kind = kAttempt;
  std::string stage;
  std::vector<std::string> ids;  // kCollected
  std::vector<std::string> groups;  // kCollected: empty, or the group key of each id ("" = none)
  TestCase result;               // kAttempt
  std::string agent;             // kAttempt: who ran it ("" for results the coordinator decided)
  bool final = false;            // kAttempt: recorded as is, never retried (not-run, collection errors)
  int status = 0;                // kStageEnd: StageStatus
  std::string note;              // kStageEnd
};

// One event as one line of JSON (no newline), and back: the one encoding every journal backend stores.
// Decode: kDataLoss for a line that is not a journal event.
std::string EncodeJournalEvent(const JournalEvent& event);
absl::StatusOr<JournalEvent> DecodeJournalEvent(std::string_view line);

// Thread-safe. Append must be quick: RunState calls it under its lock.
class RunJournal {
 public:
  virtual ~RunJournal() = default;
  virtual void Append(const JournalEvent& event) = 0;
};

// JSON lines appended to a file (one write(2) per event, O_APPEND): a coordinator killed at any moment leaves at
// most a torn last line, which Read ignores.
class FileRunJournal final : public RunJournal {
 public:
  static absl::StatusOr<std::unique_ptr<FileRunJournal>> Open(const std::string& path);
  static absl::StatusOr<std::vector<JournalEvent>> Read(const std::string& path);
  ~FileRunJournal() override;
  void Append(const JournalEvent& event) override;

 private:
  explicit FileRunJournal(int fd) : fd_(fd) {}
  absl::Mutex mu_;
  int fd_;
};

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_RUN_JOURNAL_H_

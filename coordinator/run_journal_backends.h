// Run journals kept where the project's history store lives: the file journal beside the run for `file:` stores,
// a Redis list or a PostgreSQL table for fleets, so a coordinator restarted on another machine (or in a fresh
// container) resumes the run. Every backend stores the same lines (EncodeJournalEvent); run_journal_contract_test
// holds them all to one contract.
#ifndef TESTSHARD_COORDINATOR_RUN_JOURNAL_BACKENDS_H_
#define TESTSHARD_COORDINATOR_RUN_JOURNAL_BACKENDS_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/run_journal.h"

namespace testshard::coordinator {

// Where one run's journal lines are kept on a server (run_journal_servers.h: Redis, PostgreSQL). Thread-safe (one
// connection under a mutex). Append of a batch is atomic (all lines or none), which lets QueuedRunJournal tell, after
// an error, whether it landed. Errors: kUnavailable when the server cannot be reached, kDataLoss never (lines are
// opaque here).
class JournalLog {
 public:
  virtual ~JournalLog() = default;
  // Appends `lines` after every line appended before, in order.
  virtual absl::Status Append(const std::vector<std::string>& lines) = 0;
  // Every line of the run, in the order appended; empty for a run never journaled.
  virtual absl::StatusOr<std::vector<std::string>> ReadAll() = 0;
  // How many lines the run has.
  virtual absl::StatusOr<int64_t> Count() = 0;
  virtual std::string Describe() const = 0;
};

// A RunJournal over a JournalLog. Append only encodes the event and queues the line: RunState calls it under its
// lock, and a network round trip (or a 10 s timeout to a lost server) must not stall the coordinator. One writer
// thread sends whatever has queued, in order, as one batch.
//
// When the log cannot be written the run goes on: the journal only saves work on a restart, and failing the run
// would lose far more than it protects. The failure is logged once, loudly; lines stay queued (in memory, a few
// hundred bytes per test) and are retried with back-off, so the stored journal is always a prefix of the run's
// events — exactly what a kill leaves, which Restore handles — and catches up when the server is back. A retry
// first asks the log how many lines it holds, so a batch whose acknowledgement was lost is not stored twice.
// What is still queued when the journal is destroyed gets one last attempt; lost lines only mean that a resumed
// run repeats those tests.
//
// Thread-safe.
class QueuedRunJournal final : public RunJournal {
 public:
  // `stored`: how many lines `log` already holds (a resumed run appends after them).
  QueuedRunJournal(std::unique_ptr<JournalLog> log, int64_t stored);
  ~QueuedRunJournal() override;
  void Append(const JournalEvent& event) override;
  // Blocks until every line appended so far is stored, or `timeout` passes. True when all are stored. (Tests and
  // shutdown; never called under RunState's lock.)
  bool Flush(absl::Duration timeout);

 private:
  void WriterLoop();

  const std::unique_ptr<JournalLog> log_;
  absl::Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // lines the writer took and has not yet stored
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t stored_;  // lines the log holds, as far as the writer knows; the writer thread's alone once started
  std::thread writer_;
};

// The journal of run `run_id` of `project`, kept where HistoryStoreSpec says the history lives: a FileRunJournal at
// RUN_DIR/journal.jsonl for file: specs (whatever their directory: the run's own directory holds its artifacts too), a
// QueuedRunJournal over a RedisJournalLog or PostgresJournalLog otherwise. `resume`: the run already has a journal that
// new events follow. kUnavailable when the server cannot be reached, kInvalidArgument for an unknown spec.
absl::StatusOr<std::unique_ptr<RunJournal>> OpenRunJournal(std::string_view history_spec, std::string_view project,
                                                           std::string_view run_id, const std::string& run_dir,
                                                           bool resume = false);

// Reads back what OpenRunJournal's journal stored. kNotFound when the run has no journal (no file, or no events
// on the server), kDataLoss when a stored line cannot be decoded.
absl::StatusOr<std::vector<JournalEvent>> ReadRunJournal(std::string_view history_spec, std::string_view project,
                                                         std::string_view run_id, const std::string& run_dir);

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_RUN_JOURNAL_BACKENDS_H_

// What `testshard run` and `testshard coordinator` share: a RunState served over gRPC, a live progress line per
// stage, the JUnit report and the summary.
#ifndef TESTSHARD_COORDINATOR_MAIN_SESSION_H_
#define TESTSHARD_COORDINATOR_MAIN_SESSION_H_

#include <csignal>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/history/history_store.h"
#include "common/wire.h"
#include "coordinator/estimator.h"
#include "coordinator/grpc_service.h"
#include "coordinator/coverage_collector.h"
#include "coordinator/handoff_report.h"
#include "coordinator/run_state.h"

namespace testshard {

struct SessionOptions {
  std::string listen = "127.0.0.1:0";
  bool allow_remote_plaintext = false;
  ServerTls tls;
  int agents = 1;             // shards to plan for
  std::string branch;
  std::string token;
  std::string server_url;     // a shared database server agents should use; empty = theirs
  std::string run_id;         // names the run's databases and its directory
  std::string run_dir;        // artifacts and logs
  absl::Duration heartbeat = absl::Seconds(1);
  absl::Duration lease_ttl = absl::Seconds(15);
  bool resume = false;        // continue run `run_id` from `resume_events`
  std::vector<coordinator::JournalEvent> resume_events;  // with resume: its journal, as ReadRunJournal read it
};

// Called from the main thread only.
class Session {
 public:
  static absl::StatusOr<std::unique_ptr<Session>> Start(const Config& config, const SessionOptions& options);

  const std::string& address() const { return server_->address(); }
  const std::string& run_id() const { return run_id_; }
  coordinator::RunState& run() { return *run_; }

  // Prints progress until the run is done, `should_stop` returns true, or a SIGINT/SIGTERM arrives (which must be
  // blocked in every thread). Returns the signal number that interrupted it, or 0.
  int Watch(const std::function<bool()>& should_stop);
  // Waits up to `max_wait` for the final coverage report of every agent told the run is done (no-op without
  // coverage). Call after the run is done and before Finish().
  void WaitForCoverage(absl::Duration max_wait);
  // Writes the JUnit report (and the merged coverage when measured), records every final result in the history
  // and prints the summary; returns the run's exit code.
  int Finish(const std::string& junit_out);

 private:
  Session() = default;
  void PrintProgress(bool force);
  // Opens the history store and reads the project's records into an estimator (empty when the store cannot be
  // read: a warning, see the .cc).
  std::shared_ptr<const coordinator::DurationEstimator> OpenHistory();
  // Folds the run's results into the history store (opening it again if it could not be opened at the start).
  // Failures are warnings: the tests' outcome does not depend on it.
  void RecordHistory(const std::vector<TestSuite>& suites);

  Config config_;
  std::string run_id_;
  std::string history_spec_;                      // HistoryStoreSpec(config_)
  std::unique_ptr<history::HistoryStore> history_;  // null when it could not be opened at the start
  absl::Time started_;
  std::unique_ptr<coordinator::RunJournal> journal_;  // null when a server journal could not be opened
  std::unique_ptr<coordinator::RunState> run_;
  std::unique_ptr<coordinator::HandoffReport> handoff_;  // outlives server_, which feeds it
  std::unique_ptr<coordinator::CoverageCollector> coverage_;  // likewise; null without coverage
  std::unique_ptr<coordinator::CoordinatorServer> server_;
  std::string last_line_;
  absl::Time last_print_;
  bool tty_ = false;
};

// The branch stages are filtered on: --branch, else the CI's variable, else git's current branch, else "".
std::string DetectBranch(const std::string& flag, const std::string& dir);

// The stages whose run leases the agents run in their long-lived pytest worker (the rest start a process per
// lease): warm workers on, the pytest runner, and the agent's own database (reset = "agent") or none.
std::set<std::string> WarmStages(const Config& config);

// What agents are told to run.
v1::RunSpec BuildRunSpec(const Config& config, const std::string& server_url);

// Blocks SIGINT and SIGTERM in this thread and every thread it starts, so they can be waited for.
sigset_t BlockTerminationSignals();

}  // namespace testshard

#endif  // TESTSHARD_COORDINATOR_MAIN_SESSION_H_

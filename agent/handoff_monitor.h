// The hand-off check's eyes: samples pg_stat_activity on the agent's database server while tests run, finds the
// sessions of the agent's own test processes (HandoffLedger, ClientResolver), and snapshots the agent's database
// for tables a test process left behind. The agent sends what it finds with each completed lease.
#ifndef TESTSHARD_AGENT_HANDOFF_MONITOR_H_
#define TESTSHARD_AGENT_HANDOFF_MONITOR_H_

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/client_sockets.h"
#include "agent/handoff_check.h"
#include "common/handoff_finding.h"
#include "common/postgres/connection.h"

namespace testshard::agent {

struct HandoffMonitorOptions {
  pg::Connection admin;              // the server, as a role that sees every session's database and user
  HandoffLedger::Identity identity;
  absl::Duration interval = absl::Milliseconds(100);  // between samples
  std::string log_path;              // every session of the agent's tests, one JSON object per line; "" = none
  std::unique_ptr<ClientResolver> resolver;  // null: ProcfsClientResolver over this process's descendants
};

// Thread-safe: a sampling thread of its own; every method may be called from any thread (the agent's control
// thread does). Methods that query the server do so without holding the lock.
class HandoffMonitor {
 public:
  // Connects once to check the server answers, then starts sampling.
  static absl::StatusOr<std::unique_ptr<HandoffMonitor>> Start(HandoffMonitorOptions options);
  ~HandoffMonitor();  // Stop()

  // The database the agent hands its tests from now on. The first time a database is handed it is fresh from the
  // template: its tables then are the baseline leftovers are measured against.
  void SetDatabase(const std::string& name);
  void SetStage(const std::string& stage);
  void TestStarted(const std::string& test_id);
  void Result(const std::string& test_id, bool failed, const std::string& message);
  // A test process ended (`cause` says how, e.g. "the pytest worker died (signal 9)"): tables it left in the
  // agent's database are remembered, and tests that fail on that database afterwards make a finding.
  void ProcessEnded(const std::string& cause);
  // Advice for the run's output that needs no sampling.
  void Note(const std::string& message);
  // Takes one more sample, then returns what was found and not yet returned.
  std::vector<HandoffFinding> Flush();
  // Ends sampling and writes the log. Idempotent.
  void Stop();

 private:
  explicit HandoffMonitor(HandoffMonitorOptions options);
  void Loop();
  // One sample: queries the server and feeds the ledger. Called from the sampling thread only.
  void Sample();
  absl::StatusOr<TableNames> Tables(const std::string& database) const;
  void WriteLog() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  HandoffMonitorOptions options_;
  struct Sampler;                     // the sampling thread's connection; touched by that thread only
  std::unique_ptr<Sampler> sampler_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  HandoffLedger ledger_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, TableNames> baselines_ ABSL_GUARDED_BY(mu_);  // each database's tables when first handed
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t samples_wanted_ ABSL_GUARDED_BY(mu_) = 0;  // Flush() asks for one more
  int64_t samples_done_ ABSL_GUARDED_BY(mu_) = 0;
  bool sampling_ ABSL_GUARDED_BY(mu_) = false;        // a sample is being taken (it may predate a Flush)
  std::string last_error_ ABSL_GUARDED_BY(mu_);      // logged once per distinct error
};

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_HANDOFF_MONITOR_H_

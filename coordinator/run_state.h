// The state of one run: its stages in order, the leases handed to agents, and every test's result. Pure logic
// (no gRPC, no I/O): the gRPC service translates calls into these methods, and tests drive it with a FakeClock.
#ifndef TESTSHARD_COORDINATOR_RUN_STATE_H_
#define TESTSHARD_COORDINATOR_RUN_STATE_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/test_result.h"
#include "coordinator/estimator.h"
#include "coordinator/planner.h"
#include "coordinator/run_journal.h"

namespace testshard::coordinator {

enum class LeaseKind { kDiscover, kRun };

struct LeaseInfo {
  std::string id;
  LeaseKind kind = LeaseKind::kRun;
  std::string agent_id;
  std::string stage;
  std::string markers;
  std::vector<std::string> test_ids;
  absl::Time deadline;
  absl::Duration timeout;       // for the child process; zero = none
  absl::Duration test_timeout;  // for one test; zero = none
  int maxfail = 0;
  std::string group_marker;     // discovery: the stage's group marker, whose keys the agent should return
  double predicted_s = 0;       // run: the batch's predicted seconds (Batch::predicted_s)
};

struct Work {
  enum Kind { kLease, kWait, kDone } kind = kWait;
  LeaseInfo lease;
  absl::Duration retry_after;
  std::string reason;  // kDone
};

struct LeaseUpdate {
  std::string lease_id;
  absl::Time deadline;
  bool cancelled = false;
  std::string reason;
};

// How a lease ended, as the agent reports it.
struct Completion {
  enum Status { kOk, kCollectionError, kCrashed, kTimedOut, kCancelled, kInfraError } status = kOk;
  int exit_code = 0;
  std::string error;
  std::string stderr_tail;
  std::vector<std::string> collected;    // discovery leases
  std::vector<std::string> groups;       // discovery leases: empty, or a group key per collected id ("" = none)
  std::vector<std::string> unattempted;  // run leases: never started, to be run again
  double wall_s = 0;                     // run leases: wall time, start-up included; 0 = not measured
  double worker_start_s = 0;             // run leases: the part of wall_s spent starting a warm worker
};

enum class StageStatus { kPending, kDiscovering, kRunning, kPassed, kFailed, kSkipped, kCancelled };
std::string_view StageStatusName(StageStatus s);

struct StageProgress {
  std::string name;
  StageStatus status = StageStatus::kPending;
  std::string note;  // why it was skipped, failed to collect, or was cancelled
  int total = 0, done = 0, passed = 0, failed = 0, errors = 0, skipped = 0, not_run = 0, flaky = 0;
  absl::Duration elapsed;
  // Once planned: how many of the planned tests the history knew (their own duration, not a relative's).
  int planned = 0, known = 0;
  // While running: seconds until the stage ends, from the predicted work without a result (scaled by how the
  // stage's results so far compare with their predictions) over the live agents. Negative: not known yet (no
  // test of the stage is in the history and none has reported a duration).
  double eta_s = -1;
};

struct RunOptions {
  std::vector<StageConfig> stages;
  std::string branch;                         // for stages limited to some branches
  int expected_agents = 1;                    // shards to plan for when fewer have registered yet
  absl::Duration lease_ttl = absl::Seconds(30);  // renewed by every heartbeat
  absl::Duration wait_hint = absl::Milliseconds(100);
  RunJournal* journal = nullptr;              // where results are kept for a restart; may be null
  int generation = 0;                         // restarts so far: lease ids never repeat across restarts
  // Predicted durations (from the history). Null: none, every test counts the same (1 s).
  std::shared_ptr<const DurationEstimator> estimator;
  // Per-batch start-up assumed for an agent not yet measured: for stages whose batches run in the agents' warm
  // pytest workers (`warm_stages`), and for those that start a pytest process per batch.
  std::set<std::string> warm_stages;
  double warm_startup_s = 0.05;
  double process_startup_s = 2;
};

// pytest-like exit codes.
enum ExitCode { kExitOk = 0, kExitTestsFailed = 1, kExitInterrupted = 2, kExitInternalError = 3, kExitNoTests = 5 };

// Thread-safe monitor: every method may be called from any thread (the gRPC service's reactors, the progress
// printer). No I/O happens under its lock.
class RunState {
 public:
  RunState(RunOptions options, std::unique_ptr<Planner> planner, Clock* clock);

  // Rebuilds the run from a journal before serving: results are kept, collected stages are re-planned with the
  // tests that have no result yet. Events for stages the config no longer has are an error.
  absl::Status Restore(const std::vector<JournalEvent>& events);

  std::string RegisterAgent(const std::string& name);
  bool KnownAgent(const std::string& agent_id) const;

  // The next piece of work for an agent that is free.
  Work NextWork(const std::string& agent_id);

  // Renews the agent's leases; tells it which to cancel. A lease the coordinator no longer holds for this agent is
  // reported cancelled so the agent stops working on it.
  std::vector<LeaseUpdate> Heartbeat(const std::string& agent_id, const std::vector<std::string>& lease_ids);

  // Per-test results for a lease. FailedPrecondition when the lease is unknown, expired, completed or not this
  // agent's (so a late agent never counts a test twice); InvalidArgument for a test the lease does not hold.
  // `cancel_reason`, when given, is set to why the lease was cancelled (empty while it is live), so agents hear
  // of a cancel with every report rather than only on their next heartbeat.
  absl::Status ReportResults(const std::string& agent_id, const std::string& lease_id,
                             const std::vector<TestCase>& results, std::string* cancel_reason = nullptr);

  // Ends a lease. Tests of a run lease left without a result become errors carrying the completion's reason.
  absl::Status CompleteLease(const std::string& agent_id, const std::string& lease_id, const Completion& completion);

  // FailedPrecondition unless the lease is live and held by the agent (artifact uploads check this first).
  absl::Status CheckLease(const std::string& agent_id, const std::string& lease_id);

  // Stops the run: outstanding leases are cancelled, unfinished tests become "not run" with `reason`.
  void Cancel(const std::string& reason);

  // Moves expired leases back to the queue. Called by the other methods too; call it periodically.
  void ExpireLeases();
  // The agents named `name` are known to be gone (their process exited): their leases expire now rather than
  // after the lease TTL.
  void AgentGone(const std::string& name);

  bool done() const;
  // True once every registered agent has been told the run is done (so the server may stop), or has been silent
  // for longer than a lease's TTL (killed or cut off: nobody is left to tell).
  bool AgentsDismissed() const;
  // Agents that take no more work, with the reason.
  std::map<std::string, std::string> DrainedAgents() const;
  // What the completed batches showed of each registered agent (by id), for a stage whose batches run warm or
  // one process each: the per-batch start-up (wall time not spent in tests) and the pace against the history.
  // Fields stay at AgentProfile's "unknown" values until measured.
  std::map<std::string, AgentProfile, std::less<>> AgentProfiles(bool warm) const;
  // Blocks until done() or `deadline`; true when done.
  bool WaitDone(absl::Time deadline) const;
  int exit_code() const;
  std::vector<StageProgress> Progress() const;
  // One suite per stage that collected tests, every collected test exactly once.
  std::vector<TestSuite> Report() const;

 private:
  struct Stage {
    StageConfig config;
    StageStatus status = StageStatus::kPending;
    std::string note;
    std::vector<std::string> order;          // collection order
    std::map<std::string, std::string> groups;  // id -> its group marker's key, for grouped tests only
    Granularity granularity = Granularity::kTest;
    // Planning and progress: predicted seconds of the planned tests that have no final result yet, and what the
    // reported results took against what was predicted for them.
    int planned = 0, known = 0;
    double remaining_s = 0;
    double reported_predicted_s = 0, reported_actual_s = 0;
    std::map<std::string, TestCase> results;  // id -> final result, once known
    std::set<std::string> collected;
    std::unique_ptr<StageQueue> queue;
    int failures = 0;                        // final failures, after retries, for maxfail
    std::map<std::string, std::vector<TestAttempt>> attempts;  // failed attempts awaiting a retry
    struct Retry {
      std::string id;
      std::string failed_on;  // the agent whose attempt failed: the retry prefers another
      absl::Time since;
    };
    std::vector<Retry> retries;
    bool cancelling = false;
    absl::Time started, finished;
  };
  // What an agent's completed batches of one kind (warm, or a process each) showed: per batch, its number of
  // tests n and its overhead y, the wall time not spent in tests (start-up, and each test's dispatch, result
  // round trip and pytest's own bookkeeping). Sums for fitting y = startup + n * per_test.
  struct Pace {
    int batches = 0;
    double sum_n = 0, sum_nn = 0, sum_y = 0, sum_ny = 0;
    void Add(double n, double y);
    AgentProfile Fit() const;  // startup_s and per_test_s; speed unset
  };
  struct AgentStats {
    std::string name;
    int results = 0, failures = 0;
    std::string drained;  // why it takes no more work
    absl::Time last_seen;  // its last registration, heartbeat or request for work
    Pace warm, process;
    // Tests whose estimate was their own history: predicted against actual seconds, for the agent's speed.
    double known_predicted_s = 0, known_actual_s = 0;
  };
  struct Lease {
    LeaseInfo info;
    enum State { kActive, kCancelled, kExpired, kCompleted } state = kActive;
    std::string cancel_reason;
    std::set<std::string> reported;
    bool from_queue = false;  // the batch came from the stage's queue (not the retries), so it reports to it
    double actual_s = 0;      // sum of the reported tests' durations
    double known_predicted_s = 0, known_actual_s = 0;  // the same for tests the history knew
  };

  Stage* CurrentStage() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeFinishStage(Stage& stage) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CancelStage(Stage& stage, const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes one attempt at a test: final, or queued for a retry. Journals it.
  void Record(Stage& stage, const std::string& agent_id, TestCase tc) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a result the coordinator decided (not run, collection error) as final.
  void Finalize(Stage& stage, TestCase tc) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndStage(Stage& stage, StageStatus status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Journal(JournalEvent e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool restoring_ ABSL_GUARDED_BY(mu_) = false;
  Lease* FindLease(const std::string& agent_id, const std::string& lease_id, absl::Status* why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Stage* StageByName(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  LeaseInfo NewLease(const std::string& agent_id, Stage& stage, LeaseKind kind) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ActiveLeases(const Stage& stage) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<Batch> NextRetries(Stage& stage, const std::string& agent_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Plans `ids` of `stage` into a fresh queue, with the estimates, groups and agent profiles known now.
  void PlanStage(Stage& stage, std::vector<std::string> ids) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  double EstimateOf(const std::string& id) const;
  bool Warm(const Stage& stage) const { return options_.warm_stages.count(stage.config.name) > 0; }
  // A run lease ended normally: feeds what it took to the stage's queue and the agent's profile.
  void LearnFromLease(Stage& stage, const Lease& lease, const Completion& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::map<std::string, AgentProfile, std::less<>> ProfilesLocked(bool warm) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeDrain(const std::string& agent_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Seen(const std::string& agent_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RunOptions options_;
  Clock* const clock_;
  mutable absl::Mutex mu_;
  std::unique_ptr<Planner> planner_ ABSL_GUARDED_BY(mu_);
  std::vector<Stage> stages_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Lease> leases_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, AgentStats> agents_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> dismissed_ ABSL_GUARDED_BY(mu_);            // agents told the run is done
  int next_agent_ ABSL_GUARDED_BY(mu_) = 0;
  int next_lease_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool internal_error_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_RUN_STATE_H_

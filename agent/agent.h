// The agent: connects out to a coordinator, provisions its database, and runs leases one at a time as child
// processes, streaming results back. One control thread (lease -> run -> report) plus a heartbeat thread.
#ifndef TESTSHARD_AGENT_AGENT_H_
#define TESTSHARD_AGENT_AGENT_H_

#include <atomic>
#include <deque>
#include <set>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/coverage_recorder.h"
#include "agent/database.h"
#include "agent/database_scopes.h"
#include "agent/handoff_monitor.h"
#include "agent/pytest_worker.h"
#include "agent/runner_adapter.h"
#include "common/postgres/embedded_postgres.h"
#include "common/process.h"
#include "grpcpp/grpcpp.h"
#include "testshard/v1/coordinator.grpc.pb.h"

namespace testshard::agent {

struct AgentOptions {
  std::string coordinator;  // gRPC address, e.g. 127.0.0.1:7070 or unix:/path
  std::string token;
  std::string name;
  std::string root;         // the project checkout; the run's workdir is relative to it
  std::string work_dir;     // scratch for reports and logs; created if missing
  // Admin connection of the server to clone databases on. Unset: the coordinator's server_url, else the agent
  // starts an embedded server of its own (done by the caller, which owns its lifetime).
  std::optional<pg::Connection> database_admin;
  // Starts a server of the agent's own when neither of the above names one; called from Run()'s thread.
  // The options carry what the run asks of it (tcp: listen on loopback TCP and return that connection).
  std::function<absl::StatusOr<pg::Connection>(const pg::EmbeddedOptions&)> start_embedded_server;
  absl::Duration connect_timeout = absl::Seconds(60);  // how long to keep retrying an unreachable coordinator
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // null = plaintext
};

// Run() is called once, from one thread; Stop() from any thread (a signal handler thread).
class Agent {
 public:
  Agent(AgentOptions options, ProcessRunner* runner);
  ~Agent();

  // Works until the coordinator says the run is done. Returns OK then; an error when it could not take part.
  absl::Status Run();
  // Asks Run() to cancel the current lease and return.
  void Stop();

 private:
  // A lease the agent holds; the heartbeat thread renews it and flags a cancel.
  struct Active {
    std::string lease_id;
    Cancellation cancel;
    std::string cancel_reason;
  };
  // A run lease whose tests are queued in the warm worker.
  struct InFlight {
    v1::Lease lease;
    std::shared_ptr<Active> active;
    std::set<std::string> pending;  // no result yet
    std::vector<TestCase> unsent;   // results not yet reported
    bool lost = false;              // the coordinator refused it (expired): its results are dropped
    int failures = 0;
    absl::Time started;              // when the lease was taken
    absl::Duration worker_start;     // the part of it spent starting the worker, when this lease had to
  };

  absl::Status Register();
  absl::Status PrepareDatabase();
  ResetPolicy ResetFor(const v1::Lease& lease) const;
  // The database a lease runs against (stages with reset = "stage" | "shard" get their own), or an error when the
  // agent's database is broken.
  absl::Status AcquireForLease(const v1::Lease& lease);
  void ReleaseForLease(const std::string& lease_id);
  std::map<std::string, std::string> ChildEnv(const v1::Lease* lease) const;
  std::string Workdir() const;
  std::shared_ptr<Active> Hold(const std::string& lease_id);
  void Release(const std::string& lease_id);

  // One process per lease (runners without a worker, or warm = false).
  absl::Status RunOneShot(const v1::Lease& lease);
  absl::Status Discover(const v1::Lease& lease);
  absl::Status RunTests(const v1::Lease& lease);

  // The warm path.
  bool UseWorker() const;
  absl::Status EnsureWorker();
  absl::Status DiscoverWarm(const v1::Lease& lease);
  // Queues a run lease, taken at `taken`, in the worker (`worker_start`: what starting the worker for it took).
  void StartWarm(const v1::Lease& lease, absl::Time taken, absl::Duration worker_start);
  // Handles worker events for up to `timeout`: results, completions, hangs, crashes and cancels.
  void Pump(absl::Duration timeout);
  // Waits until every in-flight lease is complete (flushing the held-back test first).
  void Drain();
  // Kills the worker; the running test gets `why` as its error, the other unfinished tests go back to the queue
  // (or are "not run" when their lease was cancelled).
  void AbortWorker(const std::string& why, v1::CompleteLeaseRequest::Status status);
  void SendResults(InFlight& f, bool force);
  void CompleteFinished();
  bool HoldingLastTest() const;

  absl::Status Complete(v1::CompleteLeaseRequest req);
  absl::Status Upload(const std::string& lease_id, const std::string& path, const std::string& kind);
  // Streams `path` (none: `header` alone) with `header`'s fields on the first chunk.
  absl::Status Upload(v1::ArtifactChunk header, const std::string& path);
  // The run is done: combines everything this agent measured and uploads it (or why there is nothing).
  void SendCoverage();
  void HeartbeatLoop();
  std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout = absl::Seconds(30)) const;

  const AgentOptions options_;
  ProcessRunner* const runner_;
  std::unique_ptr<RunnerAdapter> adapter_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::string agent_id_;          // written by the control thread only; the heartbeat thread reads heartbeat_id_
  std::string run_id_;
  v1::RunSpec spec_;
  absl::Duration heartbeat_interval_ = absl::Seconds(1);
  std::unique_ptr<DatabaseProvisioner> provisioner_;
  std::unique_ptr<DatabaseScopes> databases_;       // destroyed before provisioner_
  std::optional<Database> database_;                // the agent's own (the warm worker's)
  std::map<std::string, Database> lease_databases_;  // leases whose stage resets: their own, one-shot
  absl::Status database_error_;
  std::vector<std::string> warnings_;               // sent with the next completed lease
  // The hand-off check (agent/handoff.h): null when the run has no database or turned it off.
  std::unique_ptr<HandoffMonitor> handoff_;
  std::unique_ptr<CoverageRecorder> coverage_;      // null unless the run measures coverage

  // Control-thread state for the warm worker.
  std::unique_ptr<PytestWorker> worker_;
  bool worker_disabled_ = false;   // it could not start: one-shot runs from then on
  int worker_generation_ = 0;
  int crashes_without_progress_ = 0;
  std::deque<InFlight> inflight_;
  bool flushed_ = false;           // the held-back test was told to run
  std::string running_;            // the test the worker reported starting, until its result
  absl::Time running_since_;
  absl::Time last_send_;

  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Active>> active_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string heartbeat_id_ ABSL_GUARDED_BY(mu_);
};

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_AGENT_H_

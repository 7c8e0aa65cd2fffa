// The agent: connects out to a coordinator, provisions its database, and runs leases one at a time as child
// processes, streaming results back. One control thread (lease -> run -> report) plus a heartbeat thread.
#ifndef TESTSHARD_AGENT_AGENT_H_
#define TESTSHARD_AGENT_AGENT_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/database.h"
#include "agent/database_scopes.h"
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
  std::function<absl::StatusOr<pg::Connection>(const pg::EmbeddedOptions&)> start_embedded_server;
  absl::Duration connect_timeout = absl::Seconds(60);  // how long to keep retrying an unreachable coordinator
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
  struct Active {
    std::string lease_id;
    Cancellation cancel;
    std::string cancel_reason;
  };

  absl::Status Register();
  absl::Status PrepareDatabase();
  ResetPolicy ResetFor(const std::string& stage) const;
  absl::Status RunLease(const v1::Lease& lease);
  absl::Status Discover(const v1::Lease& lease, const std::string& dir, const std::map<std::string, std::string>& env);
  absl::Status RunTests(const v1::Lease& lease, const std::string& dir, const std::map<std::string, std::string>& env);
  absl::Status Complete(v1::CompleteLeaseRequest req);
  absl::Status Upload(const std::string& lease_id, const std::string& path, const std::string& kind);
  void HeartbeatLoop();
  std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout = absl::Seconds(30)) const;

  const AgentOptions options_;
  ProcessRunner* const runner_;
  std::unique_ptr<RunnerAdapter> adapter_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::string agent_id_;
  std::string run_id_;
  v1::RunSpec spec_;
  absl::Duration heartbeat_interval_ = absl::Seconds(1);
  std::unique_ptr<DatabaseProvisioner> provisioner_;
  std::unique_ptr<DatabaseScopes> databases_;  // destroyed before provisioner_
  absl::Status database_error_;
  std::vector<std::string> warnings_;          // sent with the next completed lease

  absl::Mutex mu_;
  std::shared_ptr<Active> active_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_AGENT_H_

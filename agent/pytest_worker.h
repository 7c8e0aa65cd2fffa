// A warm pytest process: started once per agent with testshard's worker plugin, it collects the suite once and then
// runs the test ids it is sent, reporting each test as it starts and ends. The agent keeps it across leases and
// stages, so pytest's start-up (interpreter, imports, session fixtures) is paid once per agent, not once per shard.
#ifndef TESTSHARD_AGENT_PYTEST_WORKER_H_
#define TESTSHARD_AGENT_PYTEST_WORKER_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/process.h"
#include "common/test_result.h"
#include "nlohmann/json.hpp"

namespace testshard::agent {

struct WorkerOptions {
  std::vector<std::string> command;        // the project's pytest argv prefix
  std::string cwd;
  std::map<std::string, std::string> env;  // the run's env and the database hand-off
  std::string plugin_dir;                  // holds testshard_worker.py
  std::string scratch_dir;                 // socket and log
  absl::Duration startup_timeout = absl::Minutes(5);
};

// One message from the worker.
struct WorkerEvent {
  enum Kind { kStart, kResult, kUnknown, kExited } kind;
  std::string id;
  TestCase result;            // kResult
  ProcessResult exit;         // kExited
};

// Not thread-safe; owned by the agent's control thread.
class PytestWorker {
 public:
  // Starts pytest and waits until it has collected. A collection error is FailedPrecondition with pytest's text.
  static absl::StatusOr<std::unique_ptr<PytestWorker>> Start(const WorkerOptions& options);
  ~PytestWorker();

  // The collected ids a marker expression selects, in collection order (what `pytest -m EXPR` would run). With a
  // `group_marker` and `groups`, also each selected test's group key for that marker ("" for tests without it):
  // its first argument, else its keyword arguments, else the marker's name, so tests with equal keys stay together.
  absl::StatusOr<std::vector<std::string>> Select(const std::string& markers, const std::string& group_marker = "",
                                                  std::vector<std::string>* groups = nullptr);
  // Queues tests; the last one is held back until Run or Flush says what follows it.
  absl::Status Run(const std::vector<std::string>& ids);
  // Runs the held-back test now (its module's fixtures are torn down after it).
  absl::Status Flush();
  // Waits up to `timeout` for the next event; nullopt on timeout.
  std::optional<WorkerEvent> Next(absl::Duration timeout);
  // Finishes the session (fixtures torn down, coverage written) and waits for the process to exit.
  void Stop(absl::Duration grace = absl::Seconds(30));
  // Kills the worker's whole process group at once.
  void Kill();
  const std::string& log_path() const { return log_path_; }
  int collected() const { return collected_; }

 private:
  PytestWorker() = default;
  absl::Status Send(const nlohmann::json& message);
  // Reads one JSON line; nullopt on timeout; an error when the worker closed the socket or wrote garbage.
  absl::StatusOr<std::optional<nlohmann::json>> Read(absl::Duration timeout);
  WorkerEvent Exited();

  std::optional<Subprocess> process_;
  int fd_ = -1;
  std::string buffer_;
  std::string log_path_;
  std::string socket_path_;
  int collected_ = 0;
  bool exited_ = false;
};

// Where testshard_worker.py is shipped: next to the binary's share directory, or TESTSHARD_PLUGIN_DIR.
std::string DefaultPluginDir();

// Turns a worker "result" message into a TestCase.
TestCase ResultFromMessage(const nlohmann::json& m);

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_PYTEST_WORKER_H_

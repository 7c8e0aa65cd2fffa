// Coverage on one agent (issue 9). Every pytest process the agent starts (the warm worker, a restarted worker, each
// one-shot batch) measures with pytest-cov into a data directory of its own, so no process can erase or combine
// away another's data; testshard_coverage.py saves the data after every test, so a worker that crashes loses only
// the test it was running. When the run is done, Report() combines every directory with the interpreter that ran
// the tests and writes one Cobertura file, which the agent uploads with its project root.
#ifndef TESTSHARD_AGENT_COVERAGE_RECORDER_H_
#define TESTSHARD_AGENT_COVERAGE_RECORDER_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/process.h"
#include "testshard/v1/coordinator.pb.h"

namespace testshard::agent {

// Not thread-safe: owned by the agent's control thread.
class CoverageRecorder {
 public:
  // `dir` is the agent's own (under its work dir) and is emptied: data from an earlier run must not be reported.
  CoverageRecorder(v1::CoverageSpec spec, std::string dir, std::string plugin_dir);

  // Makes one pytest process measure: pytest-cov's flags go after `command` (the runner's argv prefix), and `env`
  // gets the process's own data file. `kind` ("worker", "batch") names its directory.
  void Apply(std::string_view kind, std::vector<std::string>* command, std::map<std::string, std::string>* env);

  // Combines the data of every process so far and writes a Cobertura report into the recorder's directory;
  // returns its path. With no data (the agent ran no tests) the report is valid and empty. Runs the helper as a
  // child from an argv (cwd = the run's workdir, so the project's coverage configuration applies).
  absl::StatusOr<std::string> Report(ProcessRunner* runner, const std::string& workdir,
                                     const std::map<std::string, std::string>& env,
                                     absl::Duration timeout = absl::Minutes(10));

  const std::string& dir() const { return dir_; }

 private:
  const v1::CoverageSpec spec_;
  const std::string dir_;
  const std::string plugin_dir_;
  int processes_ = 0;
};

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_COVERAGE_RECORDER_H_

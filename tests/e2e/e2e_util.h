// Helpers for end-to-end tests: a throwaway project directory, the testshard binary run as a child process, and
// the JUnit report it wrote, read back.
#ifndef TESTSHARD_TESTS_E2E_E2E_UTIL_H_
#define TESTSHARD_TESTS_E2E_E2E_UTIL_H_

#include <map>
#include <string>
#include <vector>

#include "common/process.h"
#include "common/test_result.h"

namespace testshard::e2e {

struct ReportedCase {
  std::string suite;
  std::string classname, name;
  Outcome outcome = Outcome::kPassed;
  std::string message;
  std::map<std::string, std::string> properties;
};

struct Report {
  bool parsed = false;
  std::string error;
  std::vector<ReportedCase> cases;
  // classname + "::" + name -> how often it appears.
  std::map<std::string, int> Appearances() const;
  int Count(Outcome o) const;
};

Report ReadReport(const std::string& path);

// A session the hand-off check attributed to an agent's tests (agent-N/handoff-sessions.jsonl in the run's
// directory): what pg_stat_activity showed for it.
struct AgentSession {
  std::string agent_dir;  // "agent-1", ...
  std::string database, user, application_name, query;
  bool tagged = false;    // recognised by application_name, not by its client process
  bool own = false;       // the agent's database, one derived from it, or maintenance
};
// Every agent's sessions in run `run_id` (default: the latest) under `project_dir`/.testshard/runs.
std::vector<AgentSession> ReadAgentSessions(const std::string& project_dir, const std::string& run_id = "latest");
// The run id `testshard run` printed ("testshard: run <id>, ..."); empty when there is none.
std::string RunIdFromOutput(const std::string& output);

class Project {
 public:
  Project();
  ~Project();
  const std::string& dir() const { return dir_; }
  void Write(const std::string& relative, const std::string& text) const;
  std::string Read(const std::string& relative) const;

  struct Result {
    ProcessResult process;
    std::string output;
  };
  // Runs `testshard args...` in the project directory.
  Result Testshard(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {},
                   absl::Duration timeout = absl::Minutes(5)) const;
  // Starts `testshard args...` in the project directory without waiting for it; its output goes to `log` (relative
  // to the project). TESTSHARD_BRANCH defaults to "main", as in Testshard.
  Subprocess Start(const std::vector<std::string>& args, const std::string& log,
                   std::map<std::string, std::string> env = {}, absl::Duration timeout = absl::Minutes(4)) const;

 private:
  std::string dir_;
};

// A pytest.ini registering the markers the suites below use, with strict markers.
extern const char kPytestIni[];

}  // namespace testshard::e2e

#endif  // TESTSHARD_TESTS_E2E_E2E_UTIL_H_

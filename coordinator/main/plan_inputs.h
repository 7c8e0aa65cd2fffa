// What `testshard plan` and `testshard split` share: the flags that say where the tests and the history come
// from, and loading them into a PlanRequest.
#ifndef TESTSHARD_COORDINATOR_MAIN_PLAN_INPUTS_H_
#define TESTSHARD_COORDINATOR_MAIN_PLAN_INPUTS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "coordinator/estimator.h"
#include "coordinator/planner.h"

namespace testshard {

struct PlanInputFlags {
  std::string config;          // testshard.toml / pyproject.toml; found from the current directory when empty
  std::string stage;           // the stage whose tests are collected
  std::string tests_from;      // a file of collected ids, one per line ("-" = stdin); skips config and collection
  std::string store = "file:.testshard";
  std::string project;         // the history's project; default: the config's, else the directory's name
  std::string granularity = "test";
  double startup_s = 2;        // per-shard start-up (pytest start, imports, database connection)
  double default_s = 1;        // estimate for every test when the project has no history at all
};

void AddPlanInputFlags(CLI::App* cmd, PlanInputFlags* flags);

struct PlanInputs {
  coordinator::PlanRequest request;  // test_ids, estimate, granularity, start-up; agents left to the caller
  std::shared_ptr<coordinator::DurationEstimator> estimator;
  std::vector<std::string> command;  // the config's runner command, when a config was read
  std::string workdir;
  std::map<std::string, std::string> env;
};

// Reads the test ids (--tests-from, else the config's command collecting --stage's markers), and the project's
// history from --store. A store that cannot be read is an error, not an empty history: matrix jobs that saw
// different histories would split differently, and tests would be run twice or not at all.
absl::StatusOr<PlanInputs> LoadPlanInputs(const PlanInputFlags& flags);

// Prints "testshard: MESSAGE" to stderr and returns pytest's exit code for it (4 usage, 3 internal).
int ReportFailure(const absl::Status& status);

}  // namespace testshard

#endif  // TESTSHARD_COORDINATOR_MAIN_PLAN_INPUTS_H_

// testshard split: static matrix mode. Every CI job computes the same partition from the same history and
// collection, and runs its own shard; no coordinator is involved. Under Bazel (shard_count on a test that runs
// `testshard split`), the shard comes from TEST_SHARD_INDEX/TEST_TOTAL_SHARDS instead of the flags.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "bazel_compat/sharding_env.h"
#include "common/junit_writer.h"
#include "coordinator/lpt_planner.h"
#include "coordinator/main/commands.h"
#include "coordinator/main/plan_inputs.h"

namespace testshard {

void AddSplitCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand(
      "split", "Run shard INDEX of TOTAL of a stage (CI matrix mode); the same split on every job");
  auto flags = std::make_shared<PlanInputFlags>();
  auto index = std::make_shared<int>(-1);
  auto total = std::make_shared<int>(0);
  auto dry_run = std::make_shared<bool>(false);
  auto command = std::make_shared<std::vector<std::string>>();
  AddPlanInputFlags(cmd, flags.get());
  auto* index_opt = cmd->add_option("--index", *index, "This job's shard, 0-based (default: $TEST_SHARD_INDEX)")
                        ->check(CLI::NonNegativeNumber);
  cmd->add_option("--total", *total, "Number of shards (matrix jobs) (default: $TEST_TOTAL_SHARDS)")
      ->check(CLI::PositiveNumber)
      ->needs(index_opt);
  index_opt->needs("--total");
  cmd->add_flag("--dry-run", *dry_run, "Print this shard's test ids, one per line, and nothing else");
  cmd->add_option("command", *command, "Runner command (after --); default: the config's command");
  cmd->callback([flags, index, total, dry_run, command, exit_code] {
    // Bazel's test sharding protocol: the flags win (and the shard variables are then ignored, valid or not);
    // without them the shard comes from the environment.
    std::map<std::string, std::string> env = bazel_compat::ProcessEnvironment();
    if (*total != 0) {
      env.erase(bazel_compat::kShardIndexVar);
      env.erase(bazel_compat::kTotalShardsVar);
    }
    auto bazel = bazel_compat::ParseShardingEnv(env);
    if (!bazel.ok()) return void(*exit_code = ReportFailure(bazel.status()));
    if (*total == 0) {
      if (!bazel->shard) {
        return void(*exit_code = ReportFailure(absl::InvalidArgumentError(
                        "give --index and --total, or set TEST_SHARD_INDEX and TEST_TOTAL_SHARDS")));
      }
      *index = bazel->shard->index;
      *total = bazel->shard->total;
    }
    if (*index >= *total) {
      *exit_code = ReportFailure(absl::InvalidArgumentError("--index must be below --total"));
      return;
    }
    // Touched before anything runs, whatever the shard's outcome: it says that this runner understood sharding,
    // not that the shard passed.
    if (!bazel->status_file.empty()) {
      if (absl::Status s = bazel_compat::TouchStatusFile(bazel->status_file); !s.ok()) {
        return void(*exit_code = ReportFailure(s));
      }
    }
    auto inputs = LoadPlanInputs(*flags);
    if (!inputs.ok()) {
      *exit_code = ReportFailure(inputs.status());
      return;
    }
    inputs->request.agents = *total;
    coordinator::StaticPlan plan = coordinator::PlanStatic(inputs->request);
    const std::vector<std::string>& ids = plan.shards[*index].test_ids;
    if (*dry_run) {
      for (const std::string& id : ids) std::printf("%s\n", id.c_str());
      *exit_code = 0;
      return;
    }
    std::fprintf(stderr, "testshard: shard %d of %d: %zu tests, predicted %.1f s (bound %.1f s)\n", *index, *total,
                 ids.size(), plan.shards[*index].predicted_s + plan.startup_s, plan.lower_bound_s);
    // An empty shard passes without running anything: a runner given no ids would run the whole suite.
    if (ids.empty()) {
      // Where a report is expected, it says "no tests" rather than being missing (a crash looks like that).
      if (!bazel->xml_output_file.empty()) {
        std::ofstream out(bazel->xml_output_file, std::ios::trunc);
        absl::Status s = WriteJunit({TestSuite{absl::StrCat("shard ", *index, " of ", *total), {}}}, out);
        if (s.ok() && !out.flush()) s = absl::InternalError("cannot write XML_OUTPUT_FILE=" + bazel->xml_output_file);
        if (!s.ok()) return void(*exit_code = ReportFailure(s));
      }
      *exit_code = 0;
      return;
    }
    std::vector<std::string> argv = command->empty() ? inputs->command : *command;
    if (argv.empty()) {
      *exit_code = ReportFailure(absl::InvalidArgumentError("no command: give one after -- or in the config"));
      return;
    }
    if (!bazel->xml_output_file.empty()) {
      // Absolute, as the runner starts in the config's workdir. A stale report from an earlier attempt must not
      // pass for this one's.
      const std::string xml = std::filesystem::absolute(bazel->xml_output_file).string();
      std::remove(xml.c_str());
      if (bazel_compat::RunsPytest(argv)) {
        auto junit = bazel_compat::PytestJunitArgs(argv, xml);
        argv.insert(argv.end(), junit.begin(), junit.end());
      }
    }
    argv.insert(argv.end(), ids.begin(), ids.end());
    // The shard's runner takes this process's place: same stdio (a CI log may be a file, which must not be
    // reopened or truncated), same process group, and its exit code is the job's. No shell is involved.
    if (!inputs->workdir.empty() && ::chdir(inputs->workdir.c_str()) != 0) {
      *exit_code = ReportFailure(absl::NotFoundError("cannot enter " + inputs->workdir));
      return;
    }
    for (const auto& [k, v] : inputs->env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> cargv;
    for (std::string& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::fflush(nullptr);
    ::execvp(cargv[0], cargv.data());
    *exit_code = ReportFailure(absl::NotFoundError(absl::StrCat("cannot run ", argv[0], ": ", std::strerror(errno))));
  });
}

}  // namespace testshard

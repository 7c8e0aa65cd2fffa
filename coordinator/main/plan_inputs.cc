#include "coordinator/main/plan_inputs.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "agent/runner_adapter.h"
#include "common/config.h"
#include "common/history/history_store.h"
#include "common/process.h"
#include "common/status.h"
#include "coordinator/work_units.h"

namespace testshard {
namespace fs = std::filesystem;

void AddPlanInputFlags(CLI::App* cmd, PlanInputFlags* f) {
  cmd->add_option("--stage", f->stage, "Stage whose tests to plan (its marker expression is collected)");
  cmd->add_option("--config", f->config, "Config file (default: testshard.toml or pyproject.toml found here)");
  cmd->add_option("--tests-from", f->tests_from,
                  "File of collected test ids, one per line ('-' for stdin), instead of collecting");
  cmd->add_option("--store", f->store, "History store: file:DIR, redis://..., unix:/PATH, postgresql://...")
      ->capture_default_str();
  cmd->add_option("--project", f->project, "History project (default: the config's project, else this directory)");
  cmd->add_option("--granularity", f->granularity, "Smallest unit a shard holds: test, class or module")
      ->check(CLI::IsMember({"test", "class", "module"}))
      ->capture_default_str();
  cmd->add_option("--startup", f->startup_s, "Per-shard start-up seconds (pytest start, imports, database)")
      ->capture_default_str();
  cmd->add_option("--default-duration", f->default_s, "Seconds per test when there is no history at all")
      ->capture_default_str();
}

namespace {

std::vector<std::string> ReadIds(std::istream& in) {
  std::vector<std::string> ids;
  std::unordered_set<std::string> seen;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (seen.insert(line).second) ids.push_back(line);
  }
  return ids;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::vector<std::string>> Collect(const Config& config, const StageConfig& stage) {
  agent::PytestAdapter adapter;
  ProcessSpec spec;
  spec.argv = adapter.CollectArgv(config.command, stage.markers);
  spec.cwd = config.workdir;
  spec.env = config.env;
  char tmpl[] = "/tmp/testshard-collect-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return absl::InternalError("cannot create a temporary directory");
  const std::string dir = tmpl;
  spec.stdout_path = dir + "/out";
  spec.stderr_path = dir + "/err";
  PosixProcessRunner runner;
  auto result = runner.Run(spec, nullptr);
  std::string out = ReadFile(spec.stdout_path), err = ReadFile(spec.stderr_path);
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (!result.ok()) return Annotate(result.status(), "collecting stage '" + stage.name + "'");
  auto ids = adapter.ParseCollection(out, *result);
  if (!ids.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("collecting stage '", stage.name, "' failed: ", ids.status().message(), "\n", err));
  }
  return ids;
}

}  // namespace

int ReportFailure(const absl::Status& status) {
  std::fprintf(stderr, "testshard: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument || status.code() == absl::StatusCode::kNotFound ? 4 : 3;
}

absl::StatusOr<PlanInputs> LoadPlanInputs(const PlanInputFlags& flags) {
  PlanInputs in;
  std::string project = flags.project;
  if (!flags.tests_from.empty()) {
    if (flags.tests_from == "-") {
      in.request.test_ids = ReadIds(std::cin);
    } else {
      std::ifstream file(flags.tests_from);
      if (!file) return absl::NotFoundError("cannot read --tests-from " + flags.tests_from);
      in.request.test_ids = ReadIds(file);
    }
  }
  // The config gives the command (split runs it), the project, and — without --tests-from — the collection.
  std::string config_path = flags.config;
  if (config_path.empty()) {
    auto found = FindConfig(fs::current_path().string());
    if (found.ok()) config_path = *found;
  }
  if (!config_path.empty()) {
    TS_ASSIGN_OR_RETURN(Config config, LoadConfig(config_path));
    in.command = config.command;
    in.workdir = config.workdir;
    in.env = config.env;
    if (project.empty()) project = config.project;
    if (flags.tests_from.empty()) {
      if (flags.stage.empty()) return absl::InvalidArgumentError("--stage is required (or --tests-from FILE)");
      const StageConfig* stage = nullptr;
      for (const StageConfig& s : config.stages) {
        if (s.name == flags.stage) stage = &s;
      }
      if (!stage) {
        std::string names;
        for (const StageConfig& s : config.stages) absl::StrAppend(&names, names.empty() ? "" : ", ", s.name);
        return absl::InvalidArgumentError(
            absl::StrCat("no stage '", flags.stage, "' in ", config.path, " (stages: ", names, ")"));
      }
      TS_ASSIGN_OR_RETURN(in.request.test_ids, Collect(config, *stage));
    }
  } else if (flags.tests_from.empty()) {
    return absl::InvalidArgumentError("no testshard.toml or [tool.testshard] here: pass --config or --tests-from");
  }
  if (project.empty()) project = fs::current_path().filename().string();

  TS_ASSIGN_OR_RETURN(auto store, history::OpenHistoryStore(flags.store));
  TS_ASSIGN_OR_RETURN(std::vector<history::TestHistory> records, store->ReadAll(project));
  in.estimator = std::make_shared<coordinator::DurationEstimator>(
      history::KnownDurations(records), coordinator::EstimatorOptions{.default_s = flags.default_s});
  auto estimator = in.estimator;
  in.request.estimate = [estimator](const std::string& id) { return estimator->Seconds(id); };
  in.request.granularity = *coordinator::ParseGranularity(flags.granularity);
  in.request.default_startup_s = flags.startup_s;
  return in;
}

}  // namespace testshard

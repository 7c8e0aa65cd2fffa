// `testshard merge`: one JUnit report and one coverage report from the artifacts of many shards (CI matrix jobs
// upload theirs; a merge job downloads them all and runs this). The library does the work; this file only reads
// flags, sorts inputs by kind and reports.
#include <malloc.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <map>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/report/coverage_merger.h"
#include "common/report/junit_merger.h"
#include "common/report/xml_stream.h"
#include "common/status.h"
#include "coordinator/main/commands.h"

namespace testshard {
namespace {

// Exit codes: the report is written in every case but usage errors.
constexpr int kExitOk = 0;
constexpr int kExitBadInput = 2;     // an input was missing, truncated, malformed, hostile or refused
constexpr int kExitWriteFailed = 3;  // an output could not be written
constexpr int kExitUsage = 4;        // pytest's code for usage errors

enum class InputKind { kJunit, kCobertura, kLcov };

struct MergeFlags {
  std::string junit_out, cobertura_out, lcov_out;
  std::string root;
  std::string suite_per = "stage";
  std::string report_name = "testshard";
  size_t max_output_bytes = 64 * 1024;
  int jobs = 0;
  std::vector<std::string> stages, input_roots, revisions;
  std::vector<std::string> inputs;
};

bool LooksLikeCoverageName(const std::string& path) {
  return absl::EndsWith(path, ".info") || absl::EndsWith(path, ".lcov") || absl::EndsWith(path, ".dat") ||
         absl::StrContains(path, "coverage") || absl::StrContains(path, "cobertura");
}

// Kind by content; an unreadable or empty file by its name, JUnit when in doubt: a missing JUnit file then
// becomes an error entry in the report, which is the failure that must not go unseen.
InputKind Classify(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[4096];
  in.read(head, sizeof head);
  std::string_view h(head, in ? sizeof head : static_cast<size_t>(in.gcount()));
  std::string root = report::SniffRootElement(h);
  if (root == "testsuites" || root == "testsuite") return InputKind::kJunit;
  if (root == "coverage") return InputKind::kCobertura;
  if (report::DetectCoverageFormat(h) == report::CoverageFormat::kLcov) return InputKind::kLcov;
  if (h.empty() && LooksLikeCoverageName(path)) {
    return absl::EndsWith(path, ".xml") ? InputKind::kCobertura : InputKind::kLcov;
  }
  return InputKind::kJunit;
}

// Parses repeated "INPUT=VALUE" flags into a map keyed by input path.
bool ParseAssignments(const std::vector<std::string>& values, const char* flag,
                      std::map<std::string, std::string>* out) {
  for (const std::string& v : values) {
    size_t eq = v.rfind('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "testshard merge: %s expects INPUT=VALUE, got '%s'\n", flag, v.c_str());
      return false;
    }
    (*out)[v.substr(0, eq)] = v.substr(eq + 1);
  }
  return true;
}

std::string Lookup(const std::map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? std::string() : it->second;
}

void Problem(const absl::Status& s) { std::fprintf(stderr, "testshard merge: error: %s\n", std::string(s.message()).c_str()); }

int RunMerge(const MergeFlags& flags) {
  // Each input's data is built, merged and freed in turn; without this glibc hands the freed memory back to the
  // kernel and faults it in again for the next input, which measured as an eighth of the merge time.
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  std::map<std::string, std::string> stage_of, root_of, revision_of;
  if (!ParseAssignments(flags.stages, "--stage", &stage_of) ||
      !ParseAssignments(flags.input_roots, "--input-root", &root_of) ||
      !ParseAssignments(flags.revisions, "--revision", &revision_of)) {
    return kExitUsage;
  }
  std::vector<std::pair<std::string, InputKind>> inputs;
  bool any_junit = false, any_coverage = false;
  for (const std::string& path : flags.inputs) {
    InputKind kind = Classify(path);
    any_junit = any_junit || kind == InputKind::kJunit;
    any_coverage = any_coverage || kind != InputKind::kJunit;
    inputs.emplace_back(path, kind);
  }
  if (any_junit && flags.junit_out.empty()) {
    std::fprintf(stderr, "testshard merge: JUnit inputs given but no --junit-out\n");
    return kExitUsage;
  }
  if (any_coverage && flags.cobertura_out.empty() && flags.lcov_out.empty()) {
    std::fprintf(stderr, "testshard merge: coverage inputs given but neither --cobertura-out nor --lcov-out\n");
    return kExitUsage;
  }

  int exit_code = kExitOk;
  report::JunitMergeOptions junit_options;
  junit_options.suite_per = flags.suite_per == "input" ? report::SuitePer::kInput : report::SuitePer::kStage;
  junit_options.write.report_name = flags.report_name;
  junit_options.write.max_text_bytes = flags.max_output_bytes;
  junit_options.read.max_text_bytes = flags.max_output_bytes;
  junit_options.threads = flags.jobs;
  auto junit = report::JunitMerger::Create(junit_options);
  if (!junit.ok()) {
    Problem(junit.status());
    return kExitWriteFailed;
  }
  report::CoverageMergeOptions coverage_options;
  coverage_options.root = flags.root;
  report::CoverageMerger coverage(coverage_options);

  // JUnit inputs are read several at a time (AddFiles keeps their order); coverage inputs one by one.
  std::vector<report::JunitFileInput> junit_inputs;
  int64_t coverage_inputs = 0;
  for (const auto& [path, kind] : inputs) {
    if (kind == InputKind::kJunit) {
      junit_inputs.push_back({path, Lookup(stage_of, path)});
      continue;
    }
    ++coverage_inputs;
    absl::Status s = coverage.AddFile({path, Lookup(root_of, path), Lookup(revision_of, path)});
    if (!s.ok()) {
      Problem(s);
      exit_code = kExitBadInput;
    }
  }
  for (const absl::Status& s : (*junit)->AddFiles(junit_inputs, flags.jobs)) {
    if (!s.ok()) {
      Problem(s);
      exit_code = kExitBadInput;
    }
  }

  if (!flags.junit_out.empty()) {
    absl::Status s = (*junit)->WriteFile(flags.junit_out);
    if (!s.ok()) {
      Problem(s);
      return kExitWriteFailed;
    }
    const JunitCounts& c = (*junit)->summary().counts;
    std::fprintf(stderr,
                 "testshard merge: %s: %lld tests, %lld failures, %lld errors, %lld skipped, %lld flaky "
                 "(from %lld JUnit inputs)\n",
                 flags.junit_out.c_str(), static_cast<long long>(c.tests), static_cast<long long>(c.failures),
                 static_cast<long long>(c.errors), static_cast<long long>(c.skipped),
                 static_cast<long long>(c.flaky), static_cast<long long>(junit_inputs.size()));
  }
  for (const auto& [out, cobertura] : {std::pair{flags.cobertura_out, true}, std::pair{flags.lcov_out, false}}) {
    if (out.empty()) continue;
    absl::Status s = cobertura ? coverage.WriteCoberturaFile(out) : coverage.WriteLcovFile(out);
    if (!s.ok()) {
      Problem(s);
      return kExitWriteFailed;
    }
    report::CoverageTotals t = coverage.Totals();
    std::fprintf(stderr, "testshard merge: %s: %zu files, %llu/%llu lines, %llu/%llu branches (from %lld coverage inputs)\n",
                 out.c_str(), coverage.data().files.size(), static_cast<unsigned long long>(t.lines_covered),
                 static_cast<unsigned long long>(t.lines_valid), static_cast<unsigned long long>(t.branches_covered),
                 static_cast<unsigned long long>(t.branches_valid), static_cast<long long>(coverage_inputs));
  }
  const std::vector<std::string>& unmapped = coverage.summary().unmapped_paths;
  for (size_t i = 0; i < unmapped.size() && i < 5; ++i) {
    std::fprintf(stderr, "testshard merge: warning: %s is under no known root; kept as an absolute path "
                 "(use --root or --input-root)\n", unmapped[i].c_str());
  }
  if (unmapped.size() > 5) {
    std::fprintf(stderr, "testshard merge: warning: and %zu%s more such paths\n", unmapped.size() - 5,
                 unmapped.size() >= 1000 ? " or" : "");
  }
  return exit_code;
}

}  // namespace

void AddMergeCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<MergeFlags>();
  auto* cmd = app.add_subcommand(
      "merge",
      "Merge the JUnit XML and coverage files of many shards into one report.\n"
      "Inputs are recognised by content: JUnit XML (pytest, GoogleTest, ctest, Surefire, Bazel), Cobertura XML,\n"
      "lcov tracefiles. A missing, truncated or malformed JUnit input becomes error entries in the report, never\n"
      "passes. Exit codes: 0 merged; 2 an input was bad (reports still written, naming it); 3 an output could\n"
      "not be written; 4 usage.");
  cmd->add_option("--junit-out", flags->junit_out, "Merged JUnit XML report to write");
  cmd->add_option("--cobertura-out", flags->cobertura_out, "Merged Cobertura XML coverage report to write");
  cmd->add_option("--lcov-out", flags->lcov_out, "Merged lcov tracefile to write");
  cmd->add_option("--root", flags->root,
                  "Project root: absolute coverage paths under it become relative, and paths from checkouts in "
                  "other directories are matched to files under it (default: the current directory)");
  cmd->add_option("--suite-per", flags->suite_per, "One output testsuite per stage or per input")
      ->check(CLI::IsMember({"stage", "input"}));
  cmd->add_option("--stage", flags->stages,
                  "INPUT=NAME: the stage (output suite) of a JUnit input; default: the input's own suite names")
      ->allow_extra_args(false);
  cmd->add_option("--input-root", flags->input_roots,
                  "INPUT=DIR: the directory the agent that wrote a coverage input ran in; stripped from its paths")
      ->allow_extra_args(false);
  cmd->add_option("--revision", flags->revisions,
                  "INPUT=REV: the source revision a coverage input was measured at; different revisions are refused")
      ->allow_extra_args(false);
  cmd->add_option("--report-name", flags->report_name, "The name of the JUnit <testsuites>");
  cmd->add_option("--max-output-bytes", flags->max_output_bytes,
                  "Per test, captured output and failure text beyond this keep their head and tail");
  cmd->add_option("--jobs", flags->jobs, "Threads reading JUnit inputs and formatting the report (0: one per core)");
  cmd->add_option("inputs", flags->inputs, "JUnit, Cobertura and lcov files")->required();
  cmd->callback([flags, exit_code] {
    if (flags->root.empty()) {
      std::error_code ec;
      flags->root = std::filesystem::current_path(ec).string();
    }
    if (flags->junit_out.empty() && flags->cobertura_out.empty() && flags->lcov_out.empty()) {
      std::fprintf(stderr, "testshard merge: give at least one of --junit-out, --cobertura-out, --lcov-out\n");
      *exit_code = kExitUsage;
      return;
    }
    *exit_code = RunMerge(*flags);
  });
}

}  // namespace testshard

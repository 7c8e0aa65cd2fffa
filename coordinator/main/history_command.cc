// testshard history show|import|export: look at, bring in, and take out the duration history.
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/history/history_store.h"
#include "common/history/importers.h"
#include "common/status.h"
#include "coordinator/main/commands.h"
#include "coordinator/main/plan_inputs.h"
#include "nlohmann/json.hpp"

namespace testshard {
namespace fs = std::filesystem;

namespace {

struct HistoryFlags {
  std::string store = "file:.testshard";
  std::string project;
};

std::string ProjectOr(const std::string& project) {
  return project.empty() ? fs::current_path().filename().string() : project;
}

absl::StatusOr<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Imports one file, whatever its kind: JUnit XML, pytest-split's .test_durations, or our own export.
absl::StatusOr<size_t> ImportFile(history::HistoryStore& store, const std::string& project, const std::string& path,
                                  const std::unordered_set<std::string>* known) {
  TS_ASSIGN_OR_RETURN(std::string text, ReadWhole(path));
  size_t start = text.find_first_not_of(" \t\r\n");
  if (start == std::string::npos) return absl::InvalidArgumentError(path + ": empty file");
  // Samples are dated by the file: the best guess at when that run happened, when the file says nothing itself.
  struct stat st {};
  absl::Time at = ::stat(path.c_str(), &st) == 0 ? absl::TimeFromTimespec(st.st_mtim) : absl::Now();
  if (text[start] == '<') {
    TS_ASSIGN_OR_RETURN(auto samples, history::ParseJunitXml(text, at, known));
    TS_RETURN_IF_ERROR(store.Update(project, samples));
    return samples.size();
  }
  const std::string first_line = text.substr(start, text.find('\n', start) - start);
  if (first_line.find("\"testshard-history\"") != std::string::npos) {
    std::vector<history::TestHistory> records;
    std::istringstream lines(text.substr(start));
    std::string line;
    std::getline(lines, line);  // the header
    size_t line_no = 1;
    while (std::getline(lines, line)) {
      ++line_no;
      if (line.empty()) continue;
      auto h = history::DecodeJson(line);
      if (!h.ok()) return Annotate(h.status(), absl::StrCat(path, ":", line_no));
      records.push_back(*std::move(h));
    }
    TS_RETURN_IF_ERROR(store.Put(project, records));
    return records.size();
  }
  auto samples = history::ParseTestDurations(text, at);
  if (!samples.ok()) return Annotate(samples.status(), path + " (read as pytest-split .test_durations)");
  TS_RETURN_IF_ERROR(store.Update(project, *samples));
  return samples->size();
}

}  // namespace

void AddHistoryCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("history", "Show, import or export the test duration history");
  cmd->require_subcommand(1);
  auto flags = std::make_shared<HistoryFlags>();
  auto add_common = [flags](CLI::App* sub) {
    sub->add_option("--store", flags->store, "file:DIR, redis://HOST[:PORT][/DB], unix:/PATH, postgresql://...")
        ->capture_default_str();
    sub->add_option("--project", flags->project, "History project (default: this directory's name)");
  };

  auto* show = cmd->add_subcommand("show", "Print the slowest tests' history (or the ones named)");
  add_common(show);
  auto limit = std::make_shared<size_t>(50);
  auto show_format = std::make_shared<std::string>("text");
  auto ids = std::make_shared<std::vector<std::string>>();
  show->add_option("--limit", *limit, "How many tests, slowest first (0: all)")->capture_default_str();
  show->add_option("--format", *show_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  show->add_option("test_ids", *ids, "Only these tests");
  show->callback([flags, limit, show_format, ids, exit_code] {
    auto store = history::OpenHistoryStore(flags->store);
    if (!store.ok()) return void(*exit_code = ReportFailure(store.status()));
    const std::string project = ProjectOr(flags->project);
    auto records = ids->empty() ? (*store)->ReadAll(project) : (*store)->Read(project, *ids);
    if (!records.ok()) return void(*exit_code = ReportFailure(records.status()));
    std::sort(records->begin(), records->end(), [](const auto& a, const auto& b) {
      return a.ewma_s != b.ewma_s ? a.ewma_s > b.ewma_s : a.test_id < b.test_id;
    });
    if (*limit > 0 && records->size() > *limit) records->resize(*limit);
    if (*show_format == "json") {
      for (const auto& h : *records) std::printf("%s\n", history::EncodeJson(h, true).c_str());
    } else {
      std::printf("%10s %10s %6s  %-20s %5s %-6s %-20s %s\n", "ewma_s", "p90_s", "runs", "outcomes", "fail%", "flaky",
                  "last_seen", "test");
      for (const auto& h : *records) {
        std::printf("%10.3f %10.3f %6lld  %-20s %5.0f %-6s %-20s %s\n", h.ewma_s, h.p90_s,
                    static_cast<long long>(h.runs), h.outcomes.c_str(), 100 * history::FailureRate(h),
                    history::LooksFlaky(h) ? "yes" : "",
                    absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", h.last_seen, absl::UTCTimeZone()).c_str(),
                    h.test_id.c_str());
      }
    }
    *exit_code = 0;
  });

  auto* import = cmd->add_subcommand(
      "import", "Fold in past results: JUnit XML files, pytest-split .test_durations, or a testshard export");
  add_common(import);
  auto files = std::make_shared<std::vector<std::string>>();
  auto known_from = std::make_shared<std::string>();
  import->add_option("files", *files, "Files to import")->required()->check(CLI::ExistingFile);
  import->add_option("--tests-from", *known_from,
                     "Collected test ids, one per line: resolves JUnit names that cannot be inverted alone");
  import->callback([flags, files, known_from, exit_code] {
    auto store = history::OpenHistoryStore(flags->store);
    if (!store.ok()) return void(*exit_code = ReportFailure(store.status()));
    std::unordered_set<std::string> known;
    if (!known_from->empty()) {
      std::ifstream in(*known_from);
      std::string line;
      while (std::getline(in, line)) {
        if (!line.empty()) known.insert(line);
      }
    }
    const std::string project = ProjectOr(flags->project);
    for (const std::string& f : *files) {
      auto n = ImportFile(**store, project, f, known.empty() ? nullptr : &known);
      if (!n.ok()) return void(*exit_code = ReportFailure(n.status()));
      std::fprintf(stderr, "testshard: imported %zu tests from %s into %s (project %s)\n", *n, f.c_str(),
                   (*store)->Describe().c_str(), project.c_str());
    }
    *exit_code = 0;
  });

  auto* exp = cmd->add_subcommand("export", "Write the whole history out");
  add_common(exp);
  auto export_format = std::make_shared<std::string>("testshard");
  auto output = std::make_shared<std::string>("-");
  exp->add_option("--format", *export_format,
                  "testshard (every field, importable into any store) or test-durations (pytest-split)")
      ->check(CLI::IsMember({"testshard", "test-durations"}))
      ->capture_default_str();
  exp->add_option("-o,--output", *output, "File to write ('-': stdout)")->capture_default_str();
  exp->callback([flags, export_format, output, exit_code] {
    auto store = history::OpenHistoryStore(flags->store);
    if (!store.ok()) return void(*exit_code = ReportFailure(store.status()));
    const std::string project = ProjectOr(flags->project);
    auto records = (*store)->ReadAll(project);
    if (!records.ok()) return void(*exit_code = ReportFailure(records.status()));
    std::sort(records->begin(), records->end(), [](const auto& a, const auto& b) { return a.test_id < b.test_id; });
    std::string text;
    if (*export_format == "test-durations") {
      text = history::ToTestDurations(*records);
    } else {
      nlohmann::json header = {{"format", "testshard-history"}, {"version", 1}, {"project", project}};
      text = header.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
      for (const auto& h : *records) text += history::EncodeJson(h, true) + "\n";
    }
    if (*output == "-") {
      std::fwrite(text.data(), 1, text.size(), stdout);
    } else {
      std::ofstream out(*output, std::ios::binary);
      out << text;
      if (!out) return void(*exit_code = ReportFailure(absl::UnavailableError("cannot write " + *output)));
    }
    *exit_code = 0;
  });
}

}  // namespace testshard

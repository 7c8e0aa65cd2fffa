#include "agent/coverage_recorder.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/report/coverage_formats.h"
#include "common/status.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;

// testshard_coverage.py's exit status when no process measured anything.
constexpr int kNoData = 5;
constexpr size_t kTailBytes = 4 * 1024;

absl::StatusOr<std::string> WriteEmpty(const std::string& path) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  absl::Status s = report::WriteCobertura(report::CoverageData{}, f);
  f.close();
  if (!s.ok() || !f) return absl::InternalError(absl::StrCat("cannot write ", path));
  return path;
}

std::string FirstLine(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

CoverageRecorder::CoverageRecorder(v1::CoverageSpec spec, std::string dir, std::string plugin_dir)
    : spec_(std::move(spec)), dir_(std::move(dir)), plugin_dir_(std::move(plugin_dir)) {
  std::error_code ec;
  fs::remove_all(dir_, ec);
  fs::create_directories(dir_, ec);
}

void CoverageRecorder::Apply(std::string_view kind, std::vector<std::string>* command,
                             std::map<std::string, std::string>* env) {
  // Names made here, never from the wire: the directory is this agent's and the counter is its own.
  fs::path data = fs::path(dir_) / absl::StrCat(std::string(kind), "-", ++processes_);
  std::error_code ec;
  fs::create_directories(data, ec);
  command->insert(command->end(), {"-p", "testshard_coverage", "-p", "pytest_cov"});
  if (spec_.source().empty()) command->push_back("--cov");
  for (const std::string& s : spec_.source()) command->push_back("--cov=" + s);
  if (spec_.branch()) command->push_back("--cov-branch");
  // No terminal report: the agent reports once, for everything it ran.
  command->push_back("--cov-report=");
  (*env)["COVERAGE_FILE"] = (data / ".coverage").string();
  (*env)["TESTSHARD_COVERAGE_PYTHON"] = (data / "python").string();
  // The plugin is found on PYTHONPATH, ahead of the run's own entries.
  std::string existing;
  if (auto it = env->find("PYTHONPATH"); it != env->end()) {
    existing = it->second;
  } else if (const char* inherited = getenv("PYTHONPATH")) {
    existing = inherited;
  }
  (*env)["PYTHONPATH"] = existing.empty() ? plugin_dir_ : plugin_dir_ + ":" + existing;
}

absl::StatusOr<std::string> CoverageRecorder::Report(ProcessRunner* runner, const std::string& workdir,
                                                     const std::map<std::string, std::string>& env,
                                                     absl::Duration timeout) {
  std::string out = (fs::path(dir_) / "coverage.xml").string();
  // Every process's data: the combined file of a session that ended, and the partial files of one that did not.
  std::vector<std::string> files;
  std::string python;
  std::error_code ec;
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.is_directory() && e.path().filename() != "combined") dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end());
  for (const fs::path& d : dirs) {
    for (const auto& f : fs::directory_iterator(d, ec)) {
      std::string name = f.path().filename().string();
      if (f.is_regular_file() && (name == ".coverage" || absl::StartsWith(name, ".coverage."))) {
        files.push_back(f.path().string());
      }
    }
    std::string p = FirstLine(d / "python");
    if (python.empty() && fs::path(p).is_absolute() && fs::exists(p)) python = p;
  }
  if (files.empty()) return WriteEmpty(out);
  if (python.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no pytest process recorded its interpreter (", dir_, "/*/python), so its coverage data cannot be combined"));
  }
  ProcessSpec spec;
  spec.argv = {python, (fs::path(plugin_dir_) / "testshard_coverage.py").string(), "--out", out,
               "--data-file", (fs::path(dir_) / "combined" / ".coverage").string()};
  for (const std::string& s : spec_.source()) spec.argv.push_back("--source=" + s);
  if (spec_.branch()) spec.argv.push_back("--branch");
  spec.argv.push_back("--");
  spec.argv.insert(spec.argv.end(), files.begin(), files.end());
  fs::create_directories(fs::path(dir_) / "combined", ec);
  spec.cwd = workdir;
  spec.env = env;
  spec.stdout_path = spec.stderr_path = (fs::path(dir_) / "report.log").string();
  spec.timeout = timeout;
  TS_ASSIGN_OR_RETURN(ProcessResult r, runner->Run(spec, nullptr));
  if (r.term_signal == 0 && r.exit_code == kNoData) return WriteEmpty(out);
  if (!r.ok()) {
    return absl::InternalError(absl::StrCat("combining the coverage data failed (", r.Describe(), "):\n",
                                            ReadTail(spec.stdout_path, kTailBytes)));
  }
  return out;
}

}  // namespace testshard::agent

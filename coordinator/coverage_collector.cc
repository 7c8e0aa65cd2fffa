#include "coordinator/coverage_collector.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/report/coverage_merger.h"
#include "common/status.h"

namespace testshard::coordinator {

CoverageCollector::CoverageCollector(CoverageOutputs outputs) : outputs_(std::move(outputs)) {}

void CoverageCollector::Registered(const std::string& agent_id, const std::string& name) {
  absl::MutexLock l(&mu_);
  agents_[agent_id].name = name;
}

void CoverageCollector::Dismissed(const std::string& agent_id) {
  absl::MutexLock l(&mu_);
  auto it = agents_.find(agent_id);
  if (it != agents_.end()) it->second.dismissed = true;
}

absl::Status CoverageCollector::CheckUpload(const std::string& agent_id) const {
  absl::MutexLock l(&mu_);
  auto it = agents_.find(agent_id);
  if (it == agents_.end()) return absl::FailedPreconditionError(absl::StrCat("unknown agent ", agent_id));
  if (it->second.received) {
    return absl::FailedPreconditionError(absl::StrCat("agent ", agent_id, " already sent its coverage report"));
  }
  return absl::OkStatus();
}

void CoverageCollector::Received(const std::string& agent_id, CoverageUpload upload) {
  absl::MutexLock l(&mu_);
  auto it = agents_.find(agent_id);
  if (it == agents_.end() || it->second.received) return;
  it->second.received = true;
  // An agent that reports before it is told the run is done (it stopped early) owes nothing more.
  it->second.dismissed = true;
  it->second.upload = std::move(upload);
}

bool CoverageCollector::AllDue() const {
  for (const auto& [id, a] : agents_) {
    if (a.dismissed && !a.received) return false;
  }
  return true;
}

bool CoverageCollector::WaitForReports(absl::Time deadline) const {
  absl::MutexLock l(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return AllDue(); };
  return mu_.AwaitWithDeadline(absl::Condition(&done), deadline);
}

std::map<std::string, std::string> CoverageCollector::Missing() const {
  absl::MutexLock l(&mu_);
  std::map<std::string, std::string> out;
  for (const auto& [id, a] : agents_) {
    if (a.received) continue;
    out[absl::StrCat(a.name, " (", id, ")")] =
        a.dismissed ? "sent no coverage report in time after the run ended"
                    : "stopped before the run ended, so the coverage of the tests it ran is missing";
  }
  return out;
}

CoverageResult CoverageCollector::Finish() {
  std::map<std::string, Agent> agents;
  {
    absl::MutexLock l(&mu_);
    agents = agents_;
  }
  CoverageResult result;
  for (const auto& [who, why] : Missing()) result.warnings.push_back(absl::StrCat("agent ", who, " ", why));
  report::CoverageMergeOptions options;
  options.root = outputs_.root;
  report::CoverageMerger merger(options);
  for (const auto& [id, a] : agents) {
    if (!a.received) continue;
    std::string who = absl::StrCat(a.name, " (", id, ")");
    if (!a.upload.error.empty()) {
      result.warnings.push_back(absl::StrCat("agent ", who, " has no coverage report: ", a.upload.error));
      continue;
    }
    absl::Status s = merger.AddFile({a.upload.path, a.upload.root, ""});
    // A malformed report still gives its complete records; a refused one gives nothing.
    if (s.ok() || s.code() == absl::StatusCode::kInvalidArgument || s.code() == absl::StatusCode::kResourceExhausted) {
      ++result.reports;
    }
    if (!s.ok()) result.warnings.push_back(absl::StrCat("coverage of agent ", who, ": ", s.message()));
  }
  for (const auto& [path, cobertura] : {std::pair{outputs_.cobertura, true}, std::pair{outputs_.lcov, false}}) {
    if (path.empty()) continue;
    std::error_code ec;
    if (std::filesystem::path(path).has_parent_path()) std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    absl::Status s = cobertura ? merger.WriteCoberturaFile(path) : merger.WriteLcovFile(path);
    if (s.ok()) {
      result.written.push_back(path);
    } else {
      result.warnings.push_back(absl::StrCat("cannot write ", path, ": ", s.message()));
    }
  }
  result.totals = merger.Totals();
  result.files = merger.data().files.size();
  return result;
}

}  // namespace testshard::coordinator

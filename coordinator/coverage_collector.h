// The agents' final coverage reports (issue 9): which agents owe one, what arrived, and the merged report.
// Each agent measures every pytest process it starts and, once told the run is done, uploads one Cobertura file
// with its project root. The coordinator waits for those (bounded), merges them with CoverageMerger (hits summed,
// branches united, paths made relative to the project root) and writes Cobertura and/or lcov.
#ifndef TESTSHARD_COORDINATOR_COVERAGE_COLLECTOR_H_
#define TESTSHARD_COORDINATOR_COVERAGE_COLLECTOR_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/report/coverage.h"

namespace testshard::coordinator {

struct CoverageOutputs {
  std::string root;       // the project root: paths in the report are relative to it
  std::string cobertura;  // files to write; "" = not that format
  std::string lcov;
};

// One agent's final upload.
struct CoverageUpload {
  std::string path;   // the stored report; ignored when `error` is set
  std::string root;   // the agent's project root, stripped from the report's absolute paths
  std::string error;  // the agent could not produce a report, and why
};

// What Finish() did, for the run's summary.
struct CoverageResult {
  std::vector<std::string> written;   // files written
  std::vector<std::string> warnings;  // one line each: an agent without a report, an input refused, a write failed
  report::CoverageTotals totals;
  size_t files = 0;
  int reports = 0;                    // agents' reports merged
};

// Thread-safe monitor: the gRPC reactors record registrations, dismissals and uploads; the main thread waits and
// then calls Finish() once. No I/O under the lock.
class CoverageCollector {
 public:
  explicit CoverageCollector(CoverageOutputs outputs);

  void Registered(const std::string& agent_id, const std::string& name);
  // The agent has been told the run is done: its report is due now.
  void Dismissed(const std::string& agent_id);
  // FailedPrecondition unless the agent is known and has not sent its report yet (checked before storing one).
  absl::Status CheckUpload(const std::string& agent_id) const;
  // A complete upload. A second one from the same agent is ignored.
  void Received(const std::string& agent_id, CoverageUpload upload);

  // Blocks until every dismissed agent's report has arrived, or `deadline`. True when none is outstanding.
  bool WaitForReports(absl::Time deadline) const;
  // The names of agents whose report never came, with why ("stopped before the run ended" or "sent none").
  std::map<std::string, std::string> Missing() const;

  // Merges the reports that arrived and writes the outputs; every agent without a report is a warning naming it.
  CoverageResult Finish();

 private:
  struct Agent {
    std::string name;
    bool dismissed = false;
    bool received = false;
    CoverageUpload upload;
  };
  bool AllDue() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoverageOutputs outputs_;
  mutable absl::Mutex mu_;
  std::map<std::string, Agent> agents_ ABSL_GUARDED_BY(mu_);  // by agent id
};

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_COVERAGE_COLLECTOR_H_

// What the run says about the database hand-off: the findings agents' hand-off checks sent (see
// agent/handoff_check.h), grouped so that a database several agents' tests shared is named once, for the run's
// summary, the JUnit report and the exit code. Pure logic.
#ifndef TESTSHARD_COORDINATOR_HANDOFF_REPORT_H_
#define TESTSHARD_COORDINATOR_HANDOFF_REPORT_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/config.h"
#include "common/handoff_finding.h"
#include "common/test_result.h"

namespace testshard::coordinator {

// Thread-safe monitor: the gRPC service adds findings from its reactors, the session reads them at the end.
class HandoffReport {
 public:
  explicit HandoffReport(DatabaseConfig::HandoffCheck mode) : mode_(mode) {}

  // Keeps a finding; an exact repeat (same kind, agent, database and message) is dropped.
  void Add(HandoffFinding finding);
  std::vector<HandoffFinding> findings() const;

  // True when the findings make the run fail: database.handoff_check = "fail" and some agent's tests used a
  // database not theirs, or failed on tables an earlier shard left. Notes never do.
  bool Fails() const;
  // The summary's section, empty when there is nothing to say. A database the tests of several agents used is
  // called out as shared before each agent's finding.
  std::string Summary() const;
  // A "testshard.handoff" suite for the JUnit report, one case per foreign database and per leftover finding:
  // errors when they fail the run, skipped (with the message) when they only warn. Nullopt when there are none.
  std::optional<TestSuite> Suite() const;

 private:
  const DatabaseConfig::HandoffCheck mode_;
  mutable absl::Mutex mu_;
  std::vector<HandoffFinding> findings_ ABSL_GUARDED_BY(mu_);
};

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_HANDOFF_REPORT_H_

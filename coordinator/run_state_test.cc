#include "coordinator/run_state.h"

#include <map>
#include <set>

#include "common/testing/fake_clock.h"
#include "common/testing/status_matchers.h"
#include "coordinator/dynamic_queue.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::coordinator {
namespace {

using ::testing::HasSubstr;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

StageConfig Stage(std::string name, int maxfail = 0) {
  StageConfig s;
  s.name = std::move(name);
  s.markers = "unit";
  s.maxfail = maxfail;
  return s;
}

std::vector<std::string> Ids(const std::string& prefix, int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back(prefix + "::t" + std::to_string(i));
  return ids;
}

TestCase Result(const std::string& id, Outcome o) {
  TestCase tc;
  tc.id = id;
  tc.result.outcome = o;
  return tc;
}

class RunStateTest : public ::testing::Test {
 protected:
  void Start(std::vector<StageConfig> stages, int agents = 2, std::string branch = "main") {
    RunOptions options;
    options.stages = std::move(stages);
    options.expected_agents = agents;
    options.branch = std::move(branch);
    options.lease_ttl = absl::Seconds(10);
    run_ = std::make_unique<RunState>(options, std::make_unique<EqualCountPlanner>(), &clock_);
  }
  // Collects `ids` for the current stage through `agent`.
  void Discover(const std::string& agent, std::vector<std::string> ids) {
    Work w = run_->NextWork(agent);
    ASSERT_EQ(w.kind, Work::kLease);
    ASSERT_EQ(w.lease.kind, LeaseKind::kDiscover);
    Completion c;
    c.collected = std::move(ids);
    ASSERT_THAT(run_->CompleteLease(agent, w.lease.id, c), IsOk());
  }
  LeaseInfo Take(const std::string& agent) {
    Work w = run_->NextWork(agent);
    EXPECT_EQ(w.kind, Work::kLease);
    EXPECT_EQ(w.lease.kind, LeaseKind::kRun);
    return w.lease;
  }
  void Finish(const std::string& agent, const LeaseInfo& lease, Outcome o) {
    std::vector<TestCase> results;
    for (const auto& id : lease.test_ids) results.push_back(Result(id, o));
    ASSERT_THAT(run_->ReportResults(agent, lease.id, results), IsOk());
    ASSERT_THAT(run_->CompleteLease(agent, lease.id, {}), IsOk());
  }
  // Every id of every suite, with how often it appears.
  std::map<std::string, int> Appearances() {
    std::map<std::string, int> seen;
    for (const TestSuite& s : run_->Report()) {
      for (const TestCase& c : s.cases) ++seen[c.id];
    }
    return seen;
  }
  Outcome OutcomeOf(const std::string& id) {
    for (const TestSuite& s : run_->Report()) {
      for (const TestCase& c : s.cases) {
        if (c.id == id) return c.result.outcome;
      }
    }
    ADD_FAILURE() << id << " not in report";
    return Outcome::kError;
  }

  FakeClock clock_;
  std::unique_ptr<RunState> run_;
};

TEST_F(RunStateTest, OthersWaitWhileOneCollectsAndWhileShardsRun) {
  Start({Stage("unit")});
  std::string a = run_->RegisterAgent("a"), b = run_->RegisterAgent("b");
  Work discover = run_->NextWork(a);
  ASSERT_EQ(discover.lease.kind, LeaseKind::kDiscover);
  EXPECT_EQ(run_->NextWork(b).kind, Work::kWait);
  Completion c;
  c.collected = Ids("u.py", 5);
  ASSERT_THAT(run_->CompleteLease(a, discover.lease.id, c), IsOk());
  LeaseInfo lb = Take(b), la = Take(a);
  EXPECT_EQ(lb.test_ids.size() + la.test_ids.size(), 5u);
  EXPECT_EQ(run_->NextWork(a).kind, Work::kWait);  // nothing left to hand out, but b is still running
  Finish(a, la, Outcome::kPassed);
  EXPECT_EQ(run_->Progress()[0].status, StageStatus::kRunning);
  Finish(b, lb, Outcome::kPassed);
  EXPECT_EQ(run_->Progress()[0].status, StageStatus::kPassed);
  EXPECT_EQ(run_->NextWork(a).kind, Work::kDone);
}

// The server stops once every agent has heard the run is over; an agent that went silent (killed, cut off) for
// longer than a lease's TTL is not waited for.
TEST_F(RunStateTest, AgentsAreDismissedWhenToldOrSilentPastTheLeaseTtl) {
  Start({Stage("unit")});
  std::string a = run_->RegisterAgent("a"), b = run_->RegisterAgent("b");
  Discover(a, Ids("u.py", 2));
  LeaseInfo la = Take(a);
  LeaseInfo lb = Take(b);
  Finish(a, la, Outcome::kPassed);
  clock_.Advance(absl::Seconds(9));
  run_->Heartbeat(b, {lb.id});
  Finish(b, lb, Outcome::kPassed);
  EXPECT_EQ(run_->NextWork(a).kind, Work::kDone);
  EXPECT_FALSE(run_->AgentsDismissed());  // b has not heard yet, and spoke a moment ago
  clock_.Advance(absl::Seconds(9));
  EXPECT_FALSE(run_->AgentsDismissed());  // within the TTL: it may still ask
  clock_.Advance(absl::Seconds(2));
  EXPECT_TRUE(run_->AgentsDismissed());   // silent past the TTL: gone
}

TEST_F(RunStateTest, PassingStagesThenDone) {
  Start({Stage("unit"), Stage("security")});
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 4));
  LeaseInfo l1 = Take(a);
  Finish(a, l1, Outcome::kPassed);
  LeaseInfo l2 = Take(a);
  Finish(a, l2, Outcome::kPassed);
  Discover(a, Ids("s.py", 2));
  LeaseInfo l3 = Take(a);
  Finish(a, l3, Outcome::kPassed);
  LeaseInfo l4 = Take(a);
  Finish(a, l4, Outcome::kPassed);
  EXPECT_EQ(run_->NextWork(a).kind, Work::kDone);
  EXPECT_TRUE(run_->done());
  EXPECT_EQ(run_->exit_code(), kExitOk);
  auto seen = Appearances();
  EXPECT_EQ(seen.size(), 6u);
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << id;
}

TEST_F(RunStateTest, FailingStageStopsTheNext) {
  Start({Stage("unit"), Stage("security")}, 1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 2));
  LeaseInfo l = Take(a);
  ASSERT_THAT(run_->ReportResults(a, l.id, {Result(l.test_ids[0], Outcome::kFailed),
                                            Result(l.test_ids[1], Outcome::kPassed)}),
              IsOk());
  ASSERT_THAT(run_->CompleteLease(a, l.id, {}), IsOk());
  EXPECT_EQ(run_->NextWork(a).kind, Work::kDone);
  auto p = run_->Progress();
  EXPECT_EQ(p[0].status, StageStatus::kFailed);
  EXPECT_EQ(p[1].status, StageStatus::kSkipped);
  EXPECT_THAT(p[1].note, HasSubstr("stage 'unit' failed"));
  EXPECT_EQ(run_->exit_code(), kExitTestsFailed);
}

TEST_F(RunStateTest, ContinueOnFailureRunsTheNextStage) {
  StageConfig unit = Stage("unit");
  unit.continue_on_failure = true;
  Start({unit, Stage("security")}, 1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 1));
  Finish(a, Take(a), Outcome::kFailed);
  Work w = run_->NextWork(a);
  ASSERT_EQ(w.kind, Work::kLease);
  EXPECT_EQ(w.lease.stage, "security");
}

TEST_F(RunStateTest, MaxfailCancelsTheRestOfTheStageOnEveryAgent) {
  Start({Stage("unit", /*maxfail=*/1)}, 3);
  std::string a = run_->RegisterAgent("a"), b = run_->RegisterAgent("b");
  Discover(a, Ids("u.py", 9));
  LeaseInfo la = Take(a), lb = Take(b);
  ASSERT_THAT(run_->ReportResults(a, la.id, {Result(la.test_ids[0], Outcome::kFailed)}), IsOk());
  // b hears of the cancel on its next heartbeat, and its finished test still counts.
  auto updates = run_->Heartbeat(b, {lb.id});
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_TRUE(updates[0].cancelled);
  EXPECT_THAT(updates[0].reason, HasSubstr("maxfail (1)"));
  ASSERT_THAT(run_->ReportResults(b, lb.id, {Result(lb.test_ids[0], Outcome::kPassed)}), IsOk());
  Completion cancelled;
  cancelled.status = Completion::kCancelled;
  ASSERT_THAT(run_->CompleteLease(b, lb.id, cancelled), IsOk());
  ASSERT_THAT(run_->CompleteLease(a, la.id, cancelled), IsOk());
  EXPECT_EQ(run_->NextWork(a).kind, Work::kDone);
  EXPECT_EQ(OutcomeOf(lb.test_ids[0]), Outcome::kPassed);
  EXPECT_EQ(OutcomeOf(lb.test_ids[1]), Outcome::kNotRun);
  auto seen = Appearances();
  EXPECT_EQ(seen.size(), 9u);
  auto p = run_->Progress()[0];
  EXPECT_EQ(p.status, StageStatus::kFailed);
  EXPECT_EQ(p.failed, 1);
  EXPECT_EQ(p.passed, 1);
  EXPECT_EQ(p.not_run, 7);
}

TEST_F(RunStateTest, ExpiredLeaseIsRequeuedAndItsLateResultsRefused) {
  Start({Stage("unit")}, 1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 3));
  LeaseInfo la = Take(a);
  ASSERT_EQ(la.test_ids.size(), 3u);
  std::string b = run_->RegisterAgent("b");  // joins late
  ASSERT_THAT(run_->ReportResults(a, la.id, {Result(la.test_ids[0], Outcome::kPassed)}), IsOk());
  clock_.Advance(absl::Seconds(11));  // a stopped heartbeating
  LeaseInfo lb = Take(b);
  // Only the tests a had not finished run again.
  EXPECT_EQ(lb.test_ids, (std::vector<std::string>{la.test_ids[1], la.test_ids[2]}));
  EXPECT_THAT(run_->ReportResults(a, la.id, {Result(la.test_ids[1], Outcome::kFailed)}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("expired")));
  EXPECT_TRUE(run_->Heartbeat(a, {la.id})[0].cancelled);
  Finish(b, lb, Outcome::kPassed);
  EXPECT_TRUE(run_->done());
  EXPECT_EQ(run_->exit_code(), kExitOk);
  for (const auto& [id, n] : Appearances()) EXPECT_EQ(n, 1) << id;
}

TEST_F(RunStateTest, HeartbeatsKeepALeaseAlive) {
  Start({Stage("unit")}, 1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 1));
  LeaseInfo la = Take(a);
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(absl::Seconds(6));
    EXPECT_FALSE(run_->Heartbeat(a, {la.id})[0].cancelled);
  }
  Finish(a, la, Outcome::kPassed);
  EXPECT_TRUE(run_->done());
}

TEST_F(RunStateTest, ResultsForAnotherAgentsLeaseOrForeignTestsAreRefused) {
  Start({Stage("unit")}, 1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 2));
  LeaseInfo la = Take(a);
  std::string b = run_->RegisterAgent("b");
  EXPECT_THAT(run_->ReportResults(b, la.id, {Result(la.test_ids[0], Outcome::kPassed)}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not held")));
  EXPECT_THAT(run_->ReportResults(a, la.id, {Result("other.py::x", Outcome::kPassed)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not part of lease")));
  EXPECT_THAT(run_->ReportResults(a, "lease-999", {}), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("unknown lease")));
  Finish(a, la, Outcome::kPassed);
  EXPECT_THAT(run_->CompleteLease(a, la.id, {}), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("completed")));
}

TEST_F(RunStateTest, CrashedShardTurnsUnreportedTestsIntoErrors) {
  Start({Stage("unit")}, 1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 3));
  LeaseInfo la = Take(a);
  ASSERT_THAT(run_->ReportResults(a, la.id, {Result(la.test_ids[0], Outcome::kPassed)}), IsOk());
  Completion crashed;
  crashed.status = Completion::kCrashed;
  crashed.error = "killed by signal 9";
  crashed.stderr_tail = "Segmentation fault";
  ASSERT_THAT(run_->CompleteLease(a, la.id, crashed), IsOk());
  EXPECT_EQ(OutcomeOf(la.test_ids[0]), Outcome::kPassed);
  EXPECT_EQ(OutcomeOf(la.test_ids[2]), Outcome::kError);
  EXPECT_EQ(run_->exit_code(), kExitTestsFailed);
}

TEST_F(RunStateTest, CollectionErrorFailsTheStageWithTheRunnersMessage) {
  Start({Stage("unit"), Stage("security")}, 1);
  std::string a = run_->RegisterAgent("a");
  Work w = run_->NextWork(a);
  Completion c;
  c.status = Completion::kCollectionError;
  c.error = "ImportError while importing test module 'tests/test_x.py'";
  ASSERT_THAT(run_->CompleteLease(a, w.lease.id, c), IsOk());
  EXPECT_EQ(run_->NextWork(a).kind, Work::kDone);
  auto report = run_->Report();
  ASSERT_EQ(report.size(), 1u);
  ASSERT_EQ(report[0].cases.size(), 1u);
  EXPECT_EQ(report[0].cases[0].result.outcome, Outcome::kError);
  EXPECT_THAT(report[0].cases[0].result.details, HasSubstr("ImportError"));
  EXPECT_EQ(run_->exit_code(), kExitTestsFailed);
}

TEST_F(RunStateTest, StagesForOtherBranchesAreSkipped) {
  StageConfig slow = Stage("slow");
  slow.branches = {"main"};
  Start({slow}, 1, "feature-x");
  std::string a = run_->RegisterAgent("a");
  EXPECT_EQ(run_->NextWork(a).kind, Work::kDone);
  EXPECT_THAT(run_->Progress()[0].note, HasSubstr("runs only on branch main"));
  EXPECT_EQ(run_->exit_code(), kExitNoTests);
}

TEST_F(RunStateTest, EmptySelectionPassesAtOnce) {
  Start({Stage("unit"), Stage("security")}, 1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, {});
  Work w = run_->NextWork(a);
  ASSERT_EQ(w.kind, Work::kLease);
  EXPECT_EQ(w.lease.stage, "security");
}

TEST_F(RunStateTest, CancelMarksEverythingUnfinishedNotRun) {
  Start({Stage("unit"), Stage("security")}, 2);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 4));
  LeaseInfo la = Take(a);
  ASSERT_THAT(run_->ReportResults(a, la.id, {Result(la.test_ids[0], Outcome::kPassed)}), IsOk());
  run_->Cancel("interrupted (Ctrl-C)");
  EXPECT_TRUE(run_->Heartbeat(a, {la.id})[0].cancelled);
  Completion c;
  c.status = Completion::kCancelled;
  ASSERT_THAT(run_->CompleteLease(a, la.id, c), IsOk());
  EXPECT_TRUE(run_->done());
  EXPECT_EQ(run_->exit_code(), kExitInterrupted);
  auto seen = Appearances();
  EXPECT_EQ(seen.size(), 4u);
  EXPECT_EQ(OutcomeOf(la.test_ids[0]), Outcome::kPassed);
  EXPECT_EQ(OutcomeOf("u.py::t3"), Outcome::kNotRun);
}

TEST_F(RunStateTest, LostDiscoveryIsHandedToAnotherAgent) {
  Start({Stage("unit")}, 1);
  std::string a = run_->RegisterAgent("a"), b = run_->RegisterAgent("b");
  Work wa = run_->NextWork(a);
  ASSERT_EQ(wa.lease.kind, LeaseKind::kDiscover);
  EXPECT_EQ(run_->NextWork(b).kind, Work::kWait);
  clock_.Advance(absl::Seconds(11));
  Work wb = run_->NextWork(b);
  ASSERT_EQ(wb.kind, Work::kLease);
  EXPECT_EQ(wb.lease.kind, LeaseKind::kDiscover);
}

TEST_F(RunStateTest, UnattemptedTestsRunAgainAndTheCrashedOneIsAnError) {
  Start({Stage("unit")}, 1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 4));
  LeaseInfo la = Take(a);
  ASSERT_THAT(run_->ReportResults(a, la.id, {Result(la.test_ids[0], Outcome::kPassed)}), IsOk());
  Completion crashed;
  crashed.status = Completion::kCrashed;
  crashed.error = "the pytest worker died";
  crashed.unattempted = {la.test_ids[2], la.test_ids[3]};  // test 1 was running when it died
  ASSERT_THAT(run_->CompleteLease(a, la.id, crashed), IsOk());
  LeaseInfo again = Take(a);
  EXPECT_EQ(again.test_ids, (std::vector<std::string>{la.test_ids[2], la.test_ids[3]}));
  Finish(a, again, Outcome::kPassed);
  EXPECT_EQ(OutcomeOf(la.test_ids[1]), Outcome::kError);
  EXPECT_EQ(OutcomeOf(la.test_ids[3]), Outcome::kPassed);
  for (const auto& [id, n] : Appearances()) EXPECT_EQ(n, 1) << id;
}

StageConfig WithRetries(StageConfig s, int retries) {
  s.retries = retries;
  return s;
}

TEST_F(RunStateTest, AFailedTestIsRetriedOnAnotherAgentAndAPassIsFlaky) {
  Start({WithRetries(Stage("unit"), 1)}, 1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, {"u.py::flaky", "u.py::fine"});
  LeaseInfo la = Take(a);
  std::string b = run_->RegisterAgent("b");
  ASSERT_THAT(run_->ReportResults(a, la.id, {Result("u.py::flaky", Outcome::kFailed), Result("u.py::fine", Outcome::kPassed)}),
              IsOk());
  ASSERT_THAT(run_->CompleteLease(a, la.id, {}), IsOk());
  EXPECT_EQ(run_->NextWork(a).kind, Work::kWait);  // not back to the agent it failed on
  LeaseInfo lb = Take(b);
  EXPECT_EQ(lb.test_ids, std::vector<std::string>{"u.py::flaky"});
  Finish(b, lb, Outcome::kPassed);
  EXPECT_TRUE(run_->done());
  EXPECT_EQ(run_->exit_code(), kExitOk);
  auto report = run_->Report();
  const TestCase& flaky = report[0].cases[0];
  EXPECT_EQ(flaky.result.outcome, Outcome::kPassed);
  ASSERT_EQ(flaky.reruns.size(), 1u);
  EXPECT_EQ(flaky.reruns[0].outcome, Outcome::kFailed);
  EXPECT_TRUE(flaky.flaky());
  EXPECT_EQ(run_->Progress()[0].flaky, 1);
}

TEST_F(RunStateTest, ATestThatFailsEveryAttemptFailsWithItsReruns) {
  Start({WithRetries(Stage("unit", /*maxfail=*/1), 2)}, 1);
  std::string a = run_->RegisterAgent("a");  // alone: retries come back to it
  Discover(a, {"u.py::broken"});
  for (int i = 0; i < 3; ++i) Finish(a, Take(a), Outcome::kFailed);
  EXPECT_TRUE(run_->done());
  auto report = run_->Report();
  EXPECT_EQ(report[0].cases[0].result.outcome, Outcome::kFailed);
  EXPECT_EQ(report[0].cases[0].reruns.size(), 2u);
  EXPECT_EQ(run_->exit_code(), kExitTestsFailed);
}

TEST_F(RunStateTest, AnAgentWhoseTestsAllFailIsDrained) {
  Start({Stage("unit")}, 2);
  std::string good = run_->RegisterAgent("good"), bad = run_->RegisterAgent("bad");
  Discover(good, Ids("u.py", 80));
  Finish(good, Take(good), Outcome::kPassed);  // 40 pass
  Finish(bad, Take(bad), Outcome::kError);     // 40 errors: its database is broken, say
  auto drained = run_->DrainedAgents();
  ASSERT_EQ(drained.size(), 1u);
  EXPECT_THAT(drained["bad"], HasSubstr("20 of its 20 tests failed, against 0% on the other agents"));
  Work w = run_->NextWork(bad);
  EXPECT_EQ(w.kind, Work::kDone);
  EXPECT_THAT(w.reason, HasSubstr("drained"));
}

TEST_F(RunStateTest, AGoneAgentsShardIsRequeuedWithoutWaitingForItsLease) {
  Start({Stage("unit")}, 1);
  std::string a = run_->RegisterAgent("local-1");
  Discover(a, Ids("u.py", 2));
  LeaseInfo la = Take(a);
  std::string b = run_->RegisterAgent("local-2");
  EXPECT_EQ(run_->NextWork(b).kind, Work::kWait);
  run_->AgentGone("local-1");  // no clock advance: the process is known dead
  LeaseInfo lb = Take(b);
  EXPECT_EQ(lb.test_ids, la.test_ids);
  EXPECT_THAT(run_->ReportResults(a, la.id, {}), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("expired")));
}

class MemoryJournal : public RunJournal {
 public:
  void Append(const JournalEvent& e) override { events.push_back(e); }
  std::vector<JournalEvent> events;
};

// A coordinator restarted mid-stage keeps every result it had and hands out only what had none.
TEST_F(RunStateTest, RestoredRunKeepsResultsAndRequeuesTheRest) {
  MemoryJournal journal;
  RunOptions options;
  options.stages = {Stage("unit"), Stage("security")};
  options.journal = &journal;
  auto first = std::make_unique<RunState>(options, std::make_unique<EqualCountPlanner>(), &clock_);
  std::string a = first->RegisterAgent("a");
  Work d = first->NextWork(a);
  Completion c;
  c.collected = Ids("u.py", 4);
  ASSERT_THAT(first->CompleteLease(a, d.lease.id, c), IsOk());
  Work w = first->NextWork(a);
  ASSERT_THAT(first->ReportResults(a, w.lease.id, {Result("u.py::t0", Outcome::kPassed),
                                                   Result("u.py::t1", Outcome::kFailed)}),
              IsOk());
  first.reset();  // the coordinator dies with t2 and t3 unreported

  options.generation = 1;
  RunState second(options, std::make_unique<EqualCountPlanner>(), &clock_);
  ASSERT_THAT(second.Restore(journal.events), IsOk());
  std::string b = second.RegisterAgent("b");
  EXPECT_NE(b, a);  // an agent still holding its old id cannot pass for the new one
  EXPECT_FALSE(second.KnownAgent(a));
  EXPECT_THAT(second.ReportResults(b, w.lease.id, {}), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("unknown lease")));
  Work again = second.NextWork(b);
  ASSERT_EQ(again.kind, Work::kLease);
  EXPECT_EQ(again.lease.test_ids, (std::vector<std::string>{"u.py::t2", "u.py::t3"}));
  EXPECT_NE(again.lease.id, w.lease.id);
  ASSERT_THAT(second.ReportResults(b, again.lease.id, {Result("u.py::t2", Outcome::kPassed),
                                                       Result("u.py::t3", Outcome::kPassed)}),
              IsOk());
  ASSERT_THAT(second.CompleteLease(b, again.lease.id, {}), IsOk());
  EXPECT_TRUE(second.done());  // unit failed (t1), so security is skipped
  auto report = second.Report();
  ASSERT_EQ(report.size(), 1u);
  ASSERT_EQ(report[0].cases.size(), 4u);
  EXPECT_EQ(report[0].cases[1].result.outcome, Outcome::kFailed);
  EXPECT_EQ(second.exit_code(), kExitTestsFailed);
}

TEST_F(RunStateTest, RestoreRefusesAJournalFromAnotherConfig) {
  Start({Stage("unit")});
  JournalEvent e;
  e.kind = JournalEvent::kCollected;
  e.stage = "renamed";
  EXPECT_THAT(run_->Restore({e}), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("'renamed'")));
}


// Planning: what RunState hands its planner, and what it feeds back to the queue. The planner and its queues are
// recorded, so each test sees exactly what crossed the seam.
struct PlanLog {
  std::vector<PlanRequest> requests;
  struct Feedback {
    std::string agent;
    double predicted_s, wall_s;
  };
  std::vector<Feedback> completed;
};

class RecordingQueue final : public StageQueue {
 public:
  RecordingQueue(std::unique_ptr<StageQueue> inner, std::shared_ptr<PlanLog> log)
      : inner_(std::move(inner)), log_(std::move(log)) {}
  std::optional<Batch> Next(std::string_view agent_id) override {
    std::optional<Batch> b = inner_->Next(agent_id);
    if (b) b->predicted_s = static_cast<double>(b->test_ids.size());  // something to recognise it by
    return b;
  }
  void Return(std::vector<std::string> ids) override { inner_->Return(std::move(ids)); }
  size_t remaining() const override { return inner_->remaining(); }
  void Completed(std::string_view agent_id, double predicted_s, double wall_s) override {
    log_->completed.push_back({std::string(agent_id), predicted_s, wall_s});
  }

 private:
  std::unique_ptr<StageQueue> inner_;
  std::shared_ptr<PlanLog> log_;
};

class RecordingPlanner final : public Planner {
 public:
  explicit RecordingPlanner(std::shared_ptr<PlanLog> log) : log_(std::move(log)) {}
  std::unique_ptr<StageQueue> Plan(const PlanRequest& request) override {
    log_->requests.push_back(request);
    return std::make_unique<RecordingQueue>(EqualCountPlanner().Plan(request), log_);
  }

 private:
  std::shared_ptr<PlanLog> log_;
};

class RunStatePlanningTest : public RunStateTest {
 protected:
  void StartPlanned(std::vector<StageConfig> stages, std::vector<std::pair<std::string, double>> known,
                    std::set<std::string> warm_stages = {}, int agents = 2,
                    std::unique_ptr<Planner> planner = nullptr) {
    RunOptions options;
    options.stages = std::move(stages);
    options.expected_agents = agents;
    options.branch = "main";
    options.lease_ttl = absl::Seconds(10);
    options.estimator = std::make_shared<DurationEstimator>(std::move(known));
    options.warm_stages = std::move(warm_stages);
    options.warm_startup_s = 0.05;
    options.process_startup_s = 2;
    if (!planner) planner = std::make_unique<RecordingPlanner>(log_);
    run_ = std::make_unique<RunState>(options, std::move(planner), &clock_);
  }
  // Reports every test of `lease` as passed in `each_s` seconds, then completes it as measured.
  void FinishTimed(const std::string& agent, const LeaseInfo& lease, double each_s, double wall_s,
                   double worker_start_s = 0) {
    std::vector<TestCase> results;
    for (const auto& id : lease.test_ids) {
      TestCase tc = Result(id, Outcome::kPassed);
      tc.result.time_s = each_s;
      results.push_back(tc);
    }
    ASSERT_THAT(run_->ReportResults(agent, lease.id, results), IsOk());
    Completion c;
    c.wall_s = wall_s;
    c.worker_start_s = worker_start_s;
    ASSERT_THAT(run_->CompleteLease(agent, lease.id, c), IsOk());
  }
  std::shared_ptr<PlanLog> log_ = std::make_shared<PlanLog>();
};

TEST_F(RunStatePlanningTest, StageIsPlannedWithHistoryEstimatesAndCountsWhatTheHistoryKnew) {
  StageConfig unit = Stage("unit");
  unit.granularity = "module";
  StartPlanned({unit}, {{"a.py::t0", 5}, {"a.py::t1", 3}}, {"unit"});
  std::string a = run_->RegisterAgent("a");
  Discover(a, {"a.py::t0", "a.py::t1", "b.py::t0"});
  ASSERT_EQ(log_->requests.size(), 1u);
  const PlanRequest& req = log_->requests[0];
  EXPECT_EQ(req.test_ids, (std::vector<std::string>{"a.py::t0", "a.py::t1", "b.py::t0"}));
  ASSERT_TRUE(req.estimate);
  EXPECT_DOUBLE_EQ(req.estimate("a.py::t0"), 5);
  EXPECT_DOUBLE_EQ(req.estimate("b.py::t0"), 4);  // unknown: the median of the known suite
  EXPECT_EQ(req.granularity, Granularity::kModule);
  EXPECT_EQ(req.agents, 2);
  EXPECT_DOUBLE_EQ(req.default_startup_s, 0.05);  // a warm stage
  EXPECT_TRUE(req.groups.empty());
  StageProgress p = run_->Progress()[0];
  EXPECT_EQ(p.planned, 3);
  EXPECT_EQ(p.known, 2);
}

// With the coordinator's real planner, the history decides the shards: a stage of a few start-ups is split by
// predicted seconds, not by count (one 10 s test weighs as much as ten 1 s ones).
TEST_F(RunStatePlanningTest, DynamicPlannerBalancesTheStageByHistory) {
  StartPlanned({Stage("unit")}, {{"u.py::t0", 10}, {"u.py::t1", 1}, {"u.py::t2", 1}, {"u.py::t3", 1}, {"u.py::t4", 1}},
               /*warm_stages=*/{}, /*agents=*/2, std::make_unique<DynamicPlanner>());
  std::string a = run_->RegisterAgent("a"), b = run_->RegisterAgent("b");
  Discover(a, Ids("u.py", 5));
  std::set<std::vector<std::string>> shards;
  for (const std::string& agent : {a, b}) {
    LeaseInfo l = Take(agent);
    EXPECT_GT(l.predicted_s, 0);
    shards.insert(l.test_ids);
  }
  const std::set<std::vector<std::string>> by_seconds = {{"u.py::t0"},
                                                         {"u.py::t1", "u.py::t2", "u.py::t3", "u.py::t4"}};
  EXPECT_EQ(shards, by_seconds);
}

TEST_F(RunStatePlanningTest, GroupKeysFromDiscoveryReachThePlannerOnlyForTheStagesMarker) {
  StageConfig grouped = Stage("grouped"), plain = Stage("plain");
  grouped.group_marker = "serial";
  StartPlanned({grouped, plain}, {});
  std::string a = run_->RegisterAgent("a");
  for (size_t i = 0; i < 2; ++i) {
    const std::string stage = i == 0 ? "grouped" : "plain";
    Work w = run_->NextWork(a);
    ASSERT_EQ(w.lease.kind, LeaseKind::kDiscover) << stage;
    EXPECT_EQ(w.lease.group_marker, i == 0 ? "serial" : "") << stage;
    Completion c;
    c.collected = Ids(stage + ".py", 3);
    c.groups = {"serial=db", "", "serial=db"};
    ASSERT_THAT(run_->CompleteLease(a, w.lease.id, c), IsOk());
    LeaseInfo l = Take(a);
    Finish(a, l, Outcome::kPassed);
    if (run_->Progress()[i].status == StageStatus::kRunning) Finish(a, Take(a), Outcome::kPassed);
  }
  ASSERT_EQ(log_->requests.size(), 2u);
  EXPECT_EQ(log_->requests[0].groups, (std::vector<std::string>{"serial=db", "", "serial=db"}));
  EXPECT_TRUE(log_->requests[1].groups.empty());  // "plain" has no group marker: keys are not its to use
}

TEST_F(RunStatePlanningTest, RestoredStageIsReplannedWithItsGroups) {
  StageConfig grouped = Stage("grouped");
  grouped.group_marker = "serial";
  StartPlanned({grouped}, {});
  JournalEvent collected;
  collected.kind = JournalEvent::kCollected;
  collected.stage = "grouped";
  collected.ids = Ids("g.py", 3);
  collected.groups = {"", "serial", "serial"};
  JournalEvent done;
  done.kind = JournalEvent::kAttempt;
  done.stage = "grouped";
  done.result = Result(collected.ids[0], Outcome::kPassed);
  ASSERT_THAT(run_->Restore({collected, done}), IsOk());
  ASSERT_EQ(log_->requests.size(), 1u);
  EXPECT_EQ(log_->requests[0].test_ids, (std::vector<std::string>{"g.py::t1", "g.py::t2"}));
  EXPECT_EQ(log_->requests[0].groups, (std::vector<std::string>{"serial", "serial"}));
}

TEST_F(RunStatePlanningTest, CompletedBatchFeedsItsWallTimeLessWorkerStartToTheQueue) {
  StartPlanned({Stage("unit")}, {}, {"unit"}, /*agents=*/1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 4));
  LeaseInfo l = Take(a);
  ASSERT_EQ(l.test_ids.size(), 4u);
  FinishTimed(a, l, /*each_s=*/0.5, /*wall_s=*/5, /*worker_start_s=*/2);
  ASSERT_EQ(log_->completed.size(), 1u);
  EXPECT_EQ(log_->completed[0].agent, a);
  EXPECT_DOUBLE_EQ(log_->completed[0].predicted_s, 4);  // what the queue said of the batch
  EXPECT_DOUBLE_EQ(log_->completed[0].wall_s, 3);       // the worker's start is not the batch's
  // The agent's warm start-up: wall time not spent in tests, the worker's start left out.
  auto warm = run_->AgentProfiles(/*warm=*/true);
  ASSERT_TRUE(warm.count(a));
  EXPECT_DOUBLE_EQ(warm[a].startup_s, 1);
  EXPECT_TRUE(run_->AgentProfiles(/*warm=*/false).empty());
}

TEST_F(RunStatePlanningTest, MeasuredStartupPlansTheNextStage) {
  StartPlanned({Stage("one"), Stage("two")}, {}, /*warm_stages=*/{}, /*agents=*/1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("one.py", 2));
  FinishTimed(a, Take(a), /*each_s=*/1, /*wall_s=*/5);
  Discover(a, Ids("two.py", 2));
  ASSERT_EQ(log_->requests.size(), 2u);
  EXPECT_DOUBLE_EQ(log_->requests[0].default_startup_s, 2);  // a process per batch
  ASSERT_TRUE(log_->requests[1].agent_profiles.count(a));
  EXPECT_DOUBLE_EQ(log_->requests[1].agent_profiles.at(a).startup_s, 3);
}

// Batches of different sizes separate each test's own cost (dispatch, result round trip, pytest's hooks) from the
// batch's start-up; the next stage's plan counts it in every test's estimate.
TEST_F(RunStatePlanningTest, PerTestCostIsToldFromStartupAndPlansTheNextStage) {
  StartPlanned({Stage("one"), Stage("two")}, {{"two.py::t0", 0.5}}, /*warm_stages=*/{}, /*agents=*/1,
               std::make_unique<DynamicPlanner>());
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("one.py", 400));  // 200 s by the history's median: enough for the queue to split
  // Each batch: 2 s of start-up, 0.05 s per test on top of the tests' own 0.1 s.
  int batches = 0;
  while (run_->Progress()[0].status == StageStatus::kRunning) {
    LeaseInfo l = Take(a);
    ASSERT_FALSE(l.test_ids.empty());
    const double n = static_cast<double>(l.test_ids.size());
    FinishTimed(a, l, /*each_s=*/0.1, /*wall_s=*/2 + n * (0.1 + 0.05));
    ++batches;
  }
  ASSERT_GE(batches, 3) << "the queue must hand out batches of several sizes for this test to mean anything";
  AgentProfile p = run_->AgentProfiles(/*warm=*/false).at(a);
  EXPECT_NEAR(p.startup_s, 2, 1e-6);
  EXPECT_NEAR(p.per_test_s, 0.05, 1e-6);
  // The second stage is planned with it: a test the history says takes 0.5 s is estimated at 0.55 s.
  std::vector<std::string> two = {"two.py::t0"};
  Discover(a, two);
  LeaseInfo l = Take(a);
  EXPECT_NEAR(l.predicted_s, 0.55, 1e-9);
}

// Batches that all have the same size cannot tell the two apart: their whole overhead stays the start-up.
TEST_F(RunStatePlanningTest, BatchesOfOneSizeLeaveThePerTestCostUnknown) {
  StartPlanned({Stage("unit")}, {}, /*warm_stages=*/{}, /*agents=*/1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 4));
  FinishTimed(a, Take(a), /*each_s=*/0.5, /*wall_s=*/5);
  AgentProfile p = run_->AgentProfiles(/*warm=*/false).at(a);
  EXPECT_DOUBLE_EQ(p.startup_s, 3);
  EXPECT_LT(p.per_test_s, 0);
}

TEST_F(RunStatePlanningTest, RetriedTestsAndUnmeasuredLeasesDoNotFeedTheQueue) {
  StageConfig unit = Stage("unit");
  unit.retries = 1;
  StartPlanned({unit}, {}, {}, /*agents=*/1);
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 1));
  LeaseInfo first = Take(a);
  std::vector<TestCase> failed = {Result(first.test_ids[0], Outcome::kFailed)};
  ASSERT_THAT(run_->ReportResults(a, first.id, failed), IsOk());
  ASSERT_THAT(run_->CompleteLease(a, first.id, {}), IsOk());  // no wall time: nothing to learn
  EXPECT_TRUE(log_->completed.empty());
  LeaseInfo retry = Take(a);  // the only agent: the retry comes back to it
  FinishTimed(a, retry, 1, 3);
  EXPECT_TRUE(log_->completed.empty());  // not a batch the queue handed out
  EXPECT_EQ(run_->Progress()[0].status, StageStatus::kPassed);
}

TEST_F(RunStatePlanningTest, EtaIsTheWorkLeftAtTheObservedPaceOverTheLiveAgents) {
  StartPlanned({Stage("unit")}, {{"u.py::t0", 10}, {"u.py::t1", 10}, {"u.py::t2", 10}, {"u.py::t3", 10}});
  std::string a = run_->RegisterAgent("a"), b = run_->RegisterAgent("b");
  Discover(a, Ids("u.py", 4));
  EXPECT_DOUBLE_EQ(run_->Progress()[0].eta_s, 20);  // 40 s of history over 2 agents
  LeaseInfo la = Take(a);
  ASSERT_EQ(la.test_ids.size(), 2u);
  // The first test took twice its history: the rest is expected to as well.
  TestCase slow = Result(la.test_ids[0], Outcome::kPassed);
  slow.result.time_s = 20;
  ASSERT_THAT(run_->ReportResults(a, la.id, {slow}), IsOk());
  EXPECT_DOUBLE_EQ(run_->Progress()[0].eta_s, 30 * 2 / 2.0);
  TestCase fast = Result(la.test_ids[1], Outcome::kPassed);
  fast.result.time_s = 0;  // 20 s for 20 s predicted: pace 1
  ASSERT_THAT(run_->ReportResults(a, la.id, {fast}), IsOk());
  EXPECT_DOUBLE_EQ(run_->Progress()[0].eta_s, 20 * 1 / 2.0);
}

TEST_F(RunStatePlanningTest, NoEtaWithoutHistoryUntilTheFirstResults) {
  StartPlanned({Stage("unit")}, {});
  std::string a = run_->RegisterAgent("a");
  Discover(a, Ids("u.py", 4));
  EXPECT_LT(run_->Progress()[0].eta_s, 0);
  EXPECT_EQ(run_->Progress()[0].known, 0);
  LeaseInfo l = Take(a);
  TestCase tc = Result(l.test_ids[0], Outcome::kPassed);
  tc.result.time_s = 3;
  ASSERT_THAT(run_->ReportResults(a, l.id, {tc}), IsOk());
  EXPECT_DOUBLE_EQ(run_->Progress()[0].eta_s, 3 * 3.0);  // 3 tests left at 3 s each, one agent registered
}

}  // namespace
}  // namespace testshard::coordinator

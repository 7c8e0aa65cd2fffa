// One contract for every place a run journal is kept, with real servers: the file beside the run in a temp dir, Redis
// on a private unix socket, PostgreSQL on a private unix socket (the history contract test's servers). Journals are
// opened and read back the way the coordinator does it, through OpenRunJournal / ReadRunJournal with a history store
// spec.
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/testing/shared_servers.h"
#include "common/testing/status_matchers.h"
#include "coordinator/run_journal_backends.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

// The history store spec that puts journals on `kind`'s backend (one server per binary: shared_servers.h).
// File journals live in the run directory whatever the spec's directory, so any will do.
absl::StatusOr<std::string> SpecFor(const std::string& kind) {
  if (kind == "redis") return testing::SharedRedisUrl();
  if (kind == "postgres") return testing::SharedPostgresUrl();
  return "file:/nonexistent/.testshard";
}

class RunJournalContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    TS_ASSERT_OK_AND_ASSIGN(spec_, SpecFor(GetParam()));
    project_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (char& c : project_) {
      if (c == '/') c = '-';
    }
    char tmpl[] = "/tmp/testshard-rundirs-XXXXXX";
    runs_dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(runs_dir_); }

  // Where the coordinator would keep the run's artifacts (and, for file: stores, its journal).
  std::string RunDir(const std::string& project, const std::string& run_id) {
    std::string dir = runs_dir_ + "/" + project + "/" + run_id;
    std::filesystem::create_directories(dir);
    return dir;
  }
  absl::StatusOr<std::unique_ptr<RunJournal>> Open(const std::string& run_id, bool resume = false,
                                                   const std::string& project = "") {
    const std::string& p = project.empty() ? project_ : project;
    return OpenRunJournal(spec_, p, run_id, RunDir(p, run_id), resume);
  }
  absl::StatusOr<std::vector<JournalEvent>> Read(const std::string& run_id, const std::string& project = "") {
    const std::string& p = project.empty() ? project_ : project;
    return ReadRunJournal(spec_, p, run_id, RunDir(p, run_id));
  }

  std::string spec_, project_, runs_dir_;
};

JournalEvent Collected(std::string stage, std::vector<std::string> ids, std::vector<std::string> groups = {}) {
  JournalEvent e;
  e.kind = JournalEvent::kCollected;
  e.stage = std::move(stage);
  e.ids = std::move(ids);
  e.groups = std::move(groups);
  return e;
}

JournalEvent Attempt(std::string stage, std::string id, Outcome outcome = Outcome::kPassed, std::string agent = "a1") {
  JournalEvent e;
  e.kind = JournalEvent::kAttempt;
  e.stage = std::move(stage);
  e.result.id = std::move(id);
  e.result.result.outcome = outcome;
  e.agent = std::move(agent);
  return e;
}

JournalEvent StageEnd(std::string stage, int status, std::string note) {
  JournalEvent e;
  e.kind = JournalEvent::kStageEnd;
  e.stage = std::move(stage);
  e.status = status;
  e.note = std::move(note);
  return e;
}

void ExpectSame(const JournalEvent& got, const JournalEvent& want, size_t i) {
  SCOPED_TRACE(::testing::Message() << "event " << i);
  EXPECT_EQ(got.kind, want.kind);
  EXPECT_EQ(got.stage, want.stage);
  EXPECT_EQ(got.ids, want.ids);
  EXPECT_EQ(got.groups, want.groups);
  EXPECT_EQ(got.result.id, want.result.id);
  EXPECT_EQ(got.result.classname, want.result.classname);
  EXPECT_EQ(got.result.name, want.result.name);
  EXPECT_EQ(got.result.properties, want.result.properties);
  EXPECT_EQ(got.result.result.outcome, want.result.result.outcome);
  EXPECT_DOUBLE_EQ(got.result.result.time_s, want.result.result.time_s);
  EXPECT_EQ(got.result.result.message, want.result.result.message);
  EXPECT_EQ(got.result.result.type, want.result.result.type);
  EXPECT_EQ(got.result.result.details, want.result.result.details);
  EXPECT_EQ(got.result.result.system_out, want.result.result.system_out);
  EXPECT_EQ(got.result.result.system_err, want.result.result.system_err);
  EXPECT_EQ(got.agent, want.agent);
  EXPECT_EQ(got.final, want.final);
  EXPECT_EQ(got.status, want.status);
  EXPECT_EQ(got.note, want.note);
}

void ExpectSameEvents(const std::vector<JournalEvent>& got, const std::vector<JournalEvent>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) ExpectSame(got[i], want[i], i);
}

TEST_P(RunJournalContractTest, EveryKindOfEventReadsBackEqualAndInOrder) {
  JournalEvent failed = Attempt("unit", "tests/test_a.py::test_b[\xc3\xa9 \"q\" 'x' \\n;$(y)]", Outcome::kFailed);
  failed.result.classname = "tests.test_a";
  failed.result.name = "test_b[\xc3\xa9]";
  failed.result.properties = {{"agent", "a1"}, {"k", "v with spaces\tand tab"}};
  failed.result.result.time_s = 1.25;
  failed.result.result.message = "assert 1 == 2\nsecond line";
  failed.result.result.type = "AssertionError";
  failed.result.result.details = "Traceback...\n  {json: \"like\"}";
  failed.result.result.system_out = std::string("out\0with nul", 12);
  failed.result.result.system_err = "err";
  JournalEvent decided = Attempt("unit", "tests/test_a.py::test_gone", Outcome::kNotRun, "");
  decided.final = true;
  const std::vector<JournalEvent> want = {
      Collected("unit", {"tests/test_a.py::test_b[\xc3\xa9 \"q\" 'x' \\n;$(y)]", "tests/test_a.py::test_c"},
                {"", "serial=db"}),
      Collected("lint", {}),
      failed,
      Attempt("unit", "tests/test_a.py::test_c", Outcome::kSkipped, "a2"),
      Attempt("unit", "tests/test_a.py::test_b[\xc3\xa9 \"q\" 'x' \\n;$(y)]", Outcome::kPassed, "a2"),
      decided,
      StageEnd("unit", 3, "2 failed"),
      StageEnd("lint", 4, ""),
  };
  {
    TS_ASSERT_OK_AND_ASSIGN(auto journal, Open("run1"));
    for (const JournalEvent& e : want) journal->Append(e);
  }  // closing the journal stores what is queued
  TS_ASSERT_OK_AND_ASSIGN(auto got, Read("run1"));
  ExpectSameEvents(got, want);
}

TEST_P(RunJournalContractTest, AResumedRunAppendsAfterWhatItHad) {
  {
    TS_ASSERT_OK_AND_ASSIGN(auto journal, Open("run1"));
    journal->Append(Collected("unit", {"a", "b"}));
    journal->Append(Attempt("unit", "a"));
  }
  {
    TS_ASSERT_OK_AND_ASSIGN(auto journal, Open("run1", /*resume=*/true));
    journal->Append(Attempt("unit", "b"));
  }
  TS_ASSERT_OK_AND_ASSIGN(auto got, Read("run1"));
  ExpectSameEvents(got, {Collected("unit", {"a", "b"}), Attempt("unit", "a"), Attempt("unit", "b")});
}

TEST_P(RunJournalContractTest, RunsAndProjectsDoNotMix) {
  {
    TS_ASSERT_OK_AND_ASSIGN(auto one, Open("run1"));
    TS_ASSERT_OK_AND_ASSIGN(auto two, Open("run2"));
    TS_ASSERT_OK_AND_ASSIGN(auto other, Open("run1", false, project_ + "-other"));
    one->Append(Attempt("unit", "one"));
    two->Append(Attempt("unit", "two"));
    other->Append(Attempt("unit", "other"));
    one->Append(StageEnd("unit", 2, "one"));
  }
  TS_ASSERT_OK_AND_ASSIGN(auto one, Read("run1"));
  ExpectSameEvents(one, {Attempt("unit", "one"), StageEnd("unit", 2, "one")});
  TS_ASSERT_OK_AND_ASSIGN(auto two, Read("run2"));
  ExpectSameEvents(two, {Attempt("unit", "two")});
  TS_ASSERT_OK_AND_ASSIGN(auto other, Read("run1", project_ + "-other"));
  ExpectSameEvents(other, {Attempt("unit", "other")});
}

TEST_P(RunJournalContractTest, ConcurrentAppendsAllLandInEachWritersOrder) {
  constexpr int kThreads = 8;
  constexpr int kEach = 250;
  {
    TS_ASSERT_OK_AND_ASSIGN(auto journal, Open("run1"));
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          journal->Append(Attempt("s" + std::to_string(t), std::to_string(i)));
        }
      });
    }
    for (std::thread& t : threads) t.join();
  }
  TS_ASSERT_OK_AND_ASSIGN(auto got, Read("run1"));
  ASSERT_EQ(got.size(), static_cast<size_t>(kThreads * kEach));
  std::map<std::string, int> next;  // stage → the index its next event must have
  for (const JournalEvent& e : got) {
    EXPECT_EQ(e.result.id, std::to_string(next[e.stage]++)) << e.stage;
  }
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(next["s" + std::to_string(t)], kEach);
}

TEST_P(RunJournalContractTest, ARunNeverJournaledIsNotFound) {
  EXPECT_THAT(Read("never"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_P(RunJournalContractTest, AnEmptyProjectIsRefusedByServers) {
  if (GetParam() == "file") GTEST_SKIP() << "the file journal is named by its run directory alone";
  EXPECT_THAT(OpenRunJournal(spec_, "", "run1", RunDir("x", "run1")),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

// The file journal keeps exactly its old place, so runs journaled before the other backends still resume.
TEST(FileRunJournalPlaceTest, FileSpecsJournalToTheRunDirectory) {
  char tmpl[] = "/tmp/testshard-journal-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  {
    TS_ASSERT_OK_AND_ASSIGN(auto journal, OpenRunJournal("file:/nonexistent/.testshard", "p", "r", dir));
    journal->Append(StageEnd("unit", 2, ""));
  }
  TS_ASSERT_OK_AND_ASSIGN(auto events, FileRunJournal::Read(dir + "/journal.jsonl"));
  EXPECT_EQ(events.size(), 1u);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Backends, RunJournalContractTest, ::testing::Values("file", "redis", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace testshard::coordinator

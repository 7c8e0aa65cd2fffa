#include "coordinator/run_journal.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::coordinator {
namespace {

using ::testing::HasSubstr;
using ::testshard::testing::StatusIs;

class RunJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ts-journal-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/journal.jsonl";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST_F(RunJournalTest, EventsRoundTrip) {
  {
    TS_ASSERT_OK_AND_ASSIGN(auto j, FileRunJournal::Open(path_));
    JournalEvent c;
    c.kind = JournalEvent::kCollected;
    c.stage = "unit";
    c.ids = {"a.py::t[\\xe9 \\n;$(x)]", "a.py::u"};
    c.groups = {"", "serial=db"};
    j->Append(c);
    JournalEvent a;
    a.kind = JournalEvent::kAttempt;
    a.stage = "unit";
    a.result.id = "a.py::u";
    a.result.result.outcome = Outcome::kFailed;
    a.result.result.message = "boom \xff";
    a.result.properties = {{"k", "v"}};
    a.agent = "agent-1";
    j->Append(a);
    JournalEvent s;
    s.kind = JournalEvent::kStageEnd;
    s.stage = "unit";
    s.status = 4;
    s.note = "why";
    j->Append(s);
  }
  TS_ASSERT_OK_AND_ASSIGN(auto events, FileRunJournal::Read(path_));
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].ids[0], "a.py::t[\\xe9 \\n;$(x)]");
  EXPECT_EQ(events[0].groups, (std::vector<std::string>{"", "serial=db"}));
  EXPECT_EQ(events[1].result.result.outcome, Outcome::kFailed);
  EXPECT_EQ(events[1].result.properties.size(), 1u);
  EXPECT_EQ(events[1].agent, "agent-1");
  EXPECT_EQ(events[2].status, 4);
  EXPECT_EQ(events[2].note, "why");
}

TEST_F(RunJournalTest, ATornLastLineIsIgnoredAndATornMiddleLineIsAnError) {
  {
    TS_ASSERT_OK_AND_ASSIGN(auto j, FileRunJournal::Open(path_));
    JournalEvent c;
    c.kind = JournalEvent::kCollected;
    c.stage = "unit";
    c.ids = {"x"};
    j->Append(c);
  }
  std::ofstream(path_, std::ios::app) << "{\"k\":1,\"s\":\"un";
  TS_ASSERT_OK_AND_ASSIGN(auto events, FileRunJournal::Read(path_));
  EXPECT_EQ(events.size(), 1u);
  std::ofstream(path_, std::ios::app) << "\n{\"k\":0,\"s\":\"unit\",\"ids\":[]}\n";
  EXPECT_THAT(FileRunJournal::Read(path_), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("journal.jsonl:2")));
}

}  // namespace
}  // namespace testshard::coordinator

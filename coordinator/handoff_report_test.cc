#include "coordinator/handoff_report.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::coordinator {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using Check = DatabaseConfig::HandoffCheck;

HandoffFinding Foreign(std::string agent, std::string db) {
  HandoffFinding f;
  f.kind = HandoffFinding::Kind::kForeignDatabase;
  f.agent = agent;
  f.database = db;
  f.message = "agent " + agent + ": its tests used " + db;
  return f;
}

TEST(HandoffReportTest, NothingToSayWithoutFindings) {
  HandoffReport r(Check::kFail);
  EXPECT_FALSE(r.Fails());
  EXPECT_EQ(r.Summary(), "");
  EXPECT_FALSE(r.Suite().has_value());
}

TEST(HandoffReportTest, ADatabaseSeveralAgentsUsedIsCalledShared) {
  HandoffReport r(Check::kFail);
  r.Add(Foreign("local-1", "shared_app"));
  r.Add(Foreign("local-2", "shared_app"));
  r.Add(Foreign("local-2", "shared_app"));  // a repeat
  EXPECT_EQ(r.findings().size(), 2u);
  EXPECT_TRUE(r.Fails());
  std::string s = r.Summary();
  EXPECT_THAT(s, HasSubstr("database \"shared_app\" was used by the tests of 2 agents (local-1, local-2)"));
  EXPECT_THAT(s, HasSubstr("The run fails because of this"));
  auto suite = r.Suite();
  ASSERT_TRUE(suite.has_value());
  ASSERT_EQ(suite->cases.size(), 1u);
  EXPECT_EQ(suite->cases[0].name, "foreign_database[shared_app]");
  EXPECT_EQ(suite->cases[0].result.outcome, Outcome::kError);
  EXPECT_THAT(suite->cases[0].result.details, HasSubstr("local-1"));
  EXPECT_THAT(suite->cases[0].result.details, HasSubstr("local-2"));
}

TEST(HandoffReportTest, WarnReportsWithoutFailing) {
  HandoffReport r(Check::kWarn);
  r.Add(Foreign("local-1", "postgres"));
  EXPECT_FALSE(r.Fails());
  EXPECT_THAT(r.Summary(), HasSubstr("\"warn\""));
  auto suite = r.Suite();
  ASSERT_TRUE(suite.has_value());
  EXPECT_EQ(suite->cases[0].result.outcome, Outcome::kSkipped);
}

TEST(HandoffReportTest, NotesNeitherFailNorEnterTheReport) {
  HandoffReport r(Check::kFail);
  HandoffFinding note;
  note.kind = HandoffFinding::Kind::kNote;
  note.message = "name too long";
  r.Add(note);
  EXPECT_FALSE(r.Fails());
  EXPECT_THAT(r.Summary(), HasSubstr("note: name too long"));
  EXPECT_THAT(r.Summary(), Not(HasSubstr("fails")));
  EXPECT_FALSE(r.Suite().has_value());
}

TEST(HandoffReportTest, LeftoverTablesFailTheRun) {
  HandoffReport r(Check::kFail);
  HandoffFinding f;
  f.kind = HandoffFinding::Kind::kLeftoverTables;
  f.agent = "local-3";
  f.message = "set reset = \"shard\"";
  r.Add(f);
  EXPECT_TRUE(r.Fails());
  EXPECT_THAT(r.Summary(), HasSubstr("tests failed on tables an earlier test process left behind"));
  auto suite = r.Suite();
  ASSERT_TRUE(suite.has_value());
  EXPECT_EQ(suite->cases[0].name, "leftover_tables[local-3]");
}

}  // namespace
}  // namespace testshard::coordinator

// `testshard run` plans with the duration history: a run records every test's duration, the next run plans with
// it, a group marker keeps its tests together, and an unreachable store does not fail the run.
#include <map>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/history/history_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

namespace testshard::e2e {
namespace {

using ::testing::HasSubstr;

constexpr char kIni[] = R"([pytest]
addopts = --strict-markers
markers =
    unit
    serial(key): tests that must run in one batch
)";

// Each test says which agent and which pytest process ran it.
constexpr char kModule[] = R"PY(
import os, time, pytest

@pytest.mark.unit
@pytest.mark.parametrize("i", range(6))
def test_plain(i, record_property):
    time.sleep(0.05)
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    record_property("pid", str(os.getpid()))

@pytest.mark.unit
@pytest.mark.serial("accounts")
@pytest.mark.parametrize("i", range(2))
def test_serial(i, record_property):
    time.sleep(0.05)
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    record_property("pid", str(os.getpid()))
)PY";

std::string Config(const std::string& top = "", const std::string& stage = "") {
  return absl::StrCat("command = [\"/usr/bin/python3\", \"-m\", \"pytest\"]\nproject = \"planning\"\n", top,
                      "\n[[stages]]\nname = \"unit\"\nmarkers = \"unit\"\n", stage);
}

class PlanningE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    project_.Write("pytest.ini", kIni);
    project_.Write("tests/test_a.py", kModule);
    project_.Write("tests/test_b.py", kModule);
  }
  Project::Result Run(int agents) {
    return project_.Testshard({"run", "--agents", std::to_string(agents), "--junit-out", "report.xml"});
  }
  Project project_;
};

TEST_F(PlanningE2eTest, FirstRunRecordsEveryDurationAndTheSecondPlansWithThem) {
  project_.Write("testshard.toml", Config());
  Project::Result first = Run(2);
  ASSERT_EQ(first.process.exit_code, 0) << first.output;
  EXPECT_THAT(first.output, HasSubstr("stage unit planned: 16 test(s), 0 known from history")) << first.output;

  // The default store: a file store under the project's .testshard.
  auto store = history::OpenHistoryStore("file:" + project_.dir() + "/.testshard");
  ASSERT_TRUE(store.ok()) << store.status();
  auto records = (*store)->ReadAll("planning");
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 16u) << first.output;
  for (const history::TestHistory& h : *records) {
    EXPECT_EQ(h.runs, 1) << h.test_id;
    EXPECT_EQ(h.outcomes, "P") << h.test_id;
    EXPECT_TRUE(h.has_duration()) << h.test_id;
    EXPECT_GT(h.ewma_s, 0) << h.test_id;
  }

  Project::Result second = Run(2);
  ASSERT_EQ(second.process.exit_code, 0) << second.output;
  EXPECT_THAT(second.output, HasSubstr("stage unit planned: 16 test(s), 16 known from history")) << second.output;
  records = (*store)->ReadAll("planning");
  ASSERT_TRUE(records.ok()) << records.status();
  for (const history::TestHistory& h : *records) EXPECT_EQ(h.runs, 2) << h.test_id;
}

TEST_F(PlanningE2eTest, TestsOfOneGroupRunInOneWorker) {
  project_.Write("testshard.toml", Config("", "group_marker = \"serial\"\n"));
  Project::Result r = Run(3);
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  Report report = ReadReport(project_.dir() + "/report.xml");
  ASSERT_TRUE(report.parsed) << report.error;
  ASSERT_EQ(report.Count(Outcome::kPassed), 16) << r.output;
  std::set<std::string> agents, serial_workers;
  for (const ReportedCase& c : report.cases) {
    const std::string worker = c.properties.at("agent") + "/" + c.properties.at("pid");
    agents.insert(c.properties.at("agent"));
    if (c.name.rfind("test_serial", 0) == 0) serial_workers.insert(worker);
  }
  // The four "accounts" tests, from two modules, ran in one process, while the rest was spread out.
  EXPECT_EQ(serial_workers.size(), 1u) << r.output;
  EXPECT_GE(agents.size(), 2u) << r.output;
}

TEST_F(PlanningE2eTest, UnreachableHistoryStoreIsAWarningNotAFailure) {
  // Nothing listens on port 1 of the loopback: the connection is refused at once.
  project_.Write("testshard.toml", Config("history = \"redis://127.0.0.1:1\"\n"));
  Project::Result r = Run(2);
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  Report report = ReadReport(project_.dir() + "/report.xml");
  ASSERT_TRUE(report.parsed) << report.error;
  EXPECT_EQ(report.Count(Outcome::kPassed), 16);
  EXPECT_THAT(r.output, HasSubstr("warning: history store redis://127.0.0.1:1")) << r.output;
  EXPECT_THAT(r.output, HasSubstr("warning: durations not recorded")) << r.output;
}

}  // namespace
}  // namespace testshard::e2e

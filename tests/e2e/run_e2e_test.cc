// `testshard run` end to end: the real binary, 3 agents, an embedded PostgreSQL and real pytest suites.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

namespace testshard::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Tests connect as app_user to the URL testshard hands over, and record which database they saw.
constexpr char kDbTests[] = R"PY(
import os, time, psycopg2, pytest

@pytest.mark.db
@pytest.mark.parametrize("i", range(12))
def test_db(i, record_property):
    time.sleep(0.3)  # long enough that every agent is up before the shards run out
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    cur = conn.cursor()
    cur.execute("SELECT current_database(), current_user, count(*) FROM seeded")
    db, user, rows = cur.fetchone()
    record_property("database", db)
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    assert user == "app_user"
    assert rows == 3
    assert "TESTSHARD_TOKEN" not in os.environ  # the agent's credential stays with the agent
)PY";

constexpr char kSetup[] = R"PY(
import os, psycopg2
conn = psycopg2.connect(os.environ["DATABASE_URL"])
conn.autocommit = True
conn.cursor().execute("CREATE TABLE seeded (id int); INSERT INTO seeded VALUES (1), (2), (3); "
                      "GRANT SELECT ON seeded TO app_user")
)PY";

constexpr char kWeirdTests[] = R"PY(
import os, pytest

IDS = ["semi;colon", "$(touch pwned)", "`touch pwned2`", "quote's \"double\"", "sp ace", "-dash", "\u00e9t\u00e9",
       "br[ack]et", "a::b", "back\\slash", "* glob ?", "> redirect", "&& echo hi |"]

@pytest.mark.weird
@pytest.mark.parametrize("value", IDS, ids=IDS)
def test_weird(value, record_property):
    record_property("value", value)
    assert not os.path.exists("pwned") and not os.path.exists("pwned2")
)PY";

// `top` goes before the first table, so it holds top-level keys.
std::string Config(const std::string& stages, const std::string& top = "") {
  return absl::StrCat(R"(command = ["/usr/bin/python3", "-m", "pytest"]
)", top, R"(
[database]
role = "app_user"
setup = [["/usr/bin/python3", "setup_db.py"]]
template_inputs = ["setup_db.py"]
env = { DATABASE_URL = "{url}" }

)",
                      stages);
}

class RunE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    project_.Write("setup_db.py", kSetup);
    project_.Write("tests/test_db.py", kDbTests);
  }
  Project::Result Run(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"run", "--agents", "3", "--junit-out", "report.xml"};
    args.insert(args.end(), extra.begin(), extra.end());
    return project_.Testshard(args);
  }
  Report ReadBack() { return ReadReport(project_.dir() + "/report.xml"); }
  Project project_;
};

TEST_F(RunE2eTest, EveryTestOnceAndEachAgentItsOwnDatabase) {
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"db\"\nmarkers = \"db\"\n"));
  Project::Result r = Run();
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  Report report = ReadBack();
  ASSERT_TRUE(report.parsed) << report.error;
  ASSERT_EQ(report.cases.size(), 12u);
  for (const auto& [id, n] : report.Appearances()) EXPECT_EQ(n, 1) << id;
  EXPECT_EQ(report.Count(Outcome::kPassed), 12);
  // Each agent had a database of its own, and no two agents shared one.
  std::map<std::string, std::set<std::string>> dbs_by_agent;
  std::map<std::string, std::set<std::string>> agents_by_db;
  for (const ReportedCase& c : report.cases) {
    dbs_by_agent[c.properties.at("agent")].insert(c.properties.at("database"));
    agents_by_db[c.properties.at("database")].insert(c.properties.at("agent"));
  }
  EXPECT_GE(dbs_by_agent.size(), 2u) << r.output;
  for (const auto& [agent, dbs] : dbs_by_agent) EXPECT_EQ(dbs.size(), 1u) << agent;
  for (const auto& [db, agents] : agents_by_db) EXPECT_EQ(agents.size(), 1u) << db;
}

TEST_F(RunE2eTest, TestIdsFullOfShellMetacharactersRunAsThemselves) {
  project_.Write("tests/test_weird.py", kWeirdTests);
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"weird\"\nmarkers = \"weird\"\n"));
  Project::Result r = Run();
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  Report report = ReadBack();
  ASSERT_EQ(report.cases.size(), 13u) << r.output;
  EXPECT_EQ(report.Count(Outcome::kPassed), 13);
  std::set<std::string> values;
  for (const ReportedCase& c : report.cases) values.insert(c.properties.at("value"));
  EXPECT_EQ(values.size(), 13u);
  EXPECT_TRUE(values.count("$(touch pwned)"));
  EXPECT_TRUE(values.count("quote's \"double\""));
  EXPECT_FALSE(fs::exists(project_.dir() + "/pwned"));
  EXPECT_FALSE(fs::exists(project_.dir() + "/pwned2"));
}

TEST_F(RunE2eTest, FailingStageStopsTheNext) {
  project_.Write("tests/test_fail.py",
                 "import pytest\n\n@pytest.mark.fail\ndef test_broken():\n    assert 1 == 2\n\n"
                 "@pytest.mark.fail\ndef test_fine():\n    pass\n");
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"first\"\nmarkers = \"fail\"\n\n"
                                          "[[stages]]\nname = \"second\"\nmarkers = \"db\"\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("stage 'first' failed"));
  Report report = ReadBack();
  ASSERT_EQ(report.cases.size(), 2u);  // the second stage never collected
  EXPECT_EQ(report.Count(Outcome::kFailed), 1);
  EXPECT_EQ(report.Count(Outcome::kPassed), 1);
}

TEST_F(RunE2eTest, MaxfailCancelsTheRestOfTheStage) {
  project_.Write("tests/test_fail.py",
                 "import pytest, time\n\n@pytest.mark.fail\n@pytest.mark.parametrize('i', range(30))\n"
                 "def test_broken(i):\n    time.sleep(0.05)\n    assert False\n");
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"first\"\nmarkers = \"fail\"\nmaxfail = 2\n\n"
                                          "[[stages]]\nname = \"second\"\nmarkers = \"db\"\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;
  Report report = ReadBack();
  ASSERT_EQ(report.cases.size(), 30u) << r.output;
  for (const auto& [id, n] : report.Appearances()) EXPECT_EQ(n, 1) << id;
  int failed = report.Count(Outcome::kFailed);
  EXPECT_GE(failed, 2);
  EXPECT_LE(failed, 6);  // at most maxfail per agent before the cancel reaches them
  EXPECT_EQ(report.Count(Outcome::kNotRun), 30 - failed);
  for (const ReportedCase& c : report.cases) {
    if (c.outcome == Outcome::kNotRun) {
      EXPECT_THAT(c.message, HasSubstr("maxfail"));
    }
  }
}

TEST_F(RunE2eTest, ShardKilledMidRunYieldsErrorsNotMissingTests) {
  project_.Write("tests/test_crash.py", R"PY(
import os, signal, pytest

@pytest.mark.crash
@pytest.mark.parametrize("i", range(9))
def test_maybe_die(i):
    if i == 4:
        os.kill(os.getpid(), signal.SIGKILL)
)PY");
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"crashy\"\nmarkers = \"crash\"\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;
  Report report = ReadBack();
  ASSERT_EQ(report.cases.size(), 9u) << r.output;
  for (const auto& [id, n] : report.Appearances()) EXPECT_EQ(n, 1) << id;
  // Only the test that was running when its pytest died is lost, as an error naming the signal; the rest of its
  // shard ran again on a fresh worker.
  for (const ReportedCase& c : report.cases) {
    if (c.name == "test_maybe_die[4]") {
      EXPECT_EQ(c.outcome, Outcome::kError);
      EXPECT_THAT(c.message, HasSubstr("signal 9"));
    } else {
      EXPECT_EQ(c.outcome, Outcome::kPassed) << c.name << ": " << c.message;
    }
  }
}

// Without a warm worker each shard is one pytest process: a kill loses that process's whole shard, which becomes
// errors naming the signal, never missing tests.
TEST_F(RunE2eTest, OneShotShardKilledMidRunYieldsErrorsNotMissingTests) {
  project_.Write("tests/test_crash.py", R"PY(
import os, signal, pytest

@pytest.mark.crash
@pytest.mark.parametrize("i", range(9))
def test_maybe_die(i):
    if i == 4:
        os.kill(os.getpid(), signal.SIGKILL)
)PY");
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"crashy\"\nmarkers = \"crash\"\n", "warm = false\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;
  Report report = ReadBack();
  ASSERT_EQ(report.cases.size(), 9u) << r.output;
  for (const auto& [id, n] : report.Appearances()) EXPECT_EQ(n, 1) << id;
  int errors = 0;
  for (const ReportedCase& c : report.cases) {
    if (c.outcome == Outcome::kError) {
      ++errors;
      EXPECT_THAT(c.message, HasSubstr("signal 9"));
    }
  }
  EXPECT_EQ(errors, 3);
  EXPECT_EQ(report.Count(Outcome::kPassed), 6);
}

// A test that fails the first time it runs anywhere and passes after: retried on another agent, reported as flaky
// (Surefire's flakyFailure) and in the summary, never as a plain pass.
TEST_F(RunE2eTest, APassOnRetryIsReportedFlaky) {
  project_.Write("tests/test_flaky.py", R"PY(
import os, pytest

@pytest.mark.unit
def test_flaky(record_property):
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    flag = os.path.join(os.path.dirname(__file__), "..", "failed-once")
    if not os.path.exists(flag):
        open(flag, "w").close()
        assert False, "first attempt fails"

@pytest.mark.unit
@pytest.mark.parametrize("i", range(5))
def test_steady(i):
    pass
)PY");
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"unit\"\nmarkers = \"unit\"\nretries = 2\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("FLAKY  tests/test_flaky.py::test_flaky - failed 1 time(s) first"));
  EXPECT_THAT(r.output, HasSubstr("(1 flaky)"));
  Report report = ReadBack();
  ASSERT_EQ(report.cases.size(), 6u);
  EXPECT_EQ(report.Count(Outcome::kPassed), 6);
  EXPECT_THAT(project_.Read("report.xml"), HasSubstr("<flakyFailure message=\"AssertionError: first attempt fails"));
}

TEST_F(RunE2eTest, BadConfigIsRefusedBeforeAnythingRuns) {
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"db\"\nmarkers = \"db and\"\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 4) << r.output;
  EXPECT_THAT(r.output, HasSubstr("testshard.toml:11: stages[0].markers: bad marker expression"));
  EXPECT_FALSE(fs::exists(project_.dir() + "/report.xml"));
}

TEST_F(RunE2eTest, CollectionErrorFailsTheStageWithPytestsMessage) {
  project_.Write("tests/test_broken.py", "import no_such_module_anywhere\n");
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"db\"\nmarkers = \"db\"\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;
  Report report = ReadBack();
  ASSERT_EQ(report.cases.size(), 1u);
  EXPECT_EQ(report.cases[0].outcome, Outcome::kError);
  EXPECT_THAT(project_.Read("report.xml"), HasSubstr("no_such_module_anywhere"));
}

TEST_F(RunE2eTest, FailingDatabaseSetupIsReportedNotPassed) {
  project_.Write("setup_db.py", "raise SystemExit('migration 0042 failed: relation \"orgs\" does not exist')\n");
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"db\"\nmarkers = \"db\"\n"));
  Project::Result r = Run();
  EXPECT_NE(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(project_.Read("report.xml"), HasSubstr("migration 0042 failed"));
  Report report = ReadBack();
  EXPECT_EQ(report.Count(Outcome::kPassed), 0);
}

// Ctrl-C: the run stops, the report still lists every collected test, and the embedded server is gone.
TEST_F(RunE2eTest, InterruptLeavesACompleteReportAndNoServer) {
  project_.Write("tests/test_slow.py",
                 "import pytest, time\n\n@pytest.mark.unit\n@pytest.mark.parametrize('i', range(6))\n"
                 "def test_slow(i):\n    time.sleep(30)\n");
  project_.Write("testshard.toml", Config("[[stages]]\nname = \"slow\"\nmarkers = \"unit\"\n"));
  ProcessSpec spec;
  spec.argv = {TESTSHARD_BIN, "run", "--agents", "3", "--junit-out", "report.xml"};
  spec.cwd = project_.dir();
  spec.stdout_path = spec.stderr_path = project_.dir() + "/out.log";
  auto child = Subprocess::Start(spec);
  ASSERT_TRUE(child.ok());
  // Wait until the shards are running (the live line shows the stage), then interrupt.
  for (int i = 0; i < 600 && project_.Read("out.log").find("running") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string before = project_.Read("out.log");
  size_t pos = before.find("embedded PostgreSQL ready in ");
  ASSERT_NE(pos, std::string::npos) << before;
  std::string pgdir = before.substr(before.find('(', pos) + 1);
  pgdir = pgdir.substr(0, pgdir.find(')'));
  kill(child->pid(), SIGINT);
  ProcessResult r = child->Wait();
  EXPECT_EQ(r.exit_code, 2) << project_.Read("out.log");
  Report report = ReadBack();
  ASSERT_EQ(report.cases.size(), 6u) << project_.Read("out.log");
  EXPECT_EQ(report.Count(Outcome::kNotRun), 6);
  EXPECT_FALSE(fs::exists(pgdir)) << pgdir;
}

}  // namespace
}  // namespace testshard::e2e

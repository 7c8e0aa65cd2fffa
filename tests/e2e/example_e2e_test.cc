// The example suite (examples/tenantapp): its own isolation checker against a real server, and every stage of it
// through `testshard run` with 3 agents, each agent's sessions checked from the server's side.
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/postgres/embedded_postgres.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

namespace testshard::e2e {
namespace {

namespace fs = std::filesystem;

const std::string kExample = std::string(TESTSHARD_SOURCE_DIR) + "/examples/tenantapp";

TEST(ExampleE2eTest, TestshardRunsEveryStageAndReportsEveryTestOnce) {
  Project scratch;  // only for the report and the output
  ProcessSpec spec;
  spec.argv = {TESTSHARD_BIN, "run", "--config", kExample + "/pyproject.toml", "--agents", "3", "--branch", "main",
               "--junit-out", scratch.dir() + "/report.xml", "--cobertura-out", scratch.dir() + "/coverage.xml"};
  spec.cwd = scratch.dir();
  spec.stdout_path = spec.stderr_path = scratch.dir() + "/out.log";
  spec.timeout = absl::Minutes(10);
  PosixProcessRunner runner;
  auto r = runner.Run(spec, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << scratch.Read("out.log");
  Report report = ReadReport(scratch.dir() + "/report.xml");
  ASSERT_TRUE(report.parsed) << report.error;
  // The example measures its app ([tool.testshard.coverage]): one report, paths relative to the example.
  std::string coverage = scratch.Read("coverage.xml");
  EXPECT_THAT(coverage, ::testing::HasSubstr("filename=\"tenantapp/models.py\"")) << scratch.Read("out.log");
  // Each stage's suite holds each of its tests once; stages may share tests (a security test can be slow too).
  std::map<std::string, std::map<std::string, int>> per_stage;
  for (const ReportedCase& c : report.cases) ++per_stage[c.suite][c.classname + "::" + c.name];
  EXPECT_EQ(per_stage.size(), 5u);
  for (const auto& [stage, ids] : per_stage) {
    EXPECT_FALSE(ids.empty()) << stage;
    for (const auto& [id, n] : ids) EXPECT_EQ(n, 1) << stage << " " << id;
  }
  EXPECT_EQ(report.Count(Outcome::kFailed) + report.Count(Outcome::kError), 0) << scratch.Read("out.log");
  EXPECT_EQ(report.Count(Outcome::kNotRun), 0);
  EXPECT_GE(report.cases.size(), 300u);
  // The server's view (pg_stat_activity, as each agent's hand-off check saw it): each agent's tests connected only
  // to that agent's own database, and no two agents' to the same one.
  std::string run_id = RunIdFromOutput(scratch.Read("out.log"));
  ASSERT_FALSE(run_id.empty()) << scratch.Read("out.log");
  std::map<std::string, std::set<std::string>> dbs_by_agent;
  for (const AgentSession& s : ReadAgentSessions(kExample, run_id)) {
    EXPECT_TRUE(s.own) << s.agent_dir << " " << s.database << " " << s.query;
    if (s.database != "postgres") dbs_by_agent[s.agent_dir].insert(s.database);
  }
  EXPECT_GE(dbs_by_agent.size(), 2u);
  std::set<std::string> all;
  for (const auto& [agent, dbs] : dbs_by_agent) {
    EXPECT_EQ(dbs.size(), 1u) << agent;
    for (const std::string& db : dbs) EXPECT_TRUE(all.insert(db).second) << "shared: " << db;
  }
}

// The suite keeps the promises testshard relies on: it passes serially on a fresh template clone, any half in
// reverse order passes, and two halves pass at once on two databases.
TEST(ExampleE2eTest, IsolationContractHolds) {
  auto pg = pg::EmbeddedPostgres::Start({});
  ASSERT_TRUE(pg.ok()) << pg.status();
  Project scratch;
  ProcessSpec spec;
  spec.argv = {"/usr/bin/python3", "scripts/check_suite.py", "--admin-url", (*pg)->admin().Url()};
  spec.cwd = kExample;
  spec.stdout_path = spec.stderr_path = scratch.dir() + "/check.log";
  spec.timeout = absl::Minutes(20);
  PosixProcessRunner runner;
  auto r = runner.Run(spec, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << scratch.Read("check.log");
}

}  // namespace
}  // namespace testshard::e2e

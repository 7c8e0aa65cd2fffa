// The Django example (examples/djangoapp: Django 3.2 + pytest-django, settings from DB_HOST/DB_PORT/DB_NAME/...)
// through `testshard run` with 3 agents: every test once, and - from the server's pg_stat_activity, as the
// hand-off check saw it - each agent's tests only in its own database, whether pytest-django reuses the agent's
// clone or creates test_<name> next to it. Settings that pin the test database's name are caught.
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

namespace testshard::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kExample = std::string(TESTSHARD_SOURCE_DIR) + "/examples/djangoapp";
constexpr size_t kTests = 291;

class DjangoE2eTest : public ::testing::Test {
 protected:
  // A copy of the example, so runs do not write into the source tree and can run side by side.
  void SetUp() override {
    for (const auto& e : fs::recursive_directory_iterator(kExample)) {
      std::string rel = fs::relative(e.path(), kExample).string();
      if (absl::StrContains(rel, "__pycache__") || absl::StartsWith(rel, ".testshard")) continue;
      if (!e.is_regular_file()) continue;
      fs::create_directories((fs::path(project_.dir()) / rel).parent_path());
      fs::copy_file(e.path(), fs::path(project_.dir()) / rel, fs::copy_options::overwrite_existing);
    }
    // Project's default pytest.ini would shadow the example's [tool.pytest.ini_options].
    fs::remove(fs::path(project_.dir()) / "pytest.ini");
  }
  void Edit(const std::string& file, const std::string& from, const std::string& to) {
    std::string text = project_.Read(file);
    ASSERT_TRUE(absl::StrContains(text, from)) << file << " has no " << from;
    project_.Write(file, absl::StrReplaceAll(text, {{from, to}}));
  }
  Project::Result Run() {
    return project_.Testshard({"run", "--agents", "3", "--junit-out", "report.xml"}, {}, absl::Minutes(8));
  }
  // Every test exactly once and passed, in the three stages.
  void ExpectEveryTestPassedOnce(const Project::Result& r) {
    Report report = ReadReport(project_.dir() + "/report.xml");
    ASSERT_TRUE(report.parsed) << report.error;
    std::map<std::string, int> per_stage;
    for (const ReportedCase& c : report.cases) ++per_stage[c.suite];
    EXPECT_EQ(per_stage, (std::map<std::string, int>{{"unit", 161}, {"db", 107}, {"transactional", 23}})) << r.output;
    EXPECT_EQ(report.cases.size(), kTests);
    for (const auto& [id, n] : report.Appearances()) EXPECT_EQ(n, 1) << id;
    EXPECT_EQ(report.Count(Outcome::kPassed), static_cast<int>(kTests)) << r.output;
  }
  // The agents' sessions, by agent: databases other than the maintenance ones.
  std::map<std::string, std::set<std::string>> DatabasesByAgent() {
    std::map<std::string, std::set<std::string>> out;
    for (const AgentSession& s : ReadAgentSessions(project_.dir())) {
      EXPECT_TRUE(s.own) << s.agent_dir << " " << s.database << " " << s.query;
      if (s.database != "postgres") out[s.agent_dir].insert(s.database);
    }
    return out;
  }
  Project project_;
};

TEST_F(DjangoE2eTest, ReusedClonesAreEachAgentsTestDatabase) {
  Project::Result r = Run();
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr("Database hand-off")));
  ExpectEveryTestPassedOnce(r);
  std::map<std::string, std::set<std::string>> dbs = DatabasesByAgent();
  EXPECT_GE(dbs.size(), 2u) << "the check saw too few agents' sessions";
  std::set<std::string> all;
  for (const auto& [agent, names] : dbs) {
    // pytest-django used the clone itself: no test_ database was made.
    ASSERT_EQ(names.size(), 1u) << agent;
    EXPECT_TRUE(absl::StartsWith(*names.begin(), "ts_")) << *names.begin();
    EXPECT_TRUE(all.insert(*names.begin()).second) << "shared: " << *names.begin();
  }
}

TEST_F(DjangoE2eTest, PytestDjangoCreatesItsTestDatabaseInsideEachAgentsNamespace) {
  Edit("pyproject.toml", "django_test_db = \"reuse\"", "django_test_db = \"create\"");
  Project::Result r = Run();
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr("Database hand-off")));
  ExpectEveryTestPassedOnce(r);
  std::map<std::string, std::set<std::string>> dbs = DatabasesByAgent();
  EXPECT_GE(dbs.size(), 2u);
  std::set<std::string> all;
  for (const auto& [agent, names] : dbs) {
    for (const std::string& db : names) {
      EXPECT_TRUE(absl::StartsWith(db, "test_ts_")) << agent << " used " << db;
      EXPECT_TRUE(all.insert(db).second) << "shared: " << db;
    }
  }
}

// Settings that pin TEST.NAME (common in Django projects) send every agent's pytest-django to one test database:
// with "create" the agents trample it and the check names it; with "reuse" testshard points TEST.NAME at each
// agent's clone and the suite runs as it should.
TEST_F(DjangoE2eTest, PinnedTestDatabaseNameIsCaughtAndReuseFixesIt) {
  Edit("djangoapp/settings.py", "\"CONN_MAX_AGE\": None,",
       "\"CONN_MAX_AGE\": None,\n        \"TEST\": {\"NAME\": \"test_djangoapp\"},");
  Edit("pyproject.toml", "django_test_db = \"reuse\"", "django_test_db = \"create\"");
  Project::Result created = Run();
  EXPECT_NE(created.process.exit_code, 0) << created.output;
  EXPECT_THAT(created.output, HasSubstr("on database \"test_djangoapp\""));
  EXPECT_THAT(created.output, HasSubstr("set django_test_db = \"reuse\""));

  Edit("pyproject.toml", "django_test_db = \"create\"", "django_test_db = \"reuse\"");
  Project::Result reused = Run();
  ASSERT_EQ(reused.process.exit_code, 0) << reused.output;
  ExpectEveryTestPassedOnce(reused);
}

}  // namespace
}  // namespace testshard::e2e

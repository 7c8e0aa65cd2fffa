// Database isolation through the real binary: fresh databases per shard, the RLS warning in the run's output, the
// embedded server after kill -9 of its owner, and a server that cannot be reached.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
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

constexpr char kSetup[] = R"PY(
import os, psycopg2
conn = psycopg2.connect(os.environ["DATABASE_URL"])
conn.autocommit = True
conn.cursor().execute("CREATE TABLE marks (lease text); GRANT SELECT, INSERT ON marks TO app_user")
)PY";

// Each test leaves a mark naming its lease, and fails if it finds another lease's mark: with reset = "shard" no
// lease may see another's writes.
constexpr char kMarkTests[] = R"PY(
import os, time, psycopg2, pytest

@pytest.mark.db
@pytest.mark.parametrize("i", range(12))
def test_mark(i, record_property):
    time.sleep(0.1)
    lease = os.environ["TESTSHARD_LEASE"]
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT current_database(), current_user")
    db, user = cur.fetchone()
    record_property("database", db)
    record_property("lease", lease)
    cur.execute("SELECT count(*) FROM marks WHERE lease <> %s", (lease,))
    others = cur.fetchone()[0]
    cur.execute("INSERT INTO marks VALUES (%s)", (lease,))
    assert user == "app_user"
    assert others == 0, "saw another shard's writes"
)PY";

// `top` holds top-level keys (before the first table).
std::string Config(const std::string& database_extra, const std::string& stages, const std::string& top = "") {
  return absl::StrCat(R"(command = ["/usr/bin/python3", "-m", "pytest"]
)",
                      top, R"(
[database]
setup = [["/usr/bin/python3", "setup_db.py"]]
template_inputs = ["setup_db.py"]
env = { DATABASE_URL = "{url}" }
)",
                      database_extra, "\n", stages);
}

class DatabaseE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    project_.Write("setup_db.py", kSetup);
    project_.Write("tests/test_mark.py", kMarkTests);
  }
  Project project_;
};

TEST_F(DatabaseE2eTest, ShardResetGivesEveryShardAFreshDatabase) {
  project_.Write("testshard.toml", Config("role = \"app_user\"\npool_size = 2\n",
                                          "[[stages]]\nname = \"db\"\nmarkers = \"db\"\nreset = \"shard\"\n"));
  Project::Result r = project_.Testshard({"run", "--agents", "2", "--junit-out", "report.xml"});
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  Report report = ReadReport(project_.dir() + "/report.xml");
  ASSERT_EQ(report.cases.size(), 12u) << r.output;
  EXPECT_EQ(report.Count(Outcome::kPassed), 12) << r.output;
  std::map<std::string, std::set<std::string>> leases_by_db;
  std::set<std::string> leases;
  for (const ReportedCase& c : report.cases) {
    leases_by_db[c.properties.at("database")].insert(c.properties.at("lease"));
    leases.insert(c.properties.at("lease"));
  }
  for (const auto& [db, ls] : leases_by_db) EXPECT_EQ(ls.size(), 1u) << db << " served more than one shard";
  EXPECT_EQ(leases_by_db.size(), leases.size());
  EXPECT_GE(leases.size(), 2u);
}

// The tests' role is the embedded server's superuser: the run's own output says RLS does not apply to it.
TEST_F(DatabaseE2eTest, TestRoleThatBypassesRlsIsWarnedAboutInTheRunOutput) {
  project_.Write("setup_db.py", "import os, psycopg2\npsycopg2.connect(os.environ['DATABASE_URL'])\n");
  project_.Write("tests/test_plain.py", "import pytest\n\n@pytest.mark.unit\ndef test_plain():\n    pass\n");
  project_.Write("testshard.toml", Config("", "[[stages]]\nname = \"unit\"\nmarkers = \"unit\"\n"));
  Project::Result r = project_.Testshard({"run", "--agents", "1", "--junit-out", "report.xml"});
  EXPECT_EQ(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("a superuser: row level security policies do not apply to it"));
}

// kill -9 of `testshard run`: its server dies with it (parent-death signal), and the next run removes the
// directory it left.
TEST_F(DatabaseE2eTest, KilledRunsServerDiesAndItsClusterIsRemovedOnTheNextStart) {
  std::string base = project_.dir() + "/pgbase";
  fs::create_directories(base);
  fs::permissions(base, fs::perms::all);
  project_.Write("tests/test_slow.py",
                 "import pytest, time\n\n@pytest.mark.unit\ndef test_slow():\n    time.sleep(60)\n");
  project_.Write("testshard.toml", Config(absl::StrCat("role = \"app_user\"\ndata_dir = \"", base, "\"\n"),
                                          "[[stages]]\nname = \"slow\"\nmarkers = \"unit\"\n"));
  ProcessSpec spec;
  spec.argv = {TESTSHARD_BIN, "run", "--agents", "1", "--junit-out", "report.xml"};
  spec.cwd = project_.dir();
  spec.stdout_path = spec.stderr_path = project_.dir() + "/out.log";
  auto child = Subprocess::Start(spec);
  ASSERT_TRUE(child.ok());
  for (int i = 0; i < 600 && project_.Read("out.log").find("running") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Clusters only: the cached initdb (testshard-pgcache-*) lives there too, on purpose.
  auto clusters_in = [](const std::string& dir) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().filename().string().rfind("testshard-pg-", 0) == 0) out.push_back(e.path());
    }
    return out;
  };
  std::vector<fs::path> clusters = clusters_in(base);
  ASSERT_EQ(clusters.size(), 1u) << project_.Read("out.log");
  pid_t server = 0;
  std::ifstream(clusters[0] / "data" / "postmaster.pid") >> server;
  ASSERT_GT(server, 0);

  kill(child->pid(), SIGKILL);
  child->Wait();
  for (int i = 0; i < 500 && kill(server, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_NE(kill(server, 0), 0) << "the embedded server outlived kill -9 of its owner";
  EXPECT_TRUE(fs::exists(clusters[0]));  // nobody was left to remove it...

  project_.Write("tests/test_slow.py", "import pytest\n\n@pytest.mark.unit\ndef test_slow():\n    pass\n");
  Project::Result r = project_.Testshard({"run", "--agents", "1", "--junit-out", "report.xml"});
  EXPECT_EQ(r.process.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(clusters[0])) << "...so the next run must";
  EXPECT_TRUE(clusters_in(base).empty()) << "the second run's own cluster must be gone too";
}

// The next run of a project finds the template its last run built (a snapshot of the embedded cluster), so its
// set-up commands do not run again; changing a template input builds a new one; reuse_templates = false opts out.
TEST_F(DatabaseE2eTest, NextRunReusesTheTemplateUntilAnInputChanges) {
  std::string base = project_.dir() + "/pgbase";
  fs::create_directories(base);
  fs::permissions(base, fs::perms::all);
  // Each set-up run leaves a line in setups.log (the agent runs it as root, in the project).
  auto setup = [](const std::string& version) {
    return absl::StrCat(kSetup, "open('setups.log', 'a').write('", version, "\\n')\n");
  };
  project_.Write("setup_db.py", setup("v1"));
  project_.Write("tests/test_mark.py", R"PY(
import os, psycopg2, pytest

@pytest.mark.db
@pytest.mark.parametrize("i", range(12))
def test_template_is_there(i):
    cur = psycopg2.connect(os.environ["DATABASE_URL"]).cursor()
    cur.execute("SELECT count(*) FROM marks")
    assert cur.fetchone()[0] == 0
)PY");
  auto config = [&](const std::string& extra) {
    return Config(absl::StrCat("role = \"app_user\"\ndata_dir = \"", base, "\"\n", extra),
                  "[[stages]]\nname = \"db\"\nmarkers = \"db\"\n");
  };
  project_.Write("testshard.toml", config(""));
  auto run = [&] {
    Project::Result r = project_.Testshard({"run", "--agents", "1", "--junit-out", "report.xml"});
    EXPECT_EQ(r.process.exit_code, 0) << r.output;
    EXPECT_EQ(ReadReport(project_.dir() + "/report.xml").Count(Outcome::kPassed), 12) << r.output;
  };
  run();
  run();
  EXPECT_EQ(project_.Read("setups.log"), "v1\n") << "the second run built the template again";
  project_.Write("setup_db.py", setup("v2"));
  run();
  run();
  EXPECT_EQ(project_.Read("setups.log"), "v1\nv2\n");
  project_.Write("testshard.toml", config("reuse_templates = false\n"));
  run();
  EXPECT_EQ(project_.Read("setups.log"), "v1\nv2\nv2\n");
}

TEST_F(DatabaseE2eTest, UnreachableServerFailsTheRunWithAClearErrorAndNoPasses) {
  project_.Write("testshard.toml",
                 Config(absl::StrCat("mode = \"server\"\nurl = \"postgresql://postgres@/postgres?host=", project_.dir(),
                                     "/nosocket&port=5432\"\n"),
                        "[[stages]]\nname = \"db\"\nmarkers = \"db\"\n"));
  Project::Result r = project_.Testshard({"run", "--agents", "2", "--junit-out", "report.xml"});
  EXPECT_NE(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(project_.Read("report.xml"), HasSubstr("cannot reach PostgreSQL"));
  Report report = ReadReport(project_.dir() + "/report.xml");
  EXPECT_EQ(report.Count(Outcome::kPassed), 0);
}

// The embedded server dies under the agent between stages (a test kills the postmaster): the next stage is
// reported as failed with the reason, never passed, and the run fails.
TEST_F(DatabaseE2eTest, ServerDyingUnderTheAgentFailsTheNextStageWithTheReason) {
  project_.Write("tests/test_kill.py", R"PY(
import os, signal, urllib.parse, pytest

@pytest.mark.unit
def test_kill_the_server():
    url = urllib.parse.urlparse(os.environ["DATABASE_URL"])
    socket_dir = urllib.parse.parse_qs(url.query)["host"][0]
    with open(os.path.join(socket_dir, "data", "postmaster.pid")) as f:
        os.kill(int(f.readline()), signal.SIGKILL)
)PY");
  // It needs no database itself: only the agent's own check can tell that its database is gone.
  project_.Write("tests/test_mark.py", "import pytest\n\n@pytest.mark.db\ndef test_no_db():\n    pass\n");
  // One process per shard: a warm worker may take the next lease while it still holds back the last test of the
  // previous one, which would put the kill after the agent's check.
  project_.Write("testshard.toml", Config("role = \"app_user\"\n",
                                          "[[stages]]\nname = \"first\"\nmarkers = \"unit\"\n"
                                          "[[stages]]\nname = \"second\"\nmarkers = \"db\"\n",
                                          "warm = false\n"));
  Project::Result r = project_.Testshard({"run", "--agents", "1", "--junit-out", "report.xml"});
  EXPECT_NE(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("second"));
  EXPECT_THAT(project_.Read("report.xml"), HasSubstr("the database server"));
  Report report = ReadReport(project_.dir() + "/report.xml");
  for (const ReportedCase& c : report.cases) {
    if (c.suite == "second") {
      EXPECT_NE(c.outcome, Outcome::kPassed) << c.name;
    }
  }
}

}  // namespace
}  // namespace testshard::e2e

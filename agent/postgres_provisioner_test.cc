// Against a real embedded PostgreSQL: templates, clones, the pool, roles and RLS, grants and settings, garbage
// collection, and the faults (unreachable server, no CREATEDB, a failing set-up command, a dead server).
#include "agent/postgres_provisioner.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>

#include "absl/strings/str_cat.h"
#include "common/postgres/embedded_postgres.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

// Polls `done` for up to 10 s: for work the pool does in the background.
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 1000; ++i) {
    if (done()) return true;
    usleep(10000);
  }
  return done();
}

class ProvisionerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto pg = pg::EmbeddedPostgres::Start({});
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = std::move(*pg).release();
  }
  static void TearDownTestSuite() { delete pg_; }

  void SetUp() override {
    char tmpl[] = "/tmp/ts-prov-XXXXXX";
    dir_ = mkdtemp(tmpl);
    // The "migration": two tenants' rows under a policy keyed on a setting, owned by the admin, used by app_user.
    Write("migrate.sql", R"SQL(
CREATE TABLE items (id serial PRIMARY KEY, org int NOT NULL, name text);
ALTER TABLE items ENABLE ROW LEVEL SECURITY;
ALTER TABLE items FORCE ROW LEVEL SECURITY;
CREATE POLICY by_org ON items USING (org = NULLIF(current_setting('app.org', true), '')::int);
GRANT SELECT, INSERT ON items TO app_user;
GRANT USAGE ON SEQUENCE items_id_seq TO app_user;
-- The seed sets each tenant in turn: with FORCE, an owner that is not a superuser is subject to the policy too.
SET app.org = '1';
INSERT INTO items (org, name) VALUES (1, 'a1'), (1, 'a2');
SET app.org = '2';
INSERT INTO items (org, name) VALUES (2, 'b1');
RESET app.org;
)SQL");
    // Each test its own template, also when every test of this binary shares one server.
    std::ofstream(dir_ + "/migrate.sql", std::ios::app)
        << "-- " << ::testing::UnitTest::GetInstance()->current_test_info()->name() << "\n";
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) { std::ofstream(dir_ + "/" + name) << text; }

  PostgresProvisionerOptions Options() {
    PostgresProvisionerOptions o;
    o.admin = pg_->admin();
    // The command reads the URL from the env var, as an app would.
    o.recipe.setup = {{"sh", "-c", "exec psql -X -v ON_ERROR_STOP=1 -q -f migrate.sql \"$DATABASE_URL\""}};
    o.recipe.env_templates = {{"DATABASE_URL", "{url}"}};
    o.recipe.workdir = dir_;
    o.recipe.inputs = {"*.sql"};
    o.recipe.role = "app_user";
    o.recipe.log_dir = dir_;
    o.project = "provtest";
    o.run_id = "run1";
    o.agent_id = "agent-1";
    o.pool_size = 0;
    return o;
  }

  std::unique_ptr<pg::SqlSession> Admin() {
    auto s = pg::SqlSession::Open(pg_->admin());
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  bool DatabaseExists(const std::string& name) {
    auto rows = Admin()->Query(absl::StrCat("SELECT 1 FROM pg_database WHERE datname = ", pg::QuoteLiteral(name)));
    return rows.ok() && !rows->empty();
  }

  static pg::EmbeddedPostgres* pg_;
  std::string dir_;
  PosixProcessRunner runner_;
};
pg::EmbeddedPostgres* ProvisionerTest::pg_ = nullptr;

TEST_F(ProvisionerTest, RlsDeniesCrossTenantReadsInACloneAsTheTestRole) {
  PostgresProvisioner p(Options(), &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport report, p.Prepare());
  EXPECT_TRUE(report.built);
  EXPECT_THAT(report.warnings, IsEmpty());
  TS_ASSERT_OK_AND_ASSIGN(Database db, p.Acquire("lease-1"));
  EXPECT_EQ(db.test.user, "app_user");
  EXPECT_THAT(db.name, AllOf(HasSubstr(p.instance()), HasSubstr("run1"), HasSubstr("agent1"), HasSubstr("lease1")));
  TS_ASSERT_OK_AND_ASSIGN(auto s, pg::SqlSession::Open(db.test));
  EXPECT_EQ(*s->QueryValue("SELECT current_database()"), db.name);
  EXPECT_EQ(*s->QueryValue("SELECT count(*) FROM items"), "0");  // no tenant: nothing
  ASSERT_THAT(s->Exec("SET app.org = '2'"), IsOk());
  EXPECT_EQ(*s->QueryValue("SELECT count(*) FROM items"), "1");  // org 2 sees only its own row
  EXPECT_EQ(*s->QueryValue("SELECT count(*) FROM items WHERE org = 1"), "0");
  EXPECT_THAT(s->Exec("INSERT INTO items (org, name) VALUES (1, 'forged')"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("row-level security")));
  s.reset();
  p.Release(db);
  EXPECT_TRUE(Eventually([&] { return !DatabaseExists(db.name); }));
}

// A clone must plan like the database the user's own run has just migrated: no statistics from the build saying a
// table the tests fill (inside a transaction autovacuum never sees) is empty or tiny. reltuples = -1 is
// PostgreSQL's "never vacuumed or analyzed"; a VACUUM of the template sets 0 (and 3 for the seeded table), and on
// the example suite the planner then chose a nested loop over 80,000 x 200 rows (docs/database.md).
TEST_F(ProvisionerTest, ClonesCarryNoPlannerStatisticsFromTheBuild) {
  std::ofstream(dir_ + "/migrate.sql", std::ios::app)
      << "CREATE TABLE results (id int PRIMARY KEY, item int);\nGRANT SELECT, INSERT ON results TO app_user;\n";
  PostgresProvisioner p(Options(), &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport report, p.Prepare());
  ASSERT_TRUE(report.built);
  TS_ASSERT_OK_AND_ASSIGN(Database db, p.Acquire("lease-1"));
  TS_ASSERT_OK_AND_ASSIGN(auto s, pg::SqlSession::Open(db.test));
  EXPECT_EQ(*s->QueryValue("SELECT reltuples::int FROM pg_class WHERE relname = 'results'"), "-1");
  EXPECT_EQ(*s->QueryValue("SELECT reltuples::int FROM pg_class WHERE relname = 'items'"), "-1");
  s.reset();
  p.Release(db);
}

TEST_F(ProvisionerTest, SameInputsReuseTheTemplateAndAChangedFileMakesANewOne) {
  std::string first;
  {
    PostgresProvisioner p1(Options(), &runner_);
    TS_ASSERT_OK_AND_ASSIGN(PrepareReport r1, p1.Prepare());
    EXPECT_TRUE(r1.built);
    first = r1.template_name;
  }
  // Unchanged: the same template, found rather than built (the migration would fail if it ran twice).
  Write("migrate.sql.bak", "");  // not an input: *.sql does not match it
  {
    PostgresProvisioner p2(Options(), &runner_);
    TS_ASSERT_OK_AND_ASSIGN(PrepareReport r2, p2.Prepare());
    EXPECT_FALSE(r2.built);
    EXPECT_EQ(r2.template_name, first);
  }
  // A migration edited in place: a new template, with the new row in its clones.
  std::ofstream(dir_ + "/migrate.sql", std::ios::app)
      << "SET app.org = '3'; INSERT INTO items (org, name) VALUES (3, 'c1');\n";
  PostgresProvisioner p3(Options(), &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport r3, p3.Prepare());
  EXPECT_TRUE(r3.built);
  EXPECT_NE(r3.template_name, first);
  TS_ASSERT_OK_AND_ASSIGN(Database db, p3.Acquire("lease-1"));
  TS_ASSERT_OK_AND_ASSIGN(auto s, pg::SqlSession::Open(pg_->admin().WithDb(db.name)));
  EXPECT_EQ(*s->QueryValue("SELECT count(*) FROM items"), "4");  // the admin is a superuser: it sees every row
}

// Sixteen agents start at once against one server: one builds the template while the others wait for it, then all
// sixteen clone at the same moment.
TEST_F(ProvisionerTest, SixteenConcurrentClonesFromOneTemplateAllSucceed) {
  Write("count.sh", "echo run >> builds.txt\n");
  auto options = Options();
  options.recipe.setup.push_back({"sh", "count.sh"});
  std::vector<std::unique_ptr<PostgresProvisioner>> agents;
  for (int i = 0; i < 16; ++i) {
    options.agent_id = absl::StrCat("agent-", i);
    agents.push_back(std::make_unique<PostgresProvisioner>(options, &runner_));
  }
  std::vector<std::future<absl::StatusOr<PrepareReport>>> prepared;
  for (auto& a : agents) prepared.push_back(std::async(std::launch::async, [&a] { return a->Prepare(); }));
  int built = 0;
  for (auto& f : prepared) {
    auto r = f.get();
    ASSERT_TRUE(r.ok()) << r.status();
    built += r->built;
  }
  EXPECT_EQ(built, 1);
  std::ifstream count(dir_ + "/builds.txt");
  std::string line;
  int runs = 0;
  while (std::getline(count, line)) ++runs;
  EXPECT_EQ(runs, 1) << "the set-up commands ran more than once";

  // Prepare made each agent one clone; take those, then sixteen more made concurrently (no pool: pool_size 0).
  for (auto& a : agents) ASSERT_TRUE(a->Acquire("first").ok());
  std::atomic<bool> go{false};
  std::vector<std::future<absl::StatusOr<Database>>> clones;
  for (auto& a : agents) {
    clones.push_back(std::async(std::launch::async, [&a, &go] {
      while (!go.load()) std::this_thread::yield();
      return a->Acquire("second");
    }));
  }
  go = true;
  for (size_t i = 0; i < clones.size(); ++i) {
    auto db = clones[i].get();
    ASSERT_TRUE(db.ok()) << db.status();
    EXPECT_EQ(agents[i]->handout_stats().cloned, 1);
  }
}

TEST_F(ProvisionerTest, FailingSetupCommandShowsItsOutput) {
  Write("migrate.sql", "CREATE TABLE broken (;\n");
  PostgresProvisioner p(Options(), &runner_);
  EXPECT_THAT(p.Prepare(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                    AllOf(HasSubstr("set-up command"), HasSubstr("syntax error"))));
  EXPECT_THAT(p.Acquire("x"), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("before Prepare")));
}

// The agents waiting for the lock while another one's build fails report that failure, rather than each running
// the failing commands again.
TEST_F(ProvisionerTest, AgentsWaitingForAFailedBuildReportItWithoutRebuilding) {
  Write("migrate.sql", "SELECT pg_sleep(0.5);\nCREATE TABLE broken (;\n");
  Write("count.sh", "echo run >> builds.txt\n");
  auto options = Options();
  options.recipe.setup.insert(options.recipe.setup.begin(), {"sh", "count.sh"});
  std::vector<std::unique_ptr<PostgresProvisioner>> agents;
  for (int i = 0; i < 4; ++i) agents.push_back(std::make_unique<PostgresProvisioner>(options, &runner_));
  std::vector<std::future<absl::StatusOr<PrepareReport>>> prepared;
  for (auto& a : agents) prepared.push_back(std::async(std::launch::async, [&a] { return a->Prepare(); }));
  for (auto& f : prepared) {
    EXPECT_THAT(f.get(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("syntax error")));
  }
  std::ifstream count(dir_ + "/builds.txt");
  std::string line;
  int runs = 0;
  while (std::getline(count, line)) ++runs;
  EXPECT_EQ(runs, 1);
}

TEST_F(ProvisionerTest, UnreachableServerIsUnavailable) {
  auto options = Options();
  options.admin.host = dir_;  // no socket there
  PostgresProvisioner p(options, &runner_);
  EXPECT_THAT(p.Prepare(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot reach PostgreSQL")));
}

TEST_F(ProvisionerTest, RoleWithoutCreatedbIsRefusedByName) {
  ASSERT_THAT(Admin()->Exec("CREATE ROLE no_createdb LOGIN"), IsOk());
  auto options = Options();
  options.admin = pg_->admin().WithUser("no_createdb");
  PostgresProvisioner p(options, &runner_);
  EXPECT_THAT(p.Prepare(),
              StatusIs(absl::StatusCode::kPermissionDenied, AllOf(HasSubstr("no_createdb"), HasSubstr("CREATEDB"))));
}

// Server mode as on a shared server: the admin role has CREATEDB and nothing else (no superuser, no CREATEROLE).
TEST_F(ProvisionerTest, ServerModeWorksWithOnlyCreatedb) {
  {
    auto admin = Admin();
    ASSERT_THAT(admin->Exec("CREATE ROLE creator LOGIN CREATEDB"), IsOk());
    ASSERT_THAT(admin->Exec("DO $$BEGIN CREATE ROLE app_user LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$"),
                IsOk());
  }
  auto options = Options();
  options.admin = pg_->admin().WithUser("creator");
  options.pool_size = 1;
  options.keep_templates = 1;
  PostgresProvisioner p(options, &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport report, p.Prepare());
  TS_ASSERT_OK_AND_ASSIGN(Database db, p.Acquire("lease-1"));
  TS_ASSERT_OK_AND_ASSIGN(auto s, pg::SqlSession::Open(db.test));
  ASSERT_THAT(s->Exec("SET app.org = '1'"), IsOk());
  EXPECT_EQ(*s->QueryValue("SELECT count(*) FROM items"), "2");
  EXPECT_EQ(*Admin()->QueryValue(absl::StrCat("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = ",
                                              pg::QuoteLiteral(report.template_name))),
            "creator");
  // The test role's session is still open: the background drop cannot end it without pg_signal_backend, so it
  // closes the database to new sessions and retries; once the session ends, the drop goes through.
  p.Release(db);
  usleep(300000);
  s.reset();
  EXPECT_TRUE(Eventually([&] { return !DatabaseExists(db.name); }));
}

TEST_F(ProvisionerTest, MissingTestRoleThatTheAdminMayNotCreateIsExplained) {
  ASSERT_THAT(Admin()->Exec("CREATE ROLE creator2 LOGIN CREATEDB"), IsOk());
  auto options = Options();
  options.admin = pg_->admin().WithUser("creator2");
  options.recipe.role = "ghost";
  PostgresProvisioner p(options, &runner_);
  EXPECT_THAT(p.Prepare(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                    AllOf(HasSubstr("\"ghost\" does not exist"), HasSubstr("CREATE ROLE"))));
}

TEST_F(ProvisionerTest, WarnsWhenTheTestRoleIsASuperuser) {
  ASSERT_THAT(Admin()->Exec("DO $$BEGIN CREATE ROLE app_user LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$"),
              IsOk());  // the migration grants to it
  auto options = Options();
  options.recipe.role = "";  // the admin: the embedded server's superuser
  PostgresProvisioner p(options, &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport report, p.Prepare());
  EXPECT_THAT(report.warnings, Contains(AllOf(HasSubstr("\"postgres\""), HasSubstr("superuser"))));
}

TEST_F(ProvisionerTest, WarnsAboutBypassrlsOwnedTablesAndUnenabledPolicies) {
  Write("migrate.sql", R"SQL(
DO $$BEGIN CREATE ROLE bypasser LOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
DO $$BEGIN CREATE ROLE owner_role LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
CREATE TABLE owned (id int, org int);
ALTER TABLE owned ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON owned USING (org = 1);
ALTER TABLE owned OWNER TO owner_role;
CREATE TABLE forgotten (id int, org int);
CREATE POLICY p ON forgotten USING (org = 1);
)SQL");
  auto options = Options();
  options.recipe.role = "owner_role";
  {
    PostgresProvisioner p(options, &runner_);
    TS_ASSERT_OK_AND_ASSIGN(PrepareReport report, p.Prepare());
    EXPECT_THAT(report.warnings,
                Contains(AllOf(HasSubstr("owner_role"), HasSubstr("public.owned"), HasSubstr("not forced"))));
    EXPECT_THAT(report.warnings, Contains(AllOf(HasSubstr("public.forgotten"), HasSubstr("not enabled"))));
  }
  options.recipe.role = "bypasser";
  PostgresProvisioner p(options, &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport report, p.Prepare());
  EXPECT_THAT(report.warnings, Contains(AllOf(HasSubstr("bypasser"), HasSubstr("BYPASSRLS"))));
}

TEST_F(ProvisionerTest, NoTemplateInputsIsAWarning) {
  auto options = Options();
  options.recipe.inputs.clear();
  PostgresProvisioner p(options, &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport report, p.Prepare());
  EXPECT_THAT(report.warnings, Contains(HasSubstr("template_inputs is empty")));
}

TEST_F(ProvisionerTest, UnmatchedTemplateInputGlobIsAWarning) {
  auto options = Options();
  options.recipe.inputs = {"*.sql", "migrations/versions/*.py"};
  PostgresProvisioner p(options, &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport report, p.Prepare());
  EXPECT_THAT(report.warnings, Contains(HasSubstr("migrations/versions/*.py")));
}

// Database-level grants and ALTER DATABASE ... SET are not copied by CREATE DATABASE: the template's own and the
// configured ones are re-applied to every clone.
TEST_F(ProvisionerTest, GrantsAndSettingsAreReappliedToClones) {
  std::ofstream(dir_ + "/migrate.sql", std::ios::app) << R"SQL(
DO $$BEGIN CREATE ROLE outsider LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
DO $$BEGIN CREATE ROLE reporting LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
SELECT format('ALTER DATABASE %I SET app.mode = %L', current_database(), 'strict') \gexec
SELECT format('ALTER DATABASE %I SET search_path = "$user", public, extra', current_database()) \gexec
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database()) \gexec
)SQL";
  auto options = Options();
  options.settings = {{"timezone", "Pacific/Auckland"}};
  options.grants = {{"reporting", "CONNECT"}};
  PostgresProvisioner p(options, &runner_);
  ASSERT_TRUE(p.Prepare().ok());
  TS_ASSERT_OK_AND_ASSIGN(Database db, p.Acquire("lease-1"));
  TS_ASSERT_OK_AND_ASSIGN(auto s, pg::SqlSession::Open(db.test));
  EXPECT_EQ(*s->QueryValue("SHOW app.mode"), "strict");
  EXPECT_EQ(*s->QueryValue("SHOW search_path"), "\"$user\", public, extra");
  EXPECT_EQ(*s->QueryValue("SHOW timezone"), "Pacific/Auckland");
  EXPECT_TRUE(pg::SqlSession::Open(db.test.WithUser("reporting")).ok());
  EXPECT_THAT(pg::SqlSession::Open(db.test.WithUser("outsider")),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("permission denied")));
}

TEST_F(ProvisionerTest, WarmPoolHandsOutReadyClonesAndRefillsInTheBackground) {
  auto options = Options();
  options.pool_size = 2;
  PostgresProvisioner p(options, &runner_);
  ASSERT_TRUE(p.Prepare().ok());
  ASSERT_TRUE(Eventually([&] { return p.pool_stats().ready >= 2; }));
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(Eventually([&] { return p.pool_stats().ready >= 2; }));
    absl::Time t0 = absl::Now();
    TS_ASSERT_OK_AND_ASSIGN(Database db, p.Acquire(absl::StrCat("lease-", i)));
    EXPECT_LT(absl::Now() - t0, absl::Milliseconds(100));  // a rename, not a copy (the bench measures it properly)
    p.Release(db);
  }
  EXPECT_EQ(p.handout_stats().from_pool, 4);
  EXPECT_EQ(p.handout_stats().cloned, 0);
  EXPECT_TRUE(Eventually([&] { return p.pool_stats().drops >= 4; }));
}

TEST_F(ProvisionerTest, HealthCheckIsCheapEnoughForEveryLease) {
  PostgresProvisioner p(Options(), &runner_);
  ASSERT_TRUE(p.Prepare().ok());
  absl::Time t0 = absl::Now();
  for (int i = 0; i < 50; ++i) ASSERT_THAT(p.CheckHealth(), IsOk());
  absl::Duration each = (absl::Now() - t0) / 50;
  std::printf("CheckHealth: %.2f ms each\n", absl::ToDoubleMilliseconds(each));
  EXPECT_LT(each, absl::Milliseconds(50));
}

TEST_F(ProvisionerTest, ConfiguredStrategyIsUsedAndMeasuredOneIsReported) {
  auto options = Options();
  options.strategy = CloneStrategy::kWalLog;
  PostgresProvisioner p(options, &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport report, p.Prepare());
  EXPECT_EQ(report.strategy, "WAL_LOG");
  TS_ASSERT_OK_AND_ASSIGN(TemplateInfo info, ReadTemplate(*Admin(), report.template_name));
  EXPECT_GT(info.file_copy_ms, 0);  // both were timed when the template was built
  EXPECT_GT(info.wal_log_ms, 0);
  EXPECT_EQ(info.project, "provtest");
}

TEST_F(ProvisionerTest, OldTemplatesAreDroppedOnceNewerOnesExistUnlessInUse) {
  auto options = Options();
  options.keep_templates = 1;
  options.janitor_interval = absl::Milliseconds(50);
  auto p1 = std::make_unique<PostgresProvisioner>(options, &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport r1, p1->Prepare());
  std::ofstream(dir_ + "/migrate.sql", std::ios::app) << "-- v2\n";
  PostgresProvisioner p2(options, &runner_);
  TS_ASSERT_OK_AND_ASSIGN(PrepareReport r2, p2.Prepare());
  ASSERT_NE(r1.template_name, r2.template_name);
  // p1 still clones from the old one: it stays, however often p2 collects garbage.
  usleep(300000);
  EXPECT_TRUE(DatabaseExists(r1.template_name));
  p1.reset();
  EXPECT_TRUE(Eventually([&] { return !DatabaseExists(r1.template_name); }));
  EXPECT_TRUE(DatabaseExists(r2.template_name));
}

TEST_F(ProvisionerTest, ShutdownDropsWhatTheProvisionerStillHolds) {
  auto options = Options();
  options.pool_size = 2;
  std::string instance;
  {
    PostgresProvisioner p(options, &runner_);
    ASSERT_TRUE(p.Prepare().ok());
    instance = p.instance();
    ASSERT_TRUE(p.Acquire("lease-1").ok());
    ASSERT_TRUE(Eventually([&] { return p.pool_stats().ready >= 2; }));
  }
  auto left = Admin()->Query(absl::StrCat("SELECT datname FROM pg_database WHERE datname LIKE '%", instance, "%'"));
  ASSERT_TRUE(left.ok());
  // The held database is the agent's to give back; the pool's own are gone.
  EXPECT_EQ(left->size(), 1u);
}

// The embedded server dies under the agent: its next request gets a clear Unavailable, never a hang or a pass.
TEST(ProvisionerDeadServerTest, ServerDyingUnderTheAgentIsUnavailable) {
  TS_ASSERT_OK_AND_ASSIGN(auto server, pg::EmbeddedPostgres::Start({}));
  char tmpl[] = "/tmp/ts-prov-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  PostgresProvisionerOptions o;
  o.admin = server->admin();
  o.recipe.workdir = o.recipe.log_dir = dir;
  o.project = "dead";
  o.run_id = "run1";
  o.agent_id = "agent-1";
  o.pool_size = 1;
  PosixProcessRunner runner;
  PostgresProvisioner p(o, &runner);
  ASSERT_TRUE(p.Prepare().ok());
  TS_ASSERT_OK_AND_ASSIGN(Database db, p.Acquire("agent"));
  EXPECT_THAT(p.CheckHealth(), IsOk());
  kill(server->server_pid(), SIGKILL);
  ASSERT_TRUE(Eventually([&] { return !server->Health().ok(); }));
  EXPECT_THAT(server->Health(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("has died")));
  EXPECT_THAT(p.CheckHealth(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("database server")));
  EXPECT_THAT(p.Acquire("lease-2"), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace testshard::agent

namespace testshard::agent {
namespace {

// The disk fills: the clone that does not fit fails with ResourceExhausted naming the cause, and the agent can
// still hand out what fits. A small tmpfs is mounted for the server (skipped where mounting is not allowed).
TEST(ProvisionerDiskFullTest, CloneOnAFullDiskIsResourceExhausted) {
  char tmpl[] = "/tmp/ts-full-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  PosixProcessRunner runner;
  ProcessSpec mount;
  mount.argv = {"mount", "-t", "tmpfs", "-o", "size=200m,mode=0755", "tmpfs", dir};
  auto mounted = runner.Run(mount, nullptr);
  if (!mounted.ok() || !mounted->ok()) {
    fs::remove_all(dir);
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)";
  }
  {
    pg::EmbeddedOptions eo;
    eo.base_dir = dir;
    TS_ASSERT_OK_AND_ASSIGN(auto server, pg::EmbeddedPostgres::Start(eo));
    PostgresProvisionerOptions o;
    o.admin = server->admin();
    // ~35 MB of rows (CREATE TABLE AS writes no WAL at wal_level minimal), so each clone needs ~45 MB.
    o.recipe.setup = {{"sh", "-c",
                       "exec psql -X -q -v ON_ERROR_STOP=1 -c \"CREATE TABLE big AS SELECT g, repeat('x', 500) AS pad "
                       "FROM generate_series(1, 60000) g\" \"$DATABASE_URL\""}};
    o.recipe.env_templates = {{"DATABASE_URL", "{url}"}};
    o.recipe.workdir = o.recipe.log_dir = "/tmp";
    o.project = "full";
    o.run_id = "run1";
    o.agent_id = "agent-1";
    o.pool_size = 0;
    o.strategy = CloneStrategy::kFileCopy;
    PostgresProvisioner p(o, &runner);
    absl::Status failure;
    auto prepared = p.Prepare();
    if (!prepared.ok()) {
      failure = prepared.status();
    } else {
      for (int i = 0; i < 10 && failure.ok(); ++i) failure = p.Acquire(absl::StrCat("lease-", i)).status();
    }
    EXPECT_THAT(failure, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("No space left on device")));
    // The server is still up: what failed was one clone, not the cluster.
    EXPECT_THAT(server->Health(), IsOk());
  }
  ProcessSpec umount;
  umount.argv = {"umount", dir};
  (void)runner.Run(umount, nullptr);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace testshard::agent

// Against a real embedded PostgreSQL: templates, clones, roles and RLS.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <pqxx/pqxx>

#include "agent/database.h"
#include "common/postgres/embedded_postgres.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

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
    // The "migration": a schema with RLS keyed on a setting, owned by the admin, read by the app role.
    Write("migrate.sql", R"SQL(
CREATE TABLE items (id serial PRIMARY KEY, org int NOT NULL, name text);
ALTER TABLE items ENABLE ROW LEVEL SECURITY;
CREATE POLICY by_org ON items USING (org = NULLIF(current_setting('app.org', true), '')::int);
GRANT SELECT, INSERT ON items TO app_user;
INSERT INTO items (org, name) VALUES (1, 'a1'), (1, 'a2'), (2, 'b1');
)SQL");
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) { std::ofstream(dir_ + "/" + name) << text; }

  TemplateRecipe Recipe() {
    TemplateRecipe r;
    // The command reads the URL from the env var, as an app would.
    r.setup = {{"sh", "-c", "exec psql -v ON_ERROR_STOP=1 -q -f migrate.sql \"$DATABASE_URL\""}};
    r.env_templates = {{"DATABASE_URL", "{url}"}};
    r.workdir = dir_;
    r.inputs = {"*.sql"};
    r.role = "app_user";
    r.log_dir = dir_;
    return r;
  }

  static pg::EmbeddedPostgres* pg_;
  std::string dir_;
  PosixProcessRunner runner_;
};
pg::EmbeddedPostgres* ProvisionerTest::pg_ = nullptr;

TEST_F(ProvisionerTest, CloneAppliesRlsForTheTestRole) {
  PostgresProvisioner p(pg_->admin(), Recipe(), &runner_);
  ASSERT_THAT(p.Prepare(), IsOk());
  TS_ASSERT_OK_AND_ASSIGN(Database db, p.Acquire("ts_rls_a1"));
  EXPECT_EQ(db.test.user, "app_user");
  {
    pqxx::connection c(db.test.Conninfo());
    pqxx::work w(c);
    EXPECT_EQ(w.exec1("SELECT count(*) FROM items")[0].as<int>(), 0);  // no tenant: nothing
    w.exec0("SET app.org = '2'");
    EXPECT_EQ(w.exec1("SELECT count(*) FROM items")[0].as<int>(), 1);  // org 2 cannot see org 1's rows
    EXPECT_EQ(w.exec1("SELECT current_database()")[0].as<std::string>(), "ts_rls_a1");
  }
  ASSERT_THAT(p.Release(db), IsOk());
}

TEST_F(ProvisionerTest, SameInputsReuseTheTemplateAndAChangedFileMakesANewOne) {
  PostgresProvisioner p1(pg_->admin(), Recipe(), &runner_);
  TS_ASSERT_OK_AND_ASSIGN(std::string first, p1.TemplateName());
  ASSERT_THAT(p1.Prepare(), IsOk());
  // Unchanged: same name, and a second Prepare finds it built (the set-up command would fail if run again).
  Write("migrate.sql.bak", "");  // not an input: *.sql does not match it
  PostgresProvisioner p2(pg_->admin(), Recipe(), &runner_);
  TS_ASSERT_OK_AND_ASSIGN(std::string second, p2.TemplateName());
  EXPECT_EQ(first, second);
  ASSERT_THAT(p2.Prepare(), IsOk());
  // A migration edited in place: a new template.
  std::ofstream(dir_ + "/migrate.sql", std::ios::app) << "INSERT INTO items (org, name) VALUES (3, 'c1');\n";
  PostgresProvisioner p3(pg_->admin(), Recipe(), &runner_);
  TS_ASSERT_OK_AND_ASSIGN(std::string third, p3.TemplateName());
  EXPECT_NE(first, third);
}

TEST_F(ProvisionerTest, ManyConcurrentClonesAllSucceed) {
  PostgresProvisioner p(pg_->admin(), Recipe(), &runner_);
  ASSERT_THAT(p.Prepare(), IsOk());
  std::vector<std::future<absl::StatusOr<Database>>> clones;
  std::vector<std::unique_ptr<PostgresProvisioner>> owners;
  for (int i = 0; i < 16; ++i) {
    owners.push_back(std::make_unique<PostgresProvisioner>(pg_->admin(), Recipe(), &runner_));
    ASSERT_THAT(owners.back()->Prepare(), IsOk());
  }
  for (int i = 0; i < 16; ++i) {
    clones.push_back(std::async(std::launch::async, [&, i] { return owners[i]->Acquire("ts_many_" + std::to_string(i)); }));
  }
  for (int i = 0; i < 16; ++i) {
    auto db = clones[i].get();
    ASSERT_TRUE(db.ok()) << db.status();
    EXPECT_THAT(owners[i]->Release(*db), IsOk());
  }
}

TEST_F(ProvisionerTest, FailingSetupCommandShowsItsOutput) {
  TemplateRecipe r = Recipe();
  Write("migrate.sql", "CREATE TABLE broken (;\n");
  PostgresProvisioner p(pg_->admin(), r, &runner_);
  EXPECT_THAT(p.Prepare(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("syntax error")));
  EXPECT_THAT(p.Acquire("x"), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("before Prepare")));
}

TEST_F(ProvisionerTest, UnreachableServerIsUnavailable) {
  pg::Connection nowhere = pg_->admin();
  nowhere.host = dir_;  // no socket there
  PostgresProvisioner p(nowhere, Recipe(), &runner_);
  EXPECT_THAT(p.Prepare(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot reach PostgreSQL")));
}

}  // namespace
}  // namespace testshard::agent

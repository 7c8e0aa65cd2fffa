// Database names, and the janitor against a real embedded PostgreSQL: a killed agent's databases go, a live
// agent's stay.
#include "agent/janitor.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "agent/postgres_provisioner.h"
#include "common/postgres/embedded_postgres.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::agent {
namespace {

using ::testshard::testing::IsOk;

TEST(DatabaseNameTest, CarriesInstanceRunAgentAndUseAndParsesBack) {
  std::string name = MakeDatabaseName({"0a1b2c3d", "f00dcafe1234", "agent-7", "lease-42"});
  EXPECT_EQ(name, "ts_0a1b2c3d_f00dcafe1234_agent7_lease42");
  std::optional<DatabaseNameParts> parts = ParseDatabaseName(name);
  ASSERT_TRUE(parts.has_value());
  EXPECT_EQ(parts->instance, "0a1b2c3d");
  EXPECT_EQ(parts->run, "f00dcafe1234");
  EXPECT_EQ(parts->agent, "agent7");
  EXPECT_EQ(parts->use, "lease42");
}

TEST(DatabaseNameTest, LongPartsStillFitAndKeepTheirDistinctTails) {
  std::string a =
      MakeDatabaseName({"0a1b2c3d", std::string(40, 'r'), std::string(40, 'a'), std::string(60, 'l') + "1"});
  std::string b =
      MakeDatabaseName({"0a1b2c3d", std::string(40, 'r'), std::string(40, 'a'), std::string(60, 'l') + "2"});
  EXPECT_LE(a.size(), 63u);
  EXPECT_NE(a, b);
  EXPECT_TRUE(ParseDatabaseName(a).has_value());
}

TEST(DatabaseNameTest, ForeignNamesAreNotOurs) {
  EXPECT_FALSE(ParseDatabaseName("postgres").has_value());
  EXPECT_FALSE(ParseDatabaseName("ts_abc_run_agent").has_value());           // the skeleton's old form
  EXPECT_FALSE(ParseDatabaseName("ts_0A1B2C3D_run_agent_use").has_value());  // not our instance form
  EXPECT_FALSE(ParseDatabaseName("tpl_0123456789abcdef").has_value());
}

class JanitorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto pg = pg::EmbeddedPostgres::Start({});
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = std::move(*pg).release();
  }
  static void TearDownTestSuite() { delete pg_; }

  PostgresProvisionerOptions Options(const std::string& agent) {
    PostgresProvisionerOptions o;
    o.admin = pg_->admin();
    o.recipe.workdir = "/tmp";
    o.recipe.log_dir = "/tmp";
    o.project = "janitor";
    o.run_id = "run1";
    o.agent_id = agent;
    o.pool_size = 0;
    o.janitor_interval = absl::Hours(1);  // the test sweeps by hand
    return o;
  }

  std::vector<std::string> Databases(const std::string& instance) {
    auto s = pg::SqlSession::Open(pg_->admin());
    EXPECT_TRUE(s.ok()) << s.status();
    auto rows = (*s)->Query(
        absl::StrCat("SELECT datname FROM pg_database WHERE datname LIKE 'ts\\_", instance, "\\_%' ORDER BY 1"));
    EXPECT_TRUE(rows.ok()) << rows.status();
    std::vector<std::string> out;
    for (const pg::Row& r : *rows) out.push_back(r[0]);
    return out;
  }

  static pg::EmbeddedPostgres* pg_;
  PosixProcessRunner runner_;
};
pg::EmbeddedPostgres* JanitorTest::pg_ = nullptr;

// An agent in a child process: prepares, takes two databases, reports its instance id, and waits to be killed.
pid_t StartAgentProcess(PostgresProvisionerOptions options, std::string* instance) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    PosixProcessRunner runner;
    auto* p = new PostgresProvisioner(options, &runner);  // never destroyed: the process is killed
    char id[9] = "failed!!";
    if (p->Prepare().ok() && p->Acquire("lease-1").ok() && p->Acquire("lease-2").ok()) {
      std::copy(p->instance().begin(), p->instance().end(), id);
    }
    (void)!write(fds[1], id, 8);
    pause();
    _exit(0);
  }
  close(fds[1]);
  char id[9] = {};
  ssize_t n = read(fds[0], id, 8);
  close(fds[0]);
  *instance = n == 8 ? std::string(id, 8) : "";
  return pid;
}

TEST_F(JanitorTest, KilledAgentsDatabasesAreDroppedAndLiveAgentsAreNot) {
  std::string dead_id, live_id;
  pid_t dead = StartAgentProcess(Options("agent-1"), &dead_id);
  pid_t live = StartAgentProcess(Options("agent-2"), &live_id);
  ASSERT_GT(dead, 0);
  ASSERT_GT(live, 0);
  ASSERT_EQ(dead_id.size(), 8u) << "the first agent could not prepare";
  ASSERT_EQ(live_id.size(), 8u) << "the second agent could not prepare";
  EXPECT_EQ(Databases(dead_id).size(), 2u);
  EXPECT_EQ(Databases(live_id).size(), 2u);

  kill(dead, SIGKILL);
  waitpid(dead, nullptr, 0);

  // Another agent's janitor (the live agent's own janitor may get there first: either is fine). The killed
  // agent's sessions end as soon as the server reads the closed socket; until then it still counts as alive, which
  // is the safe side.
  TS_ASSERT_OK_AND_ASSIGN(auto session, pg::SqlSession::Open(pg_->admin(), PresenceApplicationName("ffffffff")));
  ASSERT_THAT(ClaimPresence(*session, "ffffffff"), IsOk());
  for (int i = 0; i < 500 && !Databases(dead_id).empty(); ++i) {
    ASSERT_THAT(SweepDeadAgents(*session, "ffffffff").status(), IsOk());
    if (!Databases(dead_id).empty()) usleep(10000);
  }
  EXPECT_TRUE(Databases(dead_id).empty());
  EXPECT_EQ(Databases(live_id).size(), 2u) << "the janitor dropped a live agent's database";
  TS_ASSERT_OK_AND_ASSIGN(SweepResult again, SweepDeadAgents(*session, "ffffffff"));
  EXPECT_EQ(again.dropped, 0);
  EXPECT_EQ(again.live_kept, 2);

  kill(live, SIGKILL);
  waitpid(live, nullptr, 0);
}

// A live agent whose presence lock is held in another maintenance database (advisory locks are per database)
// is still recognised by its session's application_name.
TEST_F(JanitorTest, AgentPresentInAnotherDatabaseIsAlive) {
  TS_ASSERT_OK_AND_ASSIGN(auto admin, pg::SqlSession::Open(pg_->admin()));
  ASSERT_THAT(admin->Exec("CREATE DATABASE other_maintenance"), IsOk());
  const std::string id = "0123abcd";
  TS_ASSERT_OK_AND_ASSIGN(auto presence,
                          pg::SqlSession::Open(pg_->admin().WithDb("other_maintenance"), PresenceApplicationName(id)));
  ASSERT_THAT(ClaimPresence(*presence, id), IsOk());
  std::string db = MakeDatabaseName({id, "run", "agent", "agent"});
  ASSERT_THAT(admin->Exec(absl::StrCat("CREATE DATABASE ", pg::QuoteIdent(db))), IsOk());

  ASSERT_TRUE(SweepDeadAgents(*admin, "ffffffff").ok());
  EXPECT_EQ(Databases(id).size(), 1u);
  presence.reset();  // the agent ends
  for (int i = 0; i < 500 && !Databases(id).empty(); ++i) {
    ASSERT_TRUE(SweepDeadAgents(*admin, "ffffffff").ok());
    if (!Databases(id).empty()) usleep(10000);
  }
  EXPECT_TRUE(Databases(id).empty());
}

}  // namespace
}  // namespace testshard::agent

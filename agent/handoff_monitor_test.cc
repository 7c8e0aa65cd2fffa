// The hand-off check's sampler against a real server: sessions carrying the agent's application_name are found
// wherever they are, and tables created after the baseline are reported once tests fail on them.
#include "agent/handoff_monitor.h"

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "common/postgres/embedded_postgres.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr char kApp[] = "testshard tests run1/agent-1";

// Nobody's client process is the agent's: only the application_name says whose a session is.
class NoResolver final : public ClientResolver {
 public:
  std::set<int> Ours(const std::vector<ServerSession>&) override { return {}; }
};

class HandoffMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = pg::EmbeddedPostgres::Start({});
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = std::move(*pg);
    pqxx::connection c(pg_->admin().Conninfo());
    pqxx::nontransaction tx(c);
    tx.exec0("CREATE DATABASE ts_run1_agent_1");
    tx.exec0("CREATE DATABASE shared_app");
    HandoffMonitorOptions o;
    o.admin = pg_->admin();
    o.identity = {"local-1", kApp, {"DATABASE_URL"}};
    o.interval = absl::Milliseconds(20);
    o.resolver = std::make_unique<NoResolver>();
    auto m = HandoffMonitor::Start(std::move(o));
    ASSERT_TRUE(m.ok()) << m.status();
    monitor_ = std::move(*m);
    monitor_->SetDatabase("ts_run1_agent_1");
    monitor_->SetStage("db");
  }
  std::unique_ptr<pqxx::connection> Connect(const std::string& db, const std::string& app) {
    return std::make_unique<pqxx::connection>(
        absl::StrCat(pg_->admin().WithDb(db).Conninfo(), " application_name='", app, "'"));
  }
  std::unique_ptr<pg::EmbeddedPostgres> pg_;
  std::unique_ptr<HandoffMonitor> monitor_;
};

TEST_F(HandoffMonitorTest, TaggedSessionOnAnotherDatabaseIsFound) {
  auto own = Connect("ts_run1_agent_1", kApp);
  EXPECT_THAT(monitor_->Flush(), IsEmpty());
  monitor_->TestStarted("tests/test_a.py::test_x");
  auto foreign = Connect("shared_app", kApp);
  std::vector<HandoffFinding> f = monitor_->Flush();
  ASSERT_THAT(f, SizeIs(1));
  EXPECT_EQ(f[0].kind, HandoffFinding::Kind::kForeignDatabase);
  EXPECT_EQ(f[0].database, "shared_app");
  EXPECT_EQ(f[0].first_test, "tests/test_a.py::test_x");
}

TEST_F(HandoffMonitorTest, OtherApplicationsAreNotTheAgents) {
  auto other = Connect("shared_app", "psql");
  auto other_agent = Connect("shared_app", "testshard tests run1/agent-2");
  EXPECT_THAT(monitor_->Flush(), IsEmpty());
}

TEST_F(HandoffMonitorTest, FailuresOnTablesADeadProcessLeftAreReported) {
  {
    auto c = Connect("ts_run1_agent_1", kApp);
    pqxx::nontransaction tx(*c);
    tx.exec0("CREATE TABLE ledger (id int)");
  }
  monitor_->ProcessEnded("the pytest worker died (killed by signal 9)");
  EXPECT_THAT(monitor_->Flush(), IsEmpty());
  monitor_->Result("tests/test_a.py::test_y", true, "relation \"ledger\" already exists");
  std::vector<HandoffFinding> f = monitor_->Flush();
  ASSERT_THAT(f, SizeIs(1));
  EXPECT_EQ(f[0].kind, HandoffFinding::Kind::kLeftoverTables);
  EXPECT_THAT(f[0].message, HasSubstr("public.ledger"));
  EXPECT_THAT(f[0].message, HasSubstr("killed by signal 9"));
}

TEST_F(HandoffMonitorTest, NoFailuresNoFinding) {
  {
    auto c = Connect("ts_run1_agent_1", kApp);
    pqxx::nontransaction tx(*c);
    tx.exec0("CREATE TABLE ledger (id int)");
  }
  monitor_->ProcessEnded("the pytest worker died");
  monitor_->Result("tests/test_a.py::test_y", false, "");
  EXPECT_THAT(monitor_->Flush(), IsEmpty());
}

}  // namespace
}  // namespace testshard::agent

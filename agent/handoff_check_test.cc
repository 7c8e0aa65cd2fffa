#include "agent/handoff_check.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr char kApp[] = "testshard tests run1/agent-1";

HandoffLedger Ledger() {
  HandoffLedger l({"local-1", kApp, {"DB_HOST", "DB_NAME"}});
  l.SetDatabase("ts_run1_agent_1");
  l.SetStage("db");
  return l;
}

ServerSession Session(int pid, std::string db, std::string app = kApp, std::string query = "SELECT 1") {
  ServerSession s;
  s.pid = pid;
  s.datname = std::move(db);
  s.usename = "postgres";
  s.application_name = std::move(app);
  s.state = "idle";
  s.query = std::move(query);
  return s;
}

TEST(TestApplicationNameTest, NamesRunAndAgentWithinPostgresLimit) {
  EXPECT_EQ(TestApplicationName("run1", "agent-1"), "testshard tests run1/agent-1");
  EXPECT_EQ(TestApplicationName(std::string(40, 'r'), std::string(40, 'a')).size(), 63u);
}

TEST(IsDerivedDatabaseTest, PytestDjangoAndXdistSuffixesAreOwn) {
  EXPECT_TRUE(IsDerivedDatabase("ts_r_agent_1", "ts_r_agent_1"));
  EXPECT_TRUE(IsDerivedDatabase("test_ts_r_agent_1", "ts_r_agent_1"));
  EXPECT_TRUE(IsDerivedDatabase("test_ts_r_agent_1_gw3", "ts_r_agent_1"));
  EXPECT_TRUE(IsDerivedDatabase("ts_r_agent_1_gw0", "ts_r_agent_1"));
}

TEST(IsDerivedDatabaseTest, AnotherAgentsDatabaseIsNotOwn) {
  EXPECT_FALSE(IsDerivedDatabase("ts_r_agent_10", "ts_r_agent_1"));
  EXPECT_FALSE(IsDerivedDatabase("test_ts_r_agent_12_gw0", "ts_r_agent_1"));
  EXPECT_FALSE(IsDerivedDatabase("xts_r_agent_1", "ts_r_agent_1"));
  EXPECT_FALSE(IsDerivedDatabase("postgres", "ts_r_agent_1"));
  EXPECT_FALSE(IsDerivedDatabase("anything", ""));
}

TEST(IsMaintenanceStatementTest, WhatDjangoDoesInThePostgresDatabase) {
  EXPECT_TRUE(IsMaintenanceStatement(""));
  EXPECT_TRUE(IsMaintenanceStatement("SELECT 1 FROM pg_catalog.pg_database WHERE datname = 'test_x'"));
  EXPECT_TRUE(IsMaintenanceStatement("CREATE DATABASE \"test_ts_r_agent_1\""));
  EXPECT_TRUE(IsMaintenanceStatement("  DROP DATABASE IF EXISTS \"test_x\""));
  EXPECT_TRUE(IsMaintenanceStatement("SET TIME ZONE 'UTC'"));
  EXPECT_TRUE(IsMaintenanceStatement("select version()"));
  EXPECT_TRUE(IsMaintenanceStatement("/* django */ SELECT datname FROM pg_database"));
  EXPECT_TRUE(IsMaintenanceStatement("BEGIN"));
  EXPECT_TRUE(IsMaintenanceStatement("SHOW server_version"));
  EXPECT_TRUE(IsMaintenanceStatement("<insufficient privilege>"));  // an admin that may not read the query
}

TEST(IsMaintenanceStatementTest, RealWorkIsNot) {
  EXPECT_FALSE(IsMaintenanceStatement("CREATE TABLE items (id int)"));
  EXPECT_FALSE(IsMaintenanceStatement("INSERT INTO items VALUES (1)"));
  EXPECT_FALSE(IsMaintenanceStatement("SELECT count(*) FROM items"));
  EXPECT_FALSE(IsMaintenanceStatement("select * from pg_class c join items i on true"));
  EXPECT_FALSE(IsMaintenanceStatement("settle_accounts()"));  // "set" must be a word
  EXPECT_FALSE(IsMaintenanceStatement("WITH x AS (SELECT 1) SELECT * FROM x"));
}

TEST(HandoffLedgerTest, OwnAndDerivedDatabasesMakeNoFinding) {
  HandoffLedger l = Ledger();
  l.Observe({Session(1, "ts_run1_agent_1"), Session(2, "test_ts_run1_agent_1")}, {});
  EXPECT_THAT(l.TakeFindings(), IsEmpty());
  EXPECT_THAT(l.seen(), SizeIs(2));
  EXPECT_TRUE(l.seen().at(2).own);
}

TEST(HandoffLedgerTest, TaggedSessionOnAnotherDatabaseIsReportedOnceWithItsTest) {
  HandoffLedger l = Ledger();
  l.SetTest("tests/test_a.py::test_one");
  l.Observe({Session(7, "shared_app")}, {});
  l.SetTest("tests/test_a.py::test_two");
  l.Observe({Session(7, "shared_app"), Session(8, "shared_app")}, {});
  std::vector<HandoffFinding> f = l.TakeFindings();
  ASSERT_THAT(f, SizeIs(1));
  EXPECT_EQ(f[0].kind, HandoffFinding::Kind::kForeignDatabase);
  EXPECT_EQ(f[0].database, "shared_app");
  EXPECT_EQ(f[0].own_database, "ts_run1_agent_1");
  EXPECT_EQ(f[0].first_test, "tests/test_a.py::test_one");
  EXPECT_EQ(f[0].sessions, 2);
  EXPECT_EQ(f[0].stage, "db");
  EXPECT_THAT(f[0].message, HasSubstr("DB_HOST, DB_NAME"));
  l.Observe({Session(9, "shared_app")}, {});
  EXPECT_THAT(l.TakeFindings(), IsEmpty());
}

TEST(HandoffLedgerTest, OtherAgentsSessionsAreNotThisAgents) {
  HandoffLedger l = Ledger();
  l.Observe({Session(3, "ts_run1_agent_2", "testshard tests run1/agent-2"), Session(4, "shared", "psql")}, {});
  EXPECT_THAT(l.TakeFindings(), IsEmpty());
  EXPECT_THAT(l.seen(), IsEmpty());
}

TEST(HandoffLedgerTest, UntaggedSessionsNeedTheirOwnerUnlessInAnOwnDatabase) {
  HandoffLedger l = Ledger();
  std::vector<ServerSession> sessions = {Session(1, "ts_run1_agent_1", ""), Session(2, "elsewhere", ""),
                                         Session(3, "elsewhere", "testshard tests run1/agent-3")};
  std::vector<ServerSession> need = l.NeedOwner(sessions);
  ASSERT_THAT(need, SizeIs(1));
  EXPECT_EQ(need[0].pid, 2);
}

TEST(HandoffLedgerTest, SessionResolvedByItsClientProcessCounts) {
  HandoffLedger l = Ledger();
  l.Observe({Session(2, "elsewhere", "")}, {2});
  std::vector<HandoffFinding> f = l.TakeFindings();
  ASSERT_THAT(f, SizeIs(1));
  EXPECT_EQ(f[0].database, "elsewhere");
  EXPECT_FALSE(l.seen().at(2).tagged);
}

TEST(HandoffLedgerTest, AdviceSaysWhenNoVariableNamesTheDatabase) {
  HandoffLedger l({"local-1", kApp, {"PGHOST", "PGPORT"}, /*env_names_database=*/false});
  l.SetDatabase("ts_run1_agent_1");
  l.Observe({Session(6, "postgres", kApp, "INSERT INTO items VALUES (1)")}, {});
  std::vector<HandoffFinding> f = l.TakeFindings();
  ASSERT_THAT(f, SizeIs(1));
  EXPECT_THAT(f[0].message, HasSubstr("None of PGHOST, PGPORT (from [database.env]) carries the database's name"));
}

TEST(HandoffLedgerTest, AReusedBackendPidIsNotTakenForTheSessionBefore) {
  HandoffLedger l = Ledger();
  ServerSession mine = Session(2, "elsewhere", "");
  mine.backend_start = "100.5";
  l.Observe({mine}, {2});
  ASSERT_THAT(l.TakeFindings(), SizeIs(1));
  ServerSession stranger = Session(2, "elsewhere", "");
  stranger.backend_start = "200.5";
  EXPECT_THAT(l.NeedOwner({stranger}), SizeIs(1));  // a new session: its client must be looked up again
  l.Observe({stranger}, {});
  EXPECT_FALSE(l.seen().count(2) && l.seen().at(2).backend_start == "200.5");
}

TEST(HandoffLedgerTest, MaintenanceDatabaseIsFineUntilTheTestsWorkThere) {
  HandoffLedger l = Ledger();
  l.Observe({Session(5, "postgres", kApp, "CREATE DATABASE \"test_ts_run1_agent_1\"")}, {});
  EXPECT_THAT(l.TakeFindings(), IsEmpty());
  l.Observe({Session(6, "postgres", kApp, "CREATE TABLE items (id int)")}, {});
  std::vector<HandoffFinding> f = l.TakeFindings();
  ASSERT_THAT(f, SizeIs(1));
  EXPECT_THAT(f[0].message, HasSubstr("maintenance database \"postgres\""));
  EXPECT_THAT(f[0].message, HasSubstr("CREATE TABLE items"));
}

TEST(HandoffLedgerTest, DatabasesHandedEarlierStayOwn) {
  HandoffLedger l = Ledger();
  l.SetDatabase("ts_run1_agent_1_lease_2");
  l.Observe({Session(1, "ts_run1_agent_1"), Session(2, "ts_run1_agent_1_lease_2")}, {});
  EXPECT_THAT(l.TakeFindings(), IsEmpty());
}

TEST(HandoffLedgerTest, FailuresAfterLeftoversSuggestResetShard) {
  HandoffLedger l = Ledger();
  l.Result("tests/test_a.py::test_before", true, "unrelated");
  l.Leftovers({"public.items"}, "its pytest worker was stopped (signal 9)");
  EXPECT_THAT(l.TakeFindings(), IsEmpty());  // nothing failed on them yet
  l.Result("tests/test_a.py::test_ok", false, "");
  l.Result("tests/test_a.py::test_x", true, "relation \"items\" already exists");
  l.Result("tests/test_a.py::test_y", true, "relation \"items\" already exists");
  std::vector<HandoffFinding> f = l.TakeFindings();
  ASSERT_THAT(f, SizeIs(1));
  EXPECT_EQ(f[0].kind, HandoffFinding::Kind::kLeftoverTables);
  EXPECT_EQ(f[0].first_test, "tests/test_a.py::test_x");
  EXPECT_THAT(f[0].message, HasSubstr("2 test(s) failed"));
  EXPECT_THAT(f[0].message, HasSubstr("public.items"));
  EXPECT_THAT(f[0].message, HasSubstr("reset = \"shard\""));
  EXPECT_THAT(f[0].message, HasSubstr("already exists"));
}

TEST(HandoffLedgerTest, FailuresOnAnotherDatabaseAreNotTheLeftoversFault) {
  HandoffLedger l = Ledger();
  l.Leftovers({"public.items"}, "a crash");
  l.SetDatabase("ts_run1_agent_1_lease_3");  // reset = "shard": a fresh database for this lease
  l.Result("t", true, "boom");
  EXPECT_THAT(l.TakeFindings(), IsEmpty());
  l.SetDatabase("ts_run1_agent_1");  // back on the agent's database, which still has them
  l.Result("u", true, "relation \"items\" already exists");
  std::vector<HandoffFinding> f = l.TakeFindings();
  ASSERT_THAT(f, SizeIs(1));
  EXPECT_EQ(f[0].own_database, "ts_run1_agent_1");
  EXPECT_EQ(f[0].first_test, "u");
}

TEST(HandoffLedgerTest, NotesAreTakenOnce) {
  HandoffLedger l = Ledger();
  l.Note("a long name");
  std::vector<HandoffFinding> f = l.TakeFindings();
  ASSERT_THAT(f, SizeIs(1));
  EXPECT_EQ(f[0].kind, HandoffFinding::Kind::kNote);
  EXPECT_THAT(l.TakeFindings(), IsEmpty());
}

TEST(DjangoNameAdviceTest, OnlyWhenTheXdistNameWouldBeTruncated) {
  EXPECT_EQ(DjangoNameAdvice("ts_0123456789ab_agent_12"), "");
  EXPECT_THAT(DjangoNameAdvice(std::string(55, 'x')), HasSubstr("63 bytes"));
}

}  // namespace
}  // namespace testshard::agent

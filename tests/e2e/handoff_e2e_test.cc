// The database hand-off end to end: `testshard run` with 3 agents on real pytest suites. Every template form
// ({url}, {sqlalchemy_url}, {asyncpg_url}, {host}/{port}/{dbname}/..., {socket_dir}) reaches the agent's own
// database through psycopg2, SQLAlchemy, SQLAlchemy's asyncpg dialect and asyncpg, over the unix socket and over
// TCP; and suites that ignore the hand-off (a hard-coded database, libpq's default one) are caught and named.
#include <filesystem>
#include <map>
#include <set>
#include <thread>

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

constexpr char kIni[] = "[pytest]\naddopts = --strict-markers\nmarkers =\n    handoff\n";

// Runs as the admin role on the template database: a table the tests (as app_user) can read.
constexpr char kSetup[] = R"PY(
import os, psycopg2
conn = psycopg2.connect(os.environ["DATABASE_URL"])
conn.autocommit = True
conn.cursor().execute("CREATE TABLE seeded (id int); INSERT INTO seeded VALUES (1), (2), (3); "
                      "GRANT SELECT ON seeded TO app_user")
)PY";

// One test per way a project takes its database. Each checks it reached the agent's database, as app_user, over
// the transport the config asked for, and records which database and agent it saw.
constexpr char kFormsTests[] = R"PY(
import asyncio, os, psycopg2, pytest

QUERY = "SELECT current_database(), inet_server_addr() IS NULL, current_user, (SELECT count(*) FROM seeded)"
pytestmark = [pytest.mark.handoff, pytest.mark.parametrize("i", range(3))]


def check(row, record_property):
    db, is_socket, user, seeded = row
    record_property("database", db)
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    assert db == os.environ["DB_NAME"]
    assert user == "app_user"
    assert seeded == 3
    assert is_socket == (os.environ["EXPECT_TRANSPORT"] == "socket")


def psycopg2_row(hold=0, **kwargs):
    conn = psycopg2.connect(**kwargs)
    try:
        cur = conn.cursor()
        cur.execute(QUERY)
        row = cur.fetchone()
        if hold:
            cur.execute("SELECT pg_sleep(%s)", (hold,))
        return row
    finally:
        conn.close()


# One test keeps its session for half a second: the agent samples sessions every 100 ms, and the other tests'
# sessions are short enough to fall between two samples, which left the check below with nothing to look at.
def test_libpq_url(i, record_property):
    check(psycopg2_row(dsn=os.environ["DATABASE_URL"], hold=0.5 if i == 0 else 0), record_property)


def test_separate_variables(i, record_property):
    check(psycopg2_row(host=os.environ["DB_HOST"], port=os.environ["DB_PORT"], dbname=os.environ["DB_NAME"],
                       user=os.environ["DB_USER"], password=os.environ["DB_PASSWORD"] or None), record_property)


def test_socket_dir(i, record_property):
    sock = os.environ["DB_SOCKET_DIR"]
    if os.environ["EXPECT_TRANSPORT"] == "socket":
        assert sock == os.environ["DB_HOST"]
        assert os.path.exists(os.path.join(sock, ".s.PGSQL." + os.environ["DB_PORT"]))
    else:
        assert sock == "" and os.environ["DB_HOST"] == "127.0.0.1"
    check(psycopg2_row(dsn=os.environ["DATABASE_URL"]), record_property)


def test_sqlalchemy_url(i, record_property):
    import sqlalchemy
    assert os.environ["SQLALCHEMY_URL"].startswith("postgresql+psycopg2://")
    engine = sqlalchemy.create_engine(os.environ["SQLALCHEMY_URL"])
    with engine.connect() as c:
        row = tuple(c.execute(sqlalchemy.text(QUERY)).one())
    engine.dispose()
    check(row, record_property)


def test_sqlalchemy_asyncpg_url(i, record_property):
    import sqlalchemy
    from sqlalchemy.ext.asyncio import create_async_engine
    assert os.environ["ASYNC_DATABASE_URL"].startswith("postgresql+asyncpg://")

    async def run():
        engine = create_async_engine(os.environ["ASYNC_DATABASE_URL"])
        async with engine.connect() as c:
            row = tuple((await c.execute(sqlalchemy.text(QUERY))).one())
        await engine.dispose()
        return row
    check(asyncio.run(run()), record_property)


def test_asyncpg_separate_variables(i, record_property):
    import asyncpg

    async def run():
        c = await asyncpg.connect(host=os.environ["DB_HOST"], port=int(os.environ["DB_PORT"]),
                                  database=os.environ["DB_NAME"], user=os.environ["DB_USER"])
        try:
            return tuple(await c.fetchrow(QUERY))
        finally:
            await c.close()
    check(asyncio.run(run()), record_property)


def test_asyncpg_libpq_url(i, record_property):
    import asyncpg

    async def run():
        c = await asyncpg.connect(os.environ["DATABASE_URL"])
        try:
            return tuple(await c.fetchrow(QUERY))
        finally:
            await c.close()
    check(asyncio.run(run()), record_property)
)PY";

std::string FormsConfig(const std::string& transport) {
  return absl::StrCat(R"(command = ["/usr/bin/python3", "-m", "pytest"]

[env]
EXPECT_TRANSPORT = ")", transport, R"("

[database]
role = "app_user"
transport = ")", transport, R"("
setup = [["/usr/bin/python3", "setup_db.py"]]
template_inputs = ["setup_db.py"]

[database.env]
DATABASE_URL = "{url}"
SQLALCHEMY_URL = "{sqlalchemy_url}"
ASYNC_DATABASE_URL = "{asyncpg_url}"
DB_HOST = "{host}"
DB_PORT = "{port}"
DB_NAME = "{dbname}"
DB_USER = "{user}"
DB_PASSWORD = "{password}"
DB_SOCKET_DIR = "{socket_dir}"

[[stages]]
name = "forms"
markers = "handoff"
)");
}

class HandoffE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    project_.Write("pytest.ini", kIni);
    project_.Write("setup_db.py", kSetup);
  }
  Project::Result Run() { return project_.Testshard({"run", "--agents", "3", "--junit-out", "report.xml"}); }
  Report ReadBack() { return ReadReport(project_.dir() + "/report.xml"); }
  Project project_;
};

class HandoffFormsE2eTest : public HandoffE2eTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(HandoffFormsE2eTest, EveryTemplateFormReachesTheAgentsOwnDatabase) {
  project_.Write("tests/test_forms.py", kFormsTests);
  project_.Write("testshard.toml", FormsConfig(GetParam()));
  Project::Result r = Run();
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr("Database hand-off")));
  Report report = ReadBack();
  ASSERT_TRUE(report.parsed) << report.error;
  ASSERT_EQ(report.cases.size(), 21u) << r.output;
  for (const auto& [id, n] : report.Appearances()) EXPECT_EQ(n, 1) << id;
  EXPECT_EQ(report.Count(Outcome::kPassed), 21) << r.output;
  std::map<std::string, std::set<std::string>> agents_by_db, dbs_by_agent;
  for (const ReportedCase& c : report.cases) {
    agents_by_db[c.properties.at("database")].insert(c.properties.at("agent"));
    dbs_by_agent[c.properties.at("agent")].insert(c.properties.at("database"));
  }
  EXPECT_GE(dbs_by_agent.size(), 2u);
  for (const auto& [db, agents] : agents_by_db) EXPECT_EQ(agents.size(), 1u) << db;
  for (const auto& [agent, dbs] : dbs_by_agent) EXPECT_EQ(dbs.size(), 1u) << agent;
  // The server's view: every session the check tied to an agent's tests was in that agent's own database.
  std::vector<AgentSession> sessions = ReadAgentSessions(project_.dir());
  EXPECT_FALSE(sessions.empty());
  for (const AgentSession& s : sessions) EXPECT_TRUE(s.own) << s.agent_dir << " " << s.database;
}

INSTANTIATE_TEST_SUITE_P(Transports, HandoffFormsE2eTest, ::testing::Values("socket", "tcp"));

// `testshard agent` on its own (as on a CI runner) starts its own embedded server; with transport = "tcp" that
// server listens on loopback too and the agent hands its tests 127.0.0.1 and a port.
TEST_F(HandoffE2eTest, AnAgentsOwnServerHandsOverTcpWhenAsked) {
  project_.Write("tests/test_forms.py", kFormsTests);
  project_.Write("testshard.toml", FormsConfig("tcp"));
  std::string sock = project_.dir() + "/coordinator.sock";
  auto start = [&](std::vector<std::string> args, const std::string& log) {
    return project_.Start(args, log, {{"TESTSHARD_TOKEN", "0123456789abcdef0123456789abcdef"}}, absl::Minutes(3));
  };
  Subprocess coordinator = start({"coordinator", "--listen", "unix:" + sock, "--agents", "1", "--junit-out",
                                  "report.xml"}, "coordinator.log");
  for (int i = 0; i < 200 && !fs::exists(sock); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  Subprocess agent = start({"agent", "--coordinator", "unix:" + sock, "--name", "remote-1"}, "agent.log");
  EXPECT_EQ(agent.Wait().exit_code, 0) << project_.Read("agent.log");
  EXPECT_EQ(coordinator.Wait().exit_code, 0) << project_.Read("coordinator.log");
  Report report = ReadBack();
  EXPECT_EQ(report.Count(Outcome::kPassed), 21) << project_.Read("coordinator.log") << project_.Read("agent.log");
}

// The suite takes the server's location from the hand-off but hard-codes its database: every agent's tests meet in
// "legacy_app". The tests pass - which is what makes it dangerous - and the run says why it fails anyway. The
// connections are asyncpg's, which carry no application_name of ours: the check finds them by their client process.
constexpr char kHardCodedTests[] = R"PY(
import asyncio, os, time, asyncpg, pytest

async def work(i):
    c = await asyncpg.connect(host=os.environ["DB_HOST"], port=int(os.environ["DB_PORT"]), user="postgres",
                              database="legacy_app")
    try:
        await c.execute("INSERT INTO events VALUES ($1, $2)", os.environ["TESTSHARD_AGENT"], i)
        await asyncio.sleep(0.3)  # long enough for the check to see the session
    finally:
        await c.close()

@pytest.mark.handoff
@pytest.mark.parametrize("i", range(9))
def test_event(i):
    asyncio.run(work(i))
)PY";

constexpr char kCreateLegacyDatabase[] = R"PY(
import os, psycopg2
conn = psycopg2.connect(host=os.environ["DB_HOST"], port=os.environ["DB_PORT"], user="postgres", dbname="postgres")
conn.autocommit = True
cur = conn.cursor()
cur.execute("SELECT 1 FROM pg_database WHERE datname = 'legacy_app'")
if not cur.fetchone():
    cur.execute("CREATE DATABASE legacy_app")
# The table exists before any test runs: agents creating it at once could fail (pg_type's unique index), which
# would hide what this test is about behind a failure.
legacy = psycopg2.connect(host=os.environ["DB_HOST"], port=os.environ["DB_PORT"], user="postgres", dbname="legacy_app")
legacy.autocommit = True
legacy.cursor().execute("CREATE TABLE IF NOT EXISTS events (agent text, i int)")
)PY";

std::string HardCodedConfig(const std::string& extra) {
  return absl::StrCat(R"(command = ["/usr/bin/python3", "-m", "pytest"]

[database]
setup = [["/usr/bin/python3", "setup_db.py"]]
template_inputs = ["setup_db.py"]
env = { DB_HOST = "{host}", DB_PORT = "{port}", DB_NAME = "{dbname}" }
)", extra, R"(
[[stages]]
name = "events"
markers = "handoff"
)");
}

TEST_F(HandoffE2eTest, HardCodedDatabaseIsDetectedAndFailsTheRun) {
  project_.Write("setup_db.py", kCreateLegacyDatabase);
  project_.Write("tests/test_events.py", kHardCodedTests);
  project_.Write("testshard.toml", HardCodedConfig(""));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("Database hand-off: the suite does not keep to the databases testshard hands it"));
  EXPECT_THAT(r.output, HasSubstr("session(s) on database \"legacy_app\""));
  EXPECT_THAT(r.output, HasSubstr("was used by the tests of"));
  EXPECT_THAT(r.output, HasSubstr("DB_HOST, DB_NAME, DB_PORT (from [database.env])"));
  EXPECT_THAT(r.output, HasSubstr("The run fails because of this"));
  Report report = ReadBack();
  ASSERT_TRUE(report.parsed) << report.error;
  int tests = 0;
  bool handoff_case = false;
  for (const ReportedCase& c : report.cases) {
    if (c.suite == "testshard.handoff") {
      handoff_case = true;
      EXPECT_EQ(c.name, "foreign_database[legacy_app]");
      EXPECT_EQ(c.outcome, Outcome::kError);
    } else {
      ++tests;
      EXPECT_EQ(c.outcome, Outcome::kPassed) << c.name;
    }
  }
  EXPECT_EQ(tests, 9);
  EXPECT_TRUE(handoff_case) << project_.Read("report.xml");
  // Found through the client process: asyncpg sent no application_name.
  bool untagged = false;
  for (const AgentSession& s : ReadAgentSessions(project_.dir())) {
    if (s.database == "legacy_app") {
      EXPECT_FALSE(s.own);
      untagged |= !s.tagged;
    }
  }
  EXPECT_TRUE(untagged);
}

TEST_F(HandoffE2eTest, HardCodedDatabaseOverTcpIsDetectedToo) {
  project_.Write("setup_db.py", kCreateLegacyDatabase);
  project_.Write("tests/test_events.py", kHardCodedTests);
  project_.Write("testshard.toml", HardCodedConfig("transport = \"tcp\"\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("session(s) on database \"legacy_app\""));
}

TEST_F(HandoffE2eTest, WarnReportsWithoutFailingTheRun) {
  project_.Write("setup_db.py", kCreateLegacyDatabase);
  project_.Write("tests/test_events.py", kHardCodedTests);
  project_.Write("testshard.toml", HardCodedConfig("handoff_check = \"warn\"\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("session(s) on database \"legacy_app\""));
  EXPECT_THAT(r.output, HasSubstr("\"warn\": reported"));
}

// The hand-off names the server and the role but no database: libpq connects to the database named like the role
// (postgres), the same one for every agent, and the tests create and fill a table there.
TEST_F(HandoffE2eTest, DefaultDatabaseIsDetected) {
  project_.Write("setup_db.py", "print('nothing to migrate')\n");
  project_.Write("tests/test_items.py", R"PY(
import time, psycopg2, pytest

@pytest.fixture(scope="module")
def conn():
    c = psycopg2.connect("")  # PGHOST, PGPORT, PGUSER from the environment; no PGDATABASE
    c.autocommit = True
    c.cursor().execute("CREATE TABLE IF NOT EXISTS items (id serial primary key)")
    yield c
    c.close()

@pytest.mark.handoff
@pytest.mark.parametrize("i", range(12))
def test_insert(conn, i):
    time.sleep(0.1)
    conn.cursor().execute("INSERT INTO items DEFAULT VALUES")
)PY");
  project_.Write("testshard.toml", R"(command = ["/usr/bin/python3", "-m", "pytest"]

[database]
setup = [["/usr/bin/python3", "setup_db.py"]]
env = { PGHOST = "{host}", PGPORT = "{port}", PGUSER = "{user}" }

[[stages]]
name = "items"
markers = "handoff"
)");
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("its tests worked in the server's maintenance database \"postgres\""));
  EXPECT_THAT(r.output, HasSubstr("None of PGHOST, PGPORT, PGUSER (from [database.env]) carries the database's name"));
}

// A suite that owns its tables: each module creates "ledger" when it starts and drops it when it ends. The first
// time each module runs, its worker dies mid-module, so the DROP never runs; on the same database the module's
// remaining tests then fail to create the table. The run names the leftover table as the cause and says what to do.
std::string TableOwningModule(const std::string& name) {
  return absl::StrReplaceAll(R"PY(
"""Creates its table when the module starts and drops it when the module ends."""
import os, signal, psycopg2, pytest

pytestmark = pytest.mark.handoff
FLAG = os.path.join(os.path.dirname(__file__), "..", "died-in-MODULE")


@pytest.fixture(scope="module")
def db():
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    conn.autocommit = True
    conn.cursor().execute("CREATE TABLE ledger (id serial PRIMARY KEY, module text NOT NULL)")
    yield conn
    conn.cursor().execute("DROP TABLE ledger")
    conn.close()


@pytest.mark.parametrize("i", range(6))
def test_rows(db, i):
    if i == 2 and not os.path.exists(FLAG):
        open(FLAG, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-module: the DROP never runs
    cur = db.cursor()
    cur.execute("INSERT INTO ledger (module) VALUES ('MODULE')")
    cur.execute("SELECT count(*) FROM ledger WHERE module <> 'MODULE'")
    assert cur.fetchone()[0] == 0
)PY",
                             {{"MODULE", name}});
}

std::string TableOwningConfig(const std::string& stage_extra) {
  return absl::StrCat(R"TOML(command = ["/usr/bin/python3", "-m", "pytest"]

[database]
setup = [["/usr/bin/python3", "-c", "print('the suite makes its own tables')"]]
env = { DATABASE_URL = "{url}" }

[[stages]]
name = "owns"
markers = "handoff"
retries = 1
granularity = "module"  # each module owns its table: its tests are one unit, as the suite was written
)TOML", stage_extra);
}

// The same suite with a pristine database per shard: the retried tests find no leftovers and pass (reported as
// flaky, for the attempt the dead worker took with it).
TEST_F(HandoffE2eTest, TableOwningSuitePassesWithAFreshDatabasePerShard) {
  for (const char* m : {"orders", "invoices", "shipments"}) {
    project_.Write(absl::StrCat("tests/test_", m, ".py"), TableOwningModule(m));
  }
  project_.Write("testshard.toml", TableOwningConfig("reset = \"shard\"\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr("Database hand-off")));
  Report report = ReadBack();
  ASSERT_TRUE(report.parsed) << report.error;
  ASSERT_EQ(report.cases.size(), 18u) << r.output;
  for (const auto& [id, n] : report.Appearances()) EXPECT_EQ(n, 1) << id;
  EXPECT_EQ(report.Count(Outcome::kPassed), 18) << r.output;
}

TEST_F(HandoffE2eTest, TablesLeftByADeadWorkerAreNamedAsTheCauseOfFailures) {
  for (const char* m : {"orders", "invoices", "shipments"}) {
    project_.Write(absl::StrCat("tests/test_", m, ".py"), TableOwningModule(m));
  }
  project_.Write("testshard.toml", TableOwningConfig(""));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("relation \"ledger\" already exists"));
  EXPECT_THAT(r.output, HasSubstr("Database hand-off: tests failed on tables an earlier test process left behind"));
  EXPECT_THAT(r.output, HasSubstr("left tables the fresh database does not have (public.ledger)"));
  EXPECT_THAT(r.output, HasSubstr("set reset = \"shard\" for stage 'owns'"));
  Report report = ReadBack();
  ASSERT_TRUE(report.parsed) << report.error;
  bool leftover_case = false;
  for (const ReportedCase& c : report.cases) leftover_case |= absl::StartsWith(c.name, "leftover_tables[");
  EXPECT_TRUE(leftover_case) << project_.Read("report.xml");
}

}  // namespace
}  // namespace testshard::e2e

// The hand-off check, pure logic: from samples of the database server's sessions (pg_stat_activity) and the
// agent's own test results, decides whether a suite keeps to the database the agent handed it, and says what is
// wrong when it does not. HandoffMonitor (agent/handoff_monitor.h) does the sampling; this file only reasons.
//
// Whose session is it? An agent's test processes carry an application_name of their own (PGAPPNAME, which libpq
// and so psycopg2, Django and SQLAlchemy read); drivers that ignore it (asyncpg) or code that sets its own name are
// recognised by the client process behind the session (ClientResolver: the agent's descendants). Where is it? In
// the agent's database or one derived from it (pytest-django's test_<name>, xdist's <name>_gw0): fine. In the
// server's maintenance database (postgres, template1) doing what Django and pytest-django do there (catalog reads,
// CREATE/DROP DATABASE): fine. Anywhere else - another agent's database, a hard-coded one, the default one a
// connection without a database name lands in - is a finding: the suite ignores the hand-off and the agents may
// trample one another.
//
// A second, narrower finding: tests that fail on a database still holding tables that an earlier test process
// created and never dropped (a worker killed mid-module, a session that assumes a fresh database). That is what
// `reset = "shard"` is for, and the finding says so.
#ifndef TESTSHARD_AGENT_HANDOFF_CHECK_H_
#define TESTSHARD_AGENT_HANDOFF_CHECK_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/handoff_finding.h"

namespace testshard::agent {

// One row of pg_stat_activity (client backends only).
struct ServerSession {
  int pid = 0;            // the backend's process id
  std::string datname;
  std::string usename;
  std::string application_name;
  std::string state;      // active, idle, idle in transaction, ...
  std::string query;      // the current or last statement, trimmed
  int client_port = -1;   // the client's TCP port; -1 for a unix-socket client
  std::string backend_start;  // with pid, names the session uniquely (pids are reused)
};

// The application_name an agent's test processes carry: "testshard tests <run>/<agent>", at most 63 bytes (longer
// names are truncated by the server). Everything that starts with kTestApplicationPrefix is some agent's tests.
inline constexpr std::string_view kTestApplicationPrefix = "testshard tests ";
std::string TestApplicationName(std::string_view run_id, std::string_view agent_id);

// True for `own` itself and names built around it with '_' separators: test_<own>, <own>_gw0, test_<own>_gw0_py311
// (pytest-django's test database, with xdist's and tox's suffixes). Not for names that merely contain it: agent 1's
// "ts_r_agent_1" does not make agent 10's "ts_r_agent_10" its own.
bool IsDerivedDatabase(std::string_view datname, std::string_view own);

// The databases every cluster has, where clients land to create other databases: postgres and template1.
bool IsMaintenanceDatabase(std::string_view datname);

// Statements that are expected on a maintenance database: catalog reads (SELECT ... FROM pg_*, SELECT without a
// FROM), CREATE/DROP/ALTER DATABASE, SET/SHOW/RESET and transaction control. Anything else - DDL on tables, DML,
// reads of user tables - is a test doing its work there.
bool IsMaintenanceStatement(std::string_view query);

// A table an earlier test process left in the agent's database, as "schema.table".
using TableNames = std::set<std::string>;

// What the check concluded. Thread-compatible: HandoffMonitor calls it under its own lock.
class HandoffLedger {
 public:
  struct Identity {
    std::string agent;                  // the agent's name, for messages
    std::string application_name;       // TestApplicationName() of this agent
    std::vector<std::string> env_vars;  // the variables the hand-off sets (config database.env), for advice
    bool env_names_database = true;     // one of them carries the database's name ({dbname} or a URL)
  };
  // A session of the agent's tests, as first seen.
  struct Seen {
    std::string datname, usename, application_name, stage, test, query, backend_start;
    bool tagged = false;  // recognised by application_name (else by its client process)
    bool own = false;     // in the agent's database, one derived from it, or doing maintenance
  };

  explicit HandoffLedger(Identity identity);

  // The database the agent hands its tests from now on (a new one per shard with reset = "shard", the agent's own
  // again afterwards). Databases handed earlier stay the agent's; leftovers are kept per database.
  void SetDatabase(const std::string& name);
  const std::string& database() const { return database_; }
  void SetStage(const std::string& stage) { stage_ = stage; }
  // The test running now ("" between tests), to say when something was first seen.
  void SetTest(const std::string& test_id) { test_ = test_id; }

  // Sessions whose owner only their client process can tell: not tagged as some agent's tests, and not in one of
  // this agent's databases (where it does not matter whose they are).
  std::vector<ServerSession> NeedOwner(const std::vector<ServerSession>& sessions) const;
  // One sample of the server. `resolved` holds the backend pids whose client is one of the agent's test processes.
  void Observe(const std::vector<ServerSession>& sessions, const std::set<int>& resolved);

  // After a test process ended: `tables` are in the agent's database now and were not in the fresh clone; `cause`
  // says how the process ended ("the pytest worker died (signal 9)").
  void Leftovers(const TableNames& tables, const std::string& cause);
  // A test's outcome; failures on a database with leftovers make a finding.
  void Result(const std::string& test_id, bool failed, const std::string& message);

  // Advice that is not about sessions; reported with the next findings.
  void Note(const std::string& message);

  // Findings not taken yet, each reported once (a foreign database again after it was reported is not repeated;
  // its session count in the log keeps growing).
  std::vector<HandoffFinding> TakeFindings();
  // Every session of the agent's tests seen so far, by backend pid.
  const std::map<int, Seen>& seen() const { return seen_; }
  bool IsOwn(std::string_view datname) const;

 private:
  struct Foreign {
    std::set<int> sessions;
    std::string usename, application_name, stage, test, query;
    bool maintenance = false;  // a maintenance database used for real work
    bool reported = false;
  };
  struct Leftover {
    TableNames tables;
    std::string cause;
    int failures = 0;
    std::string first_test, first_message;
    bool reported = false;
  };
  std::string Advice() const;

  const Identity identity_;
  std::string database_;
  std::set<std::string> handed_;  // every database handed so far
  std::string stage_, test_;
  std::map<int, Seen> seen_;
  std::map<std::string, Foreign> foreign_;  // by database
  std::map<std::string, Leftover> leftovers_;  // by database
  std::vector<HandoffFinding> notes_;
};

// The advice for a pytest-django test database name: PostgreSQL truncates identifiers to 63 bytes, so when
// "test_<name>_gw<N>" is longer, xdist workers' databases may collide. Empty when it fits.
std::string DjangoNameAdvice(std::string_view dbname);

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_HANDOFF_CHECK_H_

// Database names that say whose a database is, and the janitor that drops what dead agents left behind.
//
// Every provisioner has an instance id (random, per agent process). Before it creates any database it opens a
// "presence" session that holds a session-level advisory lock on that id and carries the id in its
// application_name. Both end when the agent does, however it ends (exit, crash, kill -9, a machine that vanishes:
// TCP keepalives close the session within about a minute). An agent is dead when nobody holds its lock AND no
// session carries its application_name; only then does the janitor drop its databases, holding the lock itself
// while it does, so two janitors never race and a live agent is never touched. Either signal alone keeps a
// database: the application_name check covers agents whose presence session sits in another maintenance database
// (advisory locks are per database), the lock covers an application_name somebody changed.
#ifndef TESTSHARD_AGENT_JANITOR_H_
#define TESTSHARD_AGENT_JANITOR_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/postgres/sql_session.h"

namespace testshard::agent {

struct DatabaseNameParts {
  std::string instance;  // the provisioner's instance id: 8 hex digits
  std::string run;
  std::string agent;
  std::string use;  // the lease id, "agent", a stage, or "p<n>" while it waits in the pool
};

// ts_<instance>_<run>_<agent>_<use>: each part reduced to [a-z0-9] and shortened so the name fits PostgreSQL's
// 63 bytes. Deterministic.
std::string MakeDatabaseName(const DatabaseNameParts& parts);
// The parts of a name MakeDatabaseName made; nullopt for any other name (which the janitor then never touches).
std::optional<DatabaseNameParts> ParseDatabaseName(std::string_view name);

// A fresh random instance id.
std::string NewInstanceId();
// The application_name of an instance's presence session.
std::string PresenceApplicationName(std::string_view instance);
// SQL for the advisory-lock key of an instance (hashtextextended over a fixed prefix and the id).
std::string PresenceLockKey(std::string_view instance);

// Takes the presence lock for `instance` on `session` (which must stay open for the agent's life) .
absl::Status ClaimPresence(pg::SqlSession& session, std::string_view instance);

struct SweepResult {
  int dropped = 0;    // databases of dead agents dropped
  int live_kept = 0;  // databases of live agents left alone (other than our own)
  int failed = 0;     // dead agents' databases that could not be dropped (not ours to drop, say)
};

// Drops the databases of dead agents (see above). `own_instance`'s databases are never touched. Safe to run from
// many agents at once. Errors only when the server cannot be asked at all.
absl::StatusOr<SweepResult> SweepDeadAgents(pg::SqlSession& session, std::string_view own_instance);

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_JANITOR_H_

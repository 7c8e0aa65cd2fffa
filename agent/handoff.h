// The agent's side of the database hand-off, besides rendering [database.env]: the transport the config asks for,
// what else a test process's environment carries (the application_name that marks its sessions as this agent's
// tests, testshard's pytest-django plugin when the clone is to be pytest-django's test database), and starting
// the hand-off check. Kept out of agent.cc so the agent loop only calls it.
#ifndef TESTSHARD_AGENT_HANDOFF_H_
#define TESTSHARD_AGENT_HANDOFF_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "agent/handoff_monitor.h"
#include "common/postgres/connection.h"
#include "testshard/v1/coordinator.pb.h"

namespace testshard::agent {

// OK when `server` is reached the way `db.transport()` asks ("tcp": a host and port; "socket": a unix-socket
// directory; "": either). FailedPrecondition naming the mismatch otherwise.
absl::Status CheckTransport(const v1::DatabaseSpec& db, const pg::Connection& server);

// Adds to a test process's environment: PGAPPNAME = `application_name` (unless the project sets its own) while the
// hand-off check is on; for django_test_db = "reuse", TESTSHARD_DJANGO_REUSE_DB = `database`, and testshard's
// pytest-django plugin in PYTEST_PLUGINS, found through PYTHONPATH in `plugin_dir`.
void AddHandoffEnv(const v1::DatabaseSpec& db, std::string_view database, std::string_view application_name,
                   std::string_view plugin_dir, std::map<std::string, std::string>* env);

// Starts the hand-off check for an agent whose tests get `database` on the server `admin` reaches, unless the
// config turned it off (then null). `log_path` receives the sessions it attributes to the agent's tests.
// Advice that needs no sampling (a pytest-django test database name too long for PostgreSQL) is logged.
absl::StatusOr<std::unique_ptr<HandoffMonitor>> StartHandoffCheck(const v1::DatabaseSpec& db,
                                                                  const pg::Connection& admin,
                                                                  const std::string& database,
                                                                  const std::string& agent_name,
                                                                  const std::string& application_name,
                                                                  const std::string& log_path);

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_HANDOFF_H_

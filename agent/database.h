// The seam between an agent and its databases. The agent prepares once, then asks for a database before it runs a
// lease and gives it back afterwards; how the database came to be (a clone of a template built once per migration
// hash, handed from a pool of ready clones) is the provisioner's business.
#ifndef TESTSHARD_AGENT_DATABASE_H_
#define TESTSHARD_AGENT_DATABASE_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/postgres/connection.h"

namespace testshard::agent {

struct Database {
  std::string name;
  pg::Connection test;  // as the tests' role: what the env vars carry
};

// What Prepare found or did, for the agent's log and the run's output.
struct PrepareReport {
  std::string template_name;
  bool built = false;         // this call ran the set-up commands (else the template existed)
  absl::Duration build_time;  // when built
  std::string strategy;       // CREATE DATABASE strategy clones use: "FILE_COPY" or "WAL_LOG"
  // Things the user must hear before tests run: the tests' role is a superuser, has BYPASSRLS, or owns a table
  // whose row level security is not forced (so its policies do not apply to the tests). Each is one line.
  std::vector<std::string> warnings;
};

// Thread-safe after Prepare: Acquire, Release and CheckHealth may be called from any thread.
class DatabaseProvisioner {
 public:
  virtual ~DatabaseProvisioner() = default;
  // Builds or finds the template, starts keeping clones ready, checks the tests' role. Called once, before the rest.
  // Errors: Unavailable (server unreachable), PermissionDenied (no CREATEDB), FailedPrecondition (a set-up command
  // failed; the message ends with its output), ResourceExhausted (disk full).
  virtual absl::StatusOr<PrepareReport> Prepare() = 0;
  // A pristine database nobody else uses. `use` (a lease id, "agent", a stage name) goes into its name, so an
  // operator looking at the server sees whose it is.
  virtual absl::StatusOr<Database> Acquire(std::string_view use) = 0;
  // Gives a database back. It is dropped in the background; the call does not wait for that.
  virtual void Release(const Database& db) = 0;
  // OK while the server answers; Unavailable (with the reason) once it has gone.
  virtual absl::Status CheckHealth() = 0;
};

// How a stage's leases share databases (config `reset`, per stage, default "agent").
enum class ResetPolicy {
  kAgent,  // one database for all of the agent's leases
  kStage,  // a fresh database when the agent moves to another stage
  kShard,  // a fresh database for every lease (suites whose modules create and drop their own tables)
};
std::string_view ResetPolicyName(ResetPolicy p);
// "agent" | "stage" | "shard"; InvalidArgument otherwise.
absl::StatusOr<ResetPolicy> ParseResetPolicy(std::string_view name);

// Renders every env template over `c`.
absl::StatusOr<std::map<std::string, std::string>> RenderEnv(const std::map<std::string, std::string>& templates,
                                                             const pg::Connection& c);

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_DATABASE_H_

// Which database each lease runs against, by its stage's reset policy: the agent's own (kept for every lease), one
// per stage (replaced when the agent moves on to another stage), or a fresh one per lease. Keeps agent.cc to two
// calls per lease.
#ifndef TESTSHARD_AGENT_DATABASE_SCOPES_H_
#define TESTSHARD_AGENT_DATABASE_SCOPES_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "agent/database.h"

namespace testshard::agent {

// Called from the agent's control thread only. Does not own the provisioner, which must outlive it.
class DatabaseScopes {
 public:
  explicit DatabaseScopes(DatabaseProvisioner* provisioner) : provisioner_(provisioner) {}
  ~DatabaseScopes() { ReleaseAll(); }
  DatabaseScopes(const DatabaseScopes&) = delete;
  DatabaseScopes& operator=(const DatabaseScopes&) = delete;

  // The database lease `lease_id` of `stage` runs against. A kept database is checked first (the server must
  // still answer), so an error here means the agent's database is broken: report the lease as an infrastructure
  // error and stop taking work.
  absl::StatusOr<Database> ForLease(std::string_view lease_id, std::string_view stage, ResetPolicy reset);
  // The lease is over: a database made for it alone goes back (dropped in the background).
  void Done(std::string_view lease_id);
  // Gives every database back.
  void ReleaseAll();

 private:
  DatabaseProvisioner* const provisioner_;
  std::optional<Database> agent_;
  std::optional<Database> stage_db_;
  std::string stage_;
  std::map<std::string, Database, std::less<>> per_lease_;
};

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_DATABASE_SCOPES_H_

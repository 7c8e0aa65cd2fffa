// Clones of a template on a PostgreSQL server reached as an admin role with CREATEDB (the embedded server's
// superuser, or a server the user names; superuser is not needed). Safe for many agents on many machines against one
// server: the template is built once per hash under an advisory lock (template_builder.h), clones are kept ready
// and used ones dropped in the background (clone_pool.h), dead agents' databases are dropped by a janitor
// (janitor.h), and the tests' role is checked for ways around row level security (rls_check.h).
#ifndef TESTSHARD_AGENT_POSTGRES_PROVISIONER_H_
#define TESTSHARD_AGENT_POSTGRES_PROVISIONER_H_

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "agent/clone_pool.h"
#include "agent/database.h"
#include "agent/template_builder.h"
#include "common/postgres/sql_session.h"
#include "common/process.h"

namespace testshard::agent {

struct PostgresProvisionerOptions {
  pg::Connection admin;  // needs CREATEDB (and CREATEROLE only if the tests' role is missing)
  TemplateRecipe recipe;
  std::string project;  // templates of one project are garbage-collected together
  std::string run_id;   // go into database names
  std::string agent_id;
  int pool_size = 2;                            // clones kept ready after Prepare
  int keep_templates = 3;                       // a project's newest templates kept; older unused ones dropped
  std::optional<CloneStrategy> strategy;        // nullopt: measured
  std::map<std::string, std::string> settings;  // ALTER DATABASE ... SET on every clone (after the template's own)
  std::map<std::string, std::string> grants;    // role -> privileges ("CONNECT, TEMPORARY") on every clone
  absl::Duration janitor_interval = absl::Minutes(1);
};

class PostgresProvisioner final : public DatabaseProvisioner {
 public:
  PostgresProvisioner(PostgresProvisionerOptions options, ProcessRunner* runner);
  // Drops what it still holds (ready clones, queued drops) and ends its presence.
  ~PostgresProvisioner() override;

  absl::StatusOr<PrepareReport> Prepare() override;
  absl::StatusOr<Database> Acquire(std::string_view use) override;
  void Release(const Database& db) override;
  absl::Status CheckHealth() override;

  // The random id in this provisioner's database names and presence lock.
  const std::string& instance() const { return instance_; }
  // Valid after Prepare.
  ClonePool::Stats pool_stats() const;
  struct HandoutStats {
    int64_t from_pool = 0;  // handed out ready
    int64_t cloned = 0;     // the pool was empty: cloned while the caller waited
  };
  HandoutStats handout_stats() const;

 private:
  absl::Status EnsureRoles(pg::SqlSession& s);
  void Maintain(pg::SqlSession& s);

  const PostgresProvisionerOptions options_;
  const std::string instance_;
  TemplateBuilder builder_;  // Name/Ensure from Prepare; CollectGarbage from the pool's worker afterwards
  std::string template_;     // set by Prepare
  std::unique_ptr<ClonePool> pool_;

  mutable absl::Mutex mu_;
  // Holds the presence lock and the template's use lock for the agent's life; also renames and on-demand clones.
  std::unique_ptr<pg::SqlSession> presence_ ABSL_GUARDED_BY(mu_);
  HandoutStats handouts_ ABSL_GUARDED_BY(mu_);
  int64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_POSTGRES_PROVISIONER_H_

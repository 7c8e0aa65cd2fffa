// The seam between an agent and its databases. The agent asks for a database before it runs a shard and gives it
// back afterwards; how the database came to be (a clone of a template built once per migration hash) is the
// provisioner's business.
#ifndef TESTSHARD_AGENT_DATABASE_H_
#define TESTSHARD_AGENT_DATABASE_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/connection.h"
#include "common/process.h"

namespace testshard::agent {

struct Database {
  std::string name;
  pg::Connection test;  // as the tests' role: what the env vars carry
};

// Thread-compatible: one agent thread calls it.
class DatabaseProvisioner {
 public:
  virtual ~DatabaseProvisioner() = default;
  // Builds or finds the template. Called once before Acquire; idempotent.
  virtual absl::Status Prepare() = 0;
  // A fresh database cloned from the template, named `name` (the caller makes names unique per run and agent).
  virtual absl::StatusOr<Database> Acquire(std::string_view name) = 0;
  virtual absl::Status Release(const Database& db) = 0;
};

// What builds a template: the commands, the environment they see and the files whose contents identify it.
struct TemplateRecipe {
  std::vector<std::vector<std::string>> setup;
  std::map<std::string, std::string> env_templates;  // env var -> template over the database (config database.env)
  std::map<std::string, std::string> env;            // the project's extra environment
  std::string workdir;
  std::vector<std::string> inputs;                   // globs relative to workdir
  std::string role;                                  // tests' role; empty = the admin role
  std::string log_dir;                               // where setup commands write their output
};

// Renders every env template over `c`.
absl::StatusOr<std::map<std::string, std::string>> RenderEnv(const std::map<std::string, std::string>& templates,
                                                             const pg::Connection& c);

// Clones of a template on a PostgreSQL server reached as an admin role with CREATEDB (the embedded server's
// superuser, or a server the user names). Safe for many agents on many machines against one server: the template
// is built under an advisory lock, under a temporary name, then renamed and sealed.
class PostgresProvisioner final : public DatabaseProvisioner {
 public:
  PostgresProvisioner(pg::Connection admin, TemplateRecipe recipe, ProcessRunner* runner);
  absl::Status Prepare() override;
  absl::StatusOr<Database> Acquire(std::string_view name) override;
  absl::Status Release(const Database& db) override;

  // The template's name for the recipe as it is now: tpl_ + a hash of the commands, the input files' contents and
  // the server version, so an edited migration gives a new template.
  absl::StatusOr<std::string> TemplateName();

 private:
  absl::Status BuildTemplate(const std::string& tpl);

  pg::Connection admin_;
  TemplateRecipe recipe_;
  ProcessRunner* runner_;
  std::string template_;
};

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_DATABASE_H_

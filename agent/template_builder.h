// Template databases: named by a hash of what determines their contents, built once per hash under an advisory
// lock (so agents on many machines sharing one server build it once), under a temporary name, then renamed and
// sealed (IS_TEMPLATE, ALLOW_CONNECTIONS false) so no session can block a copy. Old templates of a project are
// dropped once enough newer ones exist and no live agent uses them.
//
// What a template records about itself lives in its COMMENT (shared catalog, readable by every role):
//   testshard template v1; project=<p>; hash=<32 hex>; built_ms=<unix ms>; file_copy_ms=<x>; wal_log_ms=<y>
// A failed build leaves <template>__build behind for a post-mortem, commented
//   testshard failed build; at_ms=<unix ms>; <the error>
// so agents that waited for the lock report that failure instead of each running the failing commands again.
#ifndef TESTSHARD_AGENT_TEMPLATE_BUILDER_H_
#define TESTSHARD_AGENT_TEMPLATE_BUILDER_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/postgres/sql_session.h"
#include "common/process.h"

namespace testshard::agent {

// What builds a template: the commands, the environment they see and the files whose contents identify it.
struct TemplateRecipe {
  std::vector<std::vector<std::string>> setup;       // run in order against the new database
  std::map<std::string, std::string> env_templates;  // env var -> template over the database (config database.env)
  std::map<std::string, std::string> env;            // the project's extra environment
  std::string workdir;                               // commands run here; input globs are relative to it
  std::vector<std::string> inputs;                   // globs ("*" also crosses "/"); their files' bytes are hashed
  std::string role;                                  // the tests' role; empty = the admin role
  std::string log_dir;                               // where set-up commands write their output
  absl::Duration setup_timeout = absl::Minutes(30);  // per command
};

enum class CloneStrategy { kFileCopy, kWalLog };
std::string_view CloneStrategyName(CloneStrategy s);  // "FILE_COPY" / "WAL_LOG", as CREATE DATABASE spells them

struct TemplateInfo {
  std::string name;
  std::string project;
  std::string hash;
  int64_t built_ms = 0;
  // Median clone times measured on this template right after it was built; 0 = not measured.
  double file_copy_ms = 0;
  double wal_log_ms = 0;
};
std::string FormatTemplateComment(const TemplateInfo& info);
std::optional<TemplateInfo> ParseTemplateComment(std::string_view name, std::string_view comment);

// Files under `workdir` matching any glob, relative and sorted. Globs that matched nothing are appended to
// `unmatched` (may be null): a misspelt glob would otherwise silently leave edits out of the hash.
std::vector<std::string> MatchInputs(const std::string& workdir, const std::vector<std::string>& globs,
                                     std::vector<std::string>* unmatched = nullptr);

// The SQL for the advisory-lock key agents hold (shared) while they clone from `template_name`; garbage collection
// needs it exclusively.
std::string TemplateUseLockKey(std::string_view template_name);

// Not thread-safe; each call opens what sessions it needs.
class TemplateBuilder {
 public:
  // `scratch_name` names the short-lived databases a build makes (strategy calibration clones), so they carry the
  // agent's identity and the janitor drops them if the builder dies mid-way.
  TemplateBuilder(pg::Connection admin, TemplateRecipe recipe, std::string project, ProcessRunner* runner,
                  std::function<std::string(std::string_view use)> scratch_name);

  // tpl_<16 hex>: a hash over the recipe (commands, env templates, project env, role, the input files' paths and
  // bytes) and the server (version, template0's encoding and locale). Reads the server over `session`.
  absl::StatusOr<std::string> Name(pg::SqlSession& session, std::vector<std::string>* unmatched_globs = nullptr);

  // Finds `name` built and sealed, or builds it (running the set-up commands) under the build lock. `*built` says
  // which. Errors: FailedPrecondition when a set-up command fails (its output tail in the message), and the
  // SqlSession codes.
  absl::StatusOr<TemplateInfo> Ensure(const std::string& name, bool* built);

  // Drops this project's templates beyond the `keep` newest, skipping any a live agent holds the use lock on, and
  // `current`. Returns how many it dropped.
  absl::StatusOr<int> CollectGarbage(pg::SqlSession& session, int keep, const std::string& current);

 private:
  absl::Status RunSetup(const std::string& build_db);
  absl::StatusOr<TemplateInfo> Build(pg::SqlSession& s, const std::string& name, const std::string& hash);

  pg::Connection admin_;
  TemplateRecipe recipe_;
  std::string project_;
  ProcessRunner* runner_;
  std::function<std::string(std::string_view)> scratch_name_;
  std::string hash_;  // of the last Name()
};

// Reads a template's record; NotFound when there is no sealed template of that name.
absl::StatusOr<TemplateInfo> ReadTemplate(pg::SqlSession& session, const std::string& name);

// Times CREATE DATABASE with each strategy from `template_name` (`rounds` clones each, alternating, named by
// `scratch_name`, dropped afterwards) and returns the medians in ms: {file_copy, wal_log}.
absl::StatusOr<std::pair<double, double>> CalibrateStrategies(
    pg::SqlSession& session, const std::string& template_name, int rounds,
    const std::function<std::string(std::string_view use)>& scratch_name);

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_TEMPLATE_BUILDER_H_

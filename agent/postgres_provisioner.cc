#include "agent/postgres_provisioner.h"

#include "absl/strings/str_cat.h"
#include "agent/janitor.h"
#include "agent/rls_check.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace testshard::agent {
namespace {

using pg::QuoteIdent;
using pg::QuoteLiteral;

}  // namespace

PostgresProvisioner::PostgresProvisioner(PostgresProvisionerOptions options, ProcessRunner* runner)
    : options_(std::move(options)),
      instance_(NewInstanceId()),
      builder_(options_.admin, options_.recipe, options_.project, runner, [this](std::string_view use) {
        return MakeDatabaseName({instance_, options_.run_id, options_.agent_id, std::string(use)});
      }) {}

PostgresProvisioner::~PostgresProvisioner() {
  if (pool_) pool_->Shutdown();
  absl::MutexLock l(&mu_);
  presence_.reset();  // ends the presence: from now on a janitor may drop whatever is left
}

absl::Status PostgresProvisioner::EnsureRoles(pg::SqlSession& s) {
  const std::string& role = options_.recipe.role;
  if (role.empty()) return absl::OkStatus();
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> found,
                      s.Query(absl::StrCat("SELECT 1 FROM pg_roles WHERE rolname = ", QuoteLiteral(role))));
  if (!found.empty()) return absl::OkStatus();
  // Roles are cluster-wide, so they cannot come with the template. The tests' role must not bypass RLS.
  absl::Status st =
      s.Exec(absl::StrCat("CREATE ROLE ", QuoteIdent(role), " LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"));
  if (st.ok()) return st;
  // Agents starting together race here, and the loser may see a unique violation in pg_authid rather than
  // "already exists": whatever the error, a role that now exists is what was wanted.
  auto now = s.Query(absl::StrCat("SELECT 1 FROM pg_roles WHERE rolname = ", QuoteLiteral(role)));
  if (now.ok() && !now->empty()) return absl::OkStatus();
  if (st.code() == absl::StatusCode::kPermissionDenied) {
    return absl::FailedPreconditionError(
        absl::StrCat("the tests' role \"", role, "\" does not exist, and ", s.where().user,
                     " may not create roles; create it once: CREATE ROLE ", QuoteIdent(role), " LOGIN"));
  }
  return st;
}

absl::StatusOr<PrepareReport> PostgresProvisioner::Prepare() {
  if (pool_) return absl::FailedPreconditionError("Prepare called twice");
  PrepareReport report;
  // Presence first: no database of ours exists before a janitor can tell we are alive.
  TS_ASSIGN_OR_RETURN(auto presence, pg::SqlSession::Open(options_.admin, PresenceApplicationName(instance_)));
  TS_RETURN_IF_ERROR(ClaimPresence(*presence, instance_));

  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> me,
                      presence->Query("SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"));
  if (me.empty() || (me[0][0] != "t" && me[0][1] != "t")) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the role ", options_.admin.user, " may not create databases, and testshard clones one per agent: ",
        "ALTER ROLE ", QuoteIdent(options_.admin.user), " CREATEDB (superuser is not needed)"));
  }
  TS_RETURN_IF_ERROR(EnsureRoles(*presence));

  std::vector<std::string> unmatched;
  TS_ASSIGN_OR_RETURN(template_, builder_.Name(*presence, &unmatched));
  if (options_.recipe.inputs.empty() && !options_.recipe.setup.empty()) {
    report.warnings.push_back(
        "database.template_inputs is empty: the template is rebuilt only when the set-up commands themselves change, "
        "so an edited migration would reuse a stale template on a shared server; list the migration and seed files");
  }
  for (const std::string& g : unmatched) {
    report.warnings.push_back(absl::StrCat("database.template_inputs: \"", g, "\" matches no file under ",
                                           options_.recipe.workdir,
                                           ", so editing such a file would not rebuild the template"));
  }
  // Held (shared) for our whole life, so garbage collection elsewhere never drops the template we clone from.
  TS_RETURN_IF_ERROR(
      presence->Exec(absl::StrCat("SELECT pg_advisory_lock_shared(", TemplateUseLockKey(template_), ")")));
  absl::Time t0 = absl::Now();
  TS_ASSIGN_OR_RETURN(TemplateInfo info, builder_.Ensure(template_, &report.built));
  report.template_name = template_;
  if (report.built) report.build_time = absl::Now() - t0;

  TS_ASSIGN_OR_RETURN(CloneFixups fixups, ReadTemplateFixups(*presence, template_));
  if (!options_.recipe.role.empty()) fixups.grants.emplace_back(options_.recipe.role, "CONNECT, TEMPORARY");
  for (const auto& [role, privileges] : options_.grants) fixups.grants.emplace_back(role, privileges);
  for (const auto& [name, value] : options_.settings) fixups.settings.emplace_back(name, value);

  ClonePoolOptions po;
  po.admin = options_.admin;
  po.template_name = template_;
  po.name = [this](int64_t seq) {
    return MakeDatabaseName({instance_, options_.run_id, options_.agent_id, absl::StrCat("p", seq)});
  };
  po.fixups = std::move(fixups);
  po.target = options_.pool_size;
  po.forced = options_.strategy;
  po.file_copy_ms = info.file_copy_ms;
  po.wal_log_ms = info.wal_log_ms;
  po.maintenance = [this](pg::SqlSession& s) { Maintain(s); };
  po.maintenance_interval = options_.janitor_interval;
  pool_ = std::make_unique<ClonePool>(std::move(po));

  // The first clone, made now: it proves the grants and settings apply, and it is where the tests' role is checked.
  TS_ASSIGN_OR_RETURN(std::string first, pool_->CloneNow(*presence));
  pg::Connection as_tests = options_.recipe.role.empty() ? options_.admin.WithDb(first)
                                                         : options_.admin.WithUser(options_.recipe.role).WithDb(first);
  {
    auto check = pg::SqlSession::Open(as_tests, "testshard rls check");
    if (!check.ok()) {
      pool_->Drop(first);
      return Annotate(check.status(), "the tests' role cannot use a clone of the template");
    }
    TS_ASSIGN_OR_RETURN(std::vector<std::string> rls, CheckRowLevelSecurity(**check));
    report.warnings.insert(report.warnings.end(), rls.begin(), rls.end());
    int pid = (*check)->backend_pid();
    check->reset();
    // A backend leaves a moment after its client; a rename at hand-out would wait for it.
    for (int i = 0; i < 200; ++i) {
      auto left = presence->Query(absl::StrCat("SELECT 1 FROM pg_stat_activity WHERE pid = ", pid));
      if (!left.ok() || left->empty()) break;
      absl::SleepFor(absl::Milliseconds(2));
    }
  }
  pool_->Adopt(std::move(first));
  report.strategy = std::string(CloneStrategyName(pool_->stats().strategy));
  {
    absl::MutexLock l(&mu_);
    presence_ = std::move(presence);
  }
  pool_->Start();
  return report;
}

void PostgresProvisioner::Maintain(pg::SqlSession& s) {
  auto swept = SweepDeadAgents(s, instance_);
  if (!swept.ok()) {
    spdlog::warn("janitor: {}", ToStd(swept.status().message()));
  } else if (swept->dropped) {
    spdlog::info("janitor: dropped {} database(s) left by dead agents", swept->dropped);
  }
  auto gc = builder_.CollectGarbage(s, options_.keep_templates, template_);
  if (!gc.ok()) spdlog::warn("template clean-up: {}", ToStd(gc.status().message()));
}

absl::StatusOr<Database> PostgresProvisioner::Acquire(std::string_view use) {
  absl::MutexLock l(&mu_);
  if (!presence_ || !pool_) return absl::FailedPreconditionError("Acquire before Prepare");
  std::optional<std::string> name = pool_->TryTake();
  if (name) {
    ++handouts_.from_pool;
  } else {
    auto made = pool_->CloneNow(*presence_);
    if (!made.ok()) return made.status();
    name = std::move(*made);
    ++handouts_.cloned;
  }
  // The name says whose it is and what for; a rename is a catalog update, well under a millisecond.
  std::string final_name = MakeDatabaseName({instance_, options_.run_id, options_.agent_id, std::string(use)});
  absl::Status st =
      presence_->Exec(absl::StrCat("ALTER DATABASE ", QuoteIdent(*name), " RENAME TO ", QuoteIdent(final_name)));
  if (st.code() == absl::StatusCode::kAlreadyExists) {
    final_name =
        MakeDatabaseName({instance_, options_.run_id, options_.agent_id, absl::StrCat(ToAbsl(use), "r", ++seq_)});
    st = presence_->Exec(absl::StrCat("ALTER DATABASE ", QuoteIdent(*name), " RENAME TO ", QuoteIdent(final_name)));
  }
  if (!st.ok()) {
    pool_->Drop(*name);
    return Annotate(st, "handing out a database");
  }
  Database db;
  db.name = final_name;
  db.test = options_.recipe.role.empty() ? options_.admin.WithDb(final_name)
                                         : options_.admin.WithUser(options_.recipe.role).WithDb(final_name);
  return db;
}

void PostgresProvisioner::Release(const Database& db) {
  if (pool_) pool_->Drop(db.name);
}

absl::Status PostgresProvisioner::CheckHealth() {
  absl::MutexLock l(&mu_);
  if (!presence_) return absl::FailedPreconditionError("the database provisioner was not prepared");
  TS_RETURN_IF_ERROR(Annotate(pg::CheckLocalServerProcess(options_.admin), "the database server"));
  return Annotate(presence_->Ping(), "the database server");
}

ClonePool::Stats PostgresProvisioner::pool_stats() const { return pool_ ? pool_->stats() : ClonePool::Stats{}; }

PostgresProvisioner::HandoutStats PostgresProvisioner::handout_stats() const {
  absl::MutexLock l(&mu_);
  return handouts_;
}

}  // namespace testshard::agent

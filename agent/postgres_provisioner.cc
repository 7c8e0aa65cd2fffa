#include <fnmatch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/database.h"
#include "common/hash.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;
using pg::QuoteIdent;

// Bump when the way templates are built changes, so old templates are not reused.
constexpr char kRecipeVersion[] = "testshard-template-1";

// Runs `fn` with a fresh admin connection, turning libpqxx exceptions into a Status.
template <typename Fn>
absl::Status WithAdmin(const pg::Connection& admin, std::string_view what, Fn fn) {
  try {
    pqxx::connection c(admin.Conninfo());
    fn(c);
    return absl::OkStatus();
  } catch (const pqxx::broken_connection& e) {
    return absl::UnavailableError(absl::StrCat(ToAbsl(what), ": cannot reach PostgreSQL: ", e.what()));
  } catch (const pqxx::insufficient_privilege& e) {
    return absl::PermissionDeniedError(absl::StrCat(ToAbsl(what), ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(ToAbsl(what), ": ", e.what()));
  }
}

// Files under workdir matching any glob ("*" matches across directories), sorted, so the hash is stable.
std::vector<std::string> MatchInputs(const std::string& workdir, const std::vector<std::string>& globs) {
  std::vector<std::string> out;
  if (globs.empty()) return out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(workdir, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::string name = it->path().filename().string();
    if (it->is_directory() && (name == "__pycache__" || name == ".git" || name == ".testshard")) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file()) continue;
    std::string rel = fs::relative(it->path(), workdir).string();
    for (const std::string& g : globs) {
      if (fnmatch(g.c_str(), rel.c_str(), 0) == 0) {
        out.push_back(rel);
        break;
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool IsBeingAccessed(const pqxx::sql_error& e) { return e.sqlstate() == "55006"; }  // object_in_use

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> RenderEnv(const std::map<std::string, std::string>& templates,
                                                             const pg::Connection& c) {
  std::map<std::string, std::string> env;
  for (const auto& [name, tmpl] : templates) {
    auto v = pg::RenderTemplate(tmpl, c);
    if (!v.ok()) return Annotate(v.status(), absl::StrCat("database.env.", name));
    env[name] = *v;
  }
  return env;
}

PostgresProvisioner::PostgresProvisioner(pg::Connection admin, TemplateRecipe recipe, ProcessRunner* runner)
    : admin_(std::move(admin)), recipe_(std::move(recipe)), runner_(runner) {}

absl::StatusOr<std::string> PostgresProvisioner::TemplateName() {
  StableHasher h;
  h.Add(kRecipeVersion).Add(recipe_.role);
  for (const auto& argv : recipe_.setup) h.Add(absl::StrJoin(argv, std::string(1, '\0')));
  for (const auto& [k, v] : recipe_.env_templates) h.Add(k).Add(v);
  for (const std::string& rel : MatchInputs(recipe_.workdir, recipe_.inputs)) {
    std::ifstream in(fs::path(recipe_.workdir) / rel, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    h.Add(rel).Add(ss.str());
  }
  std::string server;
  TS_RETURN_IF_ERROR(WithAdmin(admin_, "reading the server version", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    pqxx::row r = tx.exec1(
        "SELECT current_setting('server_version_num'), d.encoding::text, d.datcollate, d.datctype "
        "FROM pg_database d WHERE d.datname = 'template0'");
    for (const auto& f : r) server += std::string(f.c_str()) + "/";
  }));
  h.Add(server);
  return "tpl_" + h.Hex().substr(0, 16);
}

absl::Status PostgresProvisioner::Prepare() {
  if (!template_.empty()) return absl::OkStatus();
  TS_ASSIGN_OR_RETURN(std::string tpl, TemplateName());
  TS_RETURN_IF_ERROR(BuildTemplate(tpl));
  template_ = tpl;
  return absl::OkStatus();
}

absl::Status PostgresProvisioner::BuildTemplate(const std::string& tpl) {
  std::string build = tpl + "__build";
  absl::Status result;
  // The advisory lock is held by this session for the whole build; agents racing for the same template wait here
  // and then find it built.
  absl::Status s = WithAdmin(admin_, "building the template database", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec("SELECT pg_advisory_lock(hashtextextended(" + tx.quote("testshard:" + tpl) + ", 0))");
    if (!recipe_.role.empty()) {
      // Roles are cluster-wide, so they cannot come with the template. The tests' role must not bypass RLS.
      tx.exec0(absl::StrCat("DO $$BEGIN CREATE ROLE ", QuoteIdent(recipe_.role),
                            " LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; "
                            "EXCEPTION WHEN duplicate_object THEN NULL; END$$"));
    }
    pqxx::result done = tx.exec("SELECT 1 FROM pg_database WHERE datname = " + tx.quote(tpl) + " AND datistemplate");
    if (!done.empty()) {
      tx.exec("SELECT pg_advisory_unlock_all()");
      return;
    }
    // A partial build left by a crashed agent.
    tx.exec0("DROP DATABASE IF EXISTS " + QuoteIdent(build) + " WITH (FORCE)");
    tx.exec0("CREATE DATABASE " + QuoteIdent(build) + " TEMPLATE template0");
    if (!recipe_.role.empty()) {
      tx.exec0("GRANT CONNECT, TEMPORARY ON DATABASE " + QuoteIdent(build) + " TO " + QuoteIdent(recipe_.role));
    }
    absl::Time began = absl::Now();
    auto env = RenderEnv(recipe_.env_templates, admin_.WithDb(build));
    if (!env.ok()) {
      result = env.status();
    } else {
      for (size_t i = 0; i < recipe_.setup.size() && result.ok(); ++i) {
        ProcessSpec spec;
        spec.argv = recipe_.setup[i];
        spec.cwd = recipe_.workdir;
        spec.env = recipe_.env;
        for (const auto& [k, v] : *env) spec.env[k] = v;
        spec.stdout_path = spec.stderr_path = absl::StrCat(recipe_.log_dir, "/setup-", i, ".log");
        spec.timeout = absl::Minutes(30);
        auto r = runner_->Run(spec, nullptr);
        std::string cmd = absl::StrJoin(spec.argv, " ");
        if (!r.ok()) {
          result = Annotate(r.status(), "database set-up command `" + cmd + "`");
        } else if (!r->ok()) {
          result = absl::FailedPreconditionError(absl::StrCat("database set-up command `", cmd, "` failed (",
                                                              r->Describe(), "); its output ends:\n",
                                                              ReadTail(spec.stdout_path, 8192)));
        }
      }
    }
    if (!result.ok()) {
      // Kept for a post-mortem under its __build name; the next build drops it.
      tx.exec("SELECT pg_advisory_unlock_all()");
      return;
    }
    tx.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = " + tx.quote(build) +
             " AND pid <> pg_backend_pid()");
    tx.exec0("ALTER DATABASE " + QuoteIdent(build) + " RENAME TO " + QuoteIdent(tpl));
    // Sealed: no session can connect to it, so no stray session can make a clone fail.
    tx.exec0("ALTER DATABASE " + QuoteIdent(tpl) + " WITH IS_TEMPLATE true ALLOW_CONNECTIONS false");
    tx.exec("SELECT pg_advisory_unlock_all()");
    spdlog::info("built template database {} in {}", tpl, absl::FormatDuration(absl::Now() - began));
  });
  TS_RETURN_IF_ERROR(s);
  return result;
}

absl::StatusOr<Database> PostgresProvisioner::Acquire(std::string_view name) {
  if (template_.empty()) return absl::FailedPreconditionError("Acquire before Prepare");
  Database db;
  db.name = std::string(name);
  db.test = recipe_.role.empty() ? admin_.WithDb(name) : admin_.WithUser(recipe_.role).WithDb(name);
  absl::Duration backoff = absl::Milliseconds(50);
  for (int attempt = 0;; ++attempt) {
    bool in_use = false;
    absl::Status s = WithAdmin(admin_, absl::StrCat("creating database ", ToAbsl(name)), [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      try {
        tx.exec0("DROP DATABASE IF EXISTS " + QuoteIdent(name) + " WITH (FORCE)");
        tx.exec0("CREATE DATABASE " + QuoteIdent(name) + " TEMPLATE " + QuoteIdent(template_));
      } catch (const pqxx::sql_error& e) {
        if (!IsBeingAccessed(e)) throw;
        in_use = true;
        return;
      }
      // Database-level grants are not copied by a clone.
      if (!recipe_.role.empty()) {
        tx.exec0("GRANT CONNECT, TEMPORARY ON DATABASE " + QuoteIdent(name) + " TO " + QuoteIdent(recipe_.role));
      }
    });
    TS_RETURN_IF_ERROR(s);
    if (!in_use) return db;
    if (attempt >= 8) {
      return absl::UnavailableError(absl::StrCat("template ", template_, " stays in use; cannot clone it"));
    }
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(backoff));
    backoff = std::min(backoff * 2, absl::Seconds(3));
  }
}

absl::Status PostgresProvisioner::Release(const Database& db) {
  return WithAdmin(admin_, absl::StrCat("dropping database ", db.name), [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec0("DROP DATABASE IF EXISTS " + QuoteIdent(db.name) + " WITH (FORCE)");
  });
}

}  // namespace testshard::agent

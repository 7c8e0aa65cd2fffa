#include "agent/template_builder.h"

#include <fnmatch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/database.h"
#include "common/hash.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;
using pg::QuoteIdent;
using pg::QuoteLiteral;

// Bump when the way templates are built changes, so templates built the old way are not reused.
constexpr char kRecipeVersion[] = "testshard-template-3";  // 3: no VACUUM (templates of 2 plan badly)
constexpr char kCommentPrefix[] = "testshard template v1";
constexpr char kFailedPrefix[] = "testshard failed build";

std::string BuildLockKey(std::string_view name) {
  return absl::StrCat("hashtextextended(", QuoteLiteral(absl::StrCat("testshard-build:", ToAbsl(name))), ", 0)");
}

std::string BuildName(const std::string& name) { return name + "__build"; }

absl::StatusOr<int64_t> ServerNowMs(pg::SqlSession& s) {
  TS_ASSIGN_OR_RETURN(std::string v, s.QueryValue("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"));
  int64_t ms = 0;
  if (!absl::SimpleAtoi(v, &ms)) return absl::InternalError("bad clock_timestamp from the server: " + v);
  return ms;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

std::string_view CloneStrategyName(CloneStrategy s) { return s == CloneStrategy::kFileCopy ? "FILE_COPY" : "WAL_LOG"; }

std::string FormatTemplateComment(const TemplateInfo& i) {
  return absl::StrCat(kCommentPrefix, "; project=", i.project, "; hash=", i.hash, "; built_ms=", i.built_ms,
                      "; file_copy_ms=", i.file_copy_ms, "; wal_log_ms=", i.wal_log_ms);
}

std::optional<TemplateInfo> ParseTemplateComment(std::string_view name, std::string_view comment) {
  if (comment.rfind(kCommentPrefix, 0) != 0) return std::nullopt;
  TemplateInfo info;
  info.name = std::string(name);
  for (absl::string_view field : absl::StrSplit(ToAbsl(comment), "; ")) {
    std::pair<std::string, std::string> kv = absl::StrSplit(field, absl::MaxSplits('=', 1));
    if (kv.first == "project") info.project = kv.second;
    if (kv.first == "hash") info.hash = kv.second;
    if (kv.first == "built_ms") (void)absl::SimpleAtoi(kv.second, &info.built_ms);
    if (kv.first == "file_copy_ms") (void)absl::SimpleAtod(kv.second, &info.file_copy_ms);
    if (kv.first == "wal_log_ms") (void)absl::SimpleAtod(kv.second, &info.wal_log_ms);
  }
  return info;
}

std::vector<std::string> MatchInputs(const std::string& workdir, const std::vector<std::string>& globs,
                                     std::vector<std::string>* unmatched) {
  std::vector<std::string> out;
  if (globs.empty()) return out;
  std::vector<bool> hit(globs.size(), false);
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
    bool matched = false;
    for (size_t g = 0; g < globs.size(); ++g) {
      if (fnmatch(globs[g].c_str(), rel.c_str(), 0) == 0) {
        hit[g] = true;
        matched = true;
      }
    }
    if (matched) out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  if (unmatched) {
    for (size_t g = 0; g < globs.size(); ++g) {
      if (!hit[g]) unmatched->push_back(globs[g]);
    }
  }
  return out;
}

std::string TemplateUseLockKey(std::string_view name) {
  return absl::StrCat("hashtextextended(", QuoteLiteral(absl::StrCat("testshard-use:", ToAbsl(name))), ", 0)");
}

absl::StatusOr<TemplateInfo> ReadTemplate(pg::SqlSession& s, const std::string& name) {
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> rows,
                      s.Query(absl::StrCat("SELECT COALESCE(shobj_description(oid, 'pg_database'), '') "
                                           "FROM pg_database WHERE datistemplate AND NOT datallowconn AND datname = ",
                                           QuoteLiteral(name))));
  if (rows.empty()) return absl::NotFoundError(absl::StrCat("no template database ", name));
  std::optional<TemplateInfo> info = ParseTemplateComment(name, rows[0][0]);
  if (!info) {
    info.emplace();  // sealed, but built before templates recorded themselves
    info->name = name;
  }
  return *info;
}

absl::StatusOr<std::pair<double, double>> CalibrateStrategies(
    pg::SqlSession& s, const std::string& tpl, int rounds,
    const std::function<std::string(std::string_view use)>& scratch_name) {
  std::vector<double> times[2];
  for (int r = 0; r < rounds; ++r) {
    // Alternate which goes first, so a drift in background load does not favour one.
    for (int k = 0; k < 2; ++k) {
      CloneStrategy strategy = ((r + k) % 2 == 0) ? CloneStrategy::kFileCopy : CloneStrategy::kWalLog;
      std::string db = scratch_name(absl::StrCat("cal", r, k));
      TS_RETURN_IF_ERROR(s.Exec(absl::StrCat("DROP DATABASE IF EXISTS ", QuoteIdent(db))));
      absl::Time t0 = absl::Now();
      TS_RETURN_IF_ERROR(s.Exec(absl::StrCat("CREATE DATABASE ", QuoteIdent(db), " TEMPLATE ", QuoteIdent(tpl),
                                             " STRATEGY ", ToAbsl(CloneStrategyName(strategy)))));
      times[strategy == CloneStrategy::kFileCopy ? 0 : 1].push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
      TS_RETURN_IF_ERROR(s.Exec(absl::StrCat("DROP DATABASE ", QuoteIdent(db), " WITH (FORCE)")));
    }
  }
  return std::make_pair(Median(times[0]), Median(times[1]));
}

TemplateBuilder::TemplateBuilder(pg::Connection admin, TemplateRecipe recipe, std::string project,
                                 ProcessRunner* runner, std::function<std::string(std::string_view)> scratch_name)
    : admin_(std::move(admin)),
      recipe_(std::move(recipe)),
      project_(std::move(project)),
      runner_(runner),
      scratch_name_(std::move(scratch_name)) {}

absl::StatusOr<std::string> TemplateBuilder::Name(pg::SqlSession& s, std::vector<std::string>* unmatched) {
  StableHasher h;
  h.Add(kRecipeVersion).Add(recipe_.role);
  for (const auto& argv : recipe_.setup) h.Add(absl::StrJoin(argv, std::string(1, '\0')));
  h.Add("env-templates");
  for (const auto& [k, v] : recipe_.env_templates) h.Add(k).Add(v);
  h.Add("env");
  for (const auto& [k, v] : recipe_.env) h.Add(k).Add(v);
  h.Add("inputs");
  for (const std::string& rel : MatchInputs(recipe_.workdir, recipe_.inputs, unmatched)) {
    std::ifstream in(fs::path(recipe_.workdir) / rel, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    h.Add(rel).Add(ss.str());
  }
  // A template from another major version or locale would not be what the migrations produce there.
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> server,
                      s.Query("SELECT current_setting('server_version_num'), d.encoding::text, d.datcollate, "
                              "d.datctype FROM pg_database d WHERE d.datname = 'template0'"));
  h.Add("server");
  for (const pg::Row& r : server) {
    for (const std::string& f : r) h.Add(f);
  }
  hash_ = h.Hex();
  return "tpl_" + hash_.substr(0, 16);
}

absl::Status TemplateBuilder::RunSetup(const std::string& build_db) {
  auto env = RenderEnv(recipe_.env_templates, admin_.WithDb(build_db));
  if (!env.ok()) return env.status();
  std::error_code ec;
  fs::create_directories(recipe_.log_dir, ec);
  for (size_t i = 0; i < recipe_.setup.size(); ++i) {
    ProcessSpec spec;
    spec.argv = recipe_.setup[i];
    spec.cwd = recipe_.workdir;
    spec.env = recipe_.env;
    for (const auto& [k, v] : *env) spec.env[k] = v;
    spec.stdout_path = spec.stderr_path = absl::StrCat(recipe_.log_dir, "/setup-", i, ".log");
    spec.timeout = recipe_.setup_timeout;
    std::string cmd = absl::StrJoin(spec.argv, " ");
    absl::Time t0 = absl::Now();
    auto r = runner_->Run(spec, nullptr);
    if (!r.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("database set-up command `", cmd, "` could not start: ", r.status().message()));
    }
    if (!r->ok()) {
      return absl::FailedPreconditionError(absl::StrCat("database set-up command `", cmd, "` failed (", r->Describe(),
                                                        "); its output (", spec.stdout_path, ") ends:\n",
                                                        ReadTail(spec.stdout_path, 8192)));
    }
    spdlog::info("set-up `{}` took {}", cmd,
                 absl::FormatDuration(absl::Trunc(absl::Now() - t0, absl::Milliseconds(1))));
  }
  return absl::OkStatus();
}

absl::StatusOr<TemplateInfo> TemplateBuilder::Ensure(const std::string& name, bool* built) {
  *built = false;
  TS_ASSIGN_OR_RETURN(auto s, pg::SqlSession::Open(admin_, "testshard template build"));
  TS_ASSIGN_OR_RETURN(int64_t waited_from, ServerNowMs(*s));
  // Held for the whole build: agents racing for the same template wait here, then find it built. The session
  // closing (a crashed builder) releases it.
  TS_RETURN_IF_ERROR(s->Exec(absl::StrCat("SELECT pg_advisory_lock(", BuildLockKey(name), ")")));
  auto info = ReadTemplate(*s, name);
  if (info.ok() || info.status().code() != absl::StatusCode::kNotFound) {
    (void)s->Exec("SELECT pg_advisory_unlock_all()");
    return info;
  }
  // Did the agent we waited for just fail to build it? Then say so rather than fail the same way again.
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> failed,
                      s->Query(absl::StrCat("SELECT COALESCE(shobj_description(oid, 'pg_database'), '') FROM "
                                            "pg_database WHERE datname = ",
                                            QuoteLiteral(BuildName(name)))));
  if (!failed.empty() && failed[0][0].rfind(kFailedPrefix, 0) == 0) {
    std::vector<std::string> parts = absl::StrSplit(failed[0][0], absl::MaxSplits("; ", 2));
    int64_t at = 0;
    if (parts.size() == 3 && absl::SimpleAtoi(absl::StripPrefix(parts[1], "at_ms="), &at) && at >= waited_from) {
      (void)s->Exec("SELECT pg_advisory_unlock_all()");
      return absl::FailedPreconditionError(
          absl::StrCat("building template ", name, " failed on another agent just now: ", parts[2]));
    }
  }
  auto result = Build(*s, name, hash_);
  (void)s->Exec("SELECT pg_advisory_unlock_all()");
  if (result.ok()) *built = true;
  return result;
}

absl::StatusOr<TemplateInfo> TemplateBuilder::Build(pg::SqlSession& s, const std::string& name,
                                                    const std::string& hash) {
  const std::string build = BuildName(name);
  absl::Time began = absl::Now();
  // Leftovers: a partial build from a crashed agent, or an unsealed database of this name.
  TS_RETURN_IF_ERROR(s.Exec(absl::StrCat("DROP DATABASE IF EXISTS ", QuoteIdent(build), " WITH (FORCE)")));
  auto stale = s.Query(absl::StrCat("SELECT 1 FROM pg_database WHERE datname = ", QuoteLiteral(name)));
  if (stale.ok() && !stale->empty()) {
    TS_RETURN_IF_ERROR(s.Exec(absl::StrCat("ALTER DATABASE ", QuoteIdent(name), " IS_TEMPLATE false")));
    TS_RETURN_IF_ERROR(s.Exec(absl::StrCat("DROP DATABASE ", QuoteIdent(name), " WITH (FORCE)")));
  }
  TS_RETURN_IF_ERROR(s.Exec(absl::StrCat("CREATE DATABASE ", QuoteIdent(build), " TEMPLATE template0")));
  if (!recipe_.role.empty()) {
    TS_RETURN_IF_ERROR(s.Exec(
        absl::StrCat("GRANT CONNECT, TEMPORARY ON DATABASE ", QuoteIdent(build), " TO ", QuoteIdent(recipe_.role))));
  }
  absl::Status setup = RunSetup(build);
  if (!setup.ok()) {
    // Kept under its __build name for a post-mortem (the next build drops it); the comment tells agents waiting for
    // the lock what happened.
    auto now = ServerNowMs(s);
    std::string msg(setup.message().substr(0, 16000));
    (void)s.Exec(absl::StrCat("COMMENT ON DATABASE ", QuoteIdent(build), " IS ",
                              QuoteLiteral(absl::StrCat(kFailedPrefix, "; at_ms=", now.ok() ? *now : 0, "; ", msg))));
    return setup;
  }
  // No VACUUM or ANALYZE here, although both look like free wins for every clone: on the empty tables of a freshly
  // migrated database either one records "0 rows" in pg_class, and the planner then trusts that while a test fills
  // the table inside its own transaction, which autovacuum never sees. On the example suite that turned a report
  // query's hash join into a nested loop over 80,000 x 200 rows (2.7 s -> 6-10 s for one test); the user's serial
  // run and CI, on a database they just migrated, plan with "never analyzed" estimates. Clones keep those.
  // Set-up commands may leave sessions behind (a pool that has not closed yet); none may stay for the rename.
  TS_RETURN_IF_ERROR(s.Exec(absl::StrCat("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ",
                                         QuoteLiteral(build), " AND pid <> pg_backend_pid()")));
  TS_RETURN_IF_ERROR(s.Exec(absl::StrCat("ALTER DATABASE ", QuoteIdent(build), " RENAME TO ", QuoteIdent(name))));
  // Sealed: no session can connect to it, so no stray session can make a clone fail.
  TS_RETURN_IF_ERROR(
      s.Exec(absl::StrCat("ALTER DATABASE ", QuoteIdent(name), " WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")));
  TemplateInfo info;
  info.name = name;
  info.project = project_;
  info.hash = hash;
  TS_ASSIGN_OR_RETURN(info.built_ms, ServerNowMs(s));
  // Which CREATE DATABASE strategy is faster depends on the storage, the durability settings and the template's
  // size (reference/postgres-isolation.md 6.2), so it is measured here, on this template, once.
  auto cal = CalibrateStrategies(s, name, 3, scratch_name_);
  if (cal.ok()) {
    info.file_copy_ms = cal->first;
    info.wal_log_ms = cal->second;
  } else {
    spdlog::warn("timing clone strategies on {}: {}", name, ToStd(cal.status().message()));
  }
  TS_RETURN_IF_ERROR(s.Exec(
      absl::StrCat("COMMENT ON DATABASE ", QuoteIdent(name), " IS ", QuoteLiteral(FormatTemplateComment(info)))));
  spdlog::info("built template database {} in {} (clone FILE_COPY {:.1f} ms, WAL_LOG {:.1f} ms)", name,
               absl::FormatDuration(absl::Trunc(absl::Now() - began, absl::Milliseconds(1))), info.file_copy_ms,
               info.wal_log_ms);
  return info;
}

absl::StatusOr<int> TemplateBuilder::CollectGarbage(pg::SqlSession& s, int keep, const std::string& current) {
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> rows,
                      s.Query("SELECT datname, COALESCE(shobj_description(oid, 'pg_database'), '') FROM pg_database "
                              "WHERE datistemplate AND datname LIKE 'tpl\\_%'"));
  std::vector<TemplateInfo> mine;
  for (const pg::Row& r : rows) {
    std::optional<TemplateInfo> info = ParseTemplateComment(r[0], r[1]);
    if (info && info->project == project_) mine.push_back(*info);
  }
  std::sort(mine.begin(), mine.end(), [](const TemplateInfo& a, const TemplateInfo& b) {
    return a.built_ms != b.built_ms ? a.built_ms > b.built_ms : a.name < b.name;
  });
  int dropped = 0;
  for (size_t i = std::max(keep, 1); i < mine.size(); ++i) {
    const std::string& name = mine[i].name;
    if (name == current) continue;
    TS_ASSIGN_OR_RETURN(std::string got,
                        s.QueryValue(absl::StrCat("SELECT pg_try_advisory_lock(", TemplateUseLockKey(name), ")")));
    if (got != "t") continue;  // a live agent clones from it
    absl::Status st = s.Exec(absl::StrCat("ALTER DATABASE ", QuoteIdent(name), " IS_TEMPLATE false"));
    if (st.ok()) st = s.Exec(absl::StrCat("DROP DATABASE ", QuoteIdent(name), " WITH (FORCE)"));
    (void)s.Exec(absl::StrCat("SELECT pg_advisory_unlock(", TemplateUseLockKey(name), ")"));
    if (st.ok()) {
      ++dropped;
      spdlog::info("dropped old template {} ({} newer ones kept)", name, keep);
    } else {
      spdlog::warn("cannot drop old template {}: {}", name, ToStd(st.message()));
      if (st.code() == absl::StatusCode::kUnavailable) return st;
    }
  }
  return dropped;
}

}  // namespace testshard::agent

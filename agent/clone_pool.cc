#include "agent/clone_pool.h"

#include <algorithm>
#include <cctype>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace testshard::agent {
namespace {

using pg::QuoteIdent;
using pg::QuoteLiteral;

constexpr double kAlpha = 0.3;  // weight of the newest clone time in the running average

int Index(CloneStrategy s) { return s == CloneStrategy::kFileCopy ? 0 : 1; }
CloneStrategy Other(CloneStrategy s) {
  return s == CloneStrategy::kFileCopy ? CloneStrategy::kWalLog : CloneStrategy::kFileCopy;
}

// A refused copy (the source in use: only when somebody unsealed the template and connected) is worth retrying.
bool Retryable(const absl::Status& s) { return s.code() == absl::StatusCode::kAborted; }

std::string Grantee(const std::string& g) { return g == "PUBLIC" ? g : QuoteIdent(g); }

// Setting names as SQL spells them: bare when they are plain (app.tenant_id, TimeZone), quoted otherwise.
std::string SettingName(const std::string& name) {
  bool plain = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
  });
  return plain ? name : QuoteIdent(name);
}

}  // namespace

std::string CloneFixups::Sql(const std::string& db) const {
  std::string sql;
  std::string d = QuoteIdent(db);
  if (revoke_public) absl::StrAppend(&sql, "REVOKE ALL ON DATABASE ", d, " FROM PUBLIC;");
  for (const auto& [grantee, privileges] : grants) {
    absl::StrAppend(&sql, "GRANT ", privileges, " ON DATABASE ", d, " TO ", Grantee(grantee), ";");
  }
  for (const auto& [name, value] : settings) {
    absl::StrAppend(&sql, "SELECT set_config(", QuoteLiteral(name), ", ", QuoteLiteral(value), ", true);",
                    "ALTER DATABASE ", d, " SET ", SettingName(name), " FROM CURRENT;");
  }
  for (const RoleSetting& r : role_settings) {
    absl::StrAppend(&sql, "SELECT set_config(", QuoteLiteral(r.name), ", ", QuoteLiteral(r.value), ", true);",
                    "ALTER ROLE ", QuoteIdent(r.role), " IN DATABASE ", d, " SET ", SettingName(r.name),
                    " FROM CURRENT;");
  }
  return sql;
}

absl::StatusOr<CloneFixups> ReadTemplateFixups(pg::SqlSession& s, const std::string& tpl) {
  CloneFixups f;
  std::string name = QuoteLiteral(tpl);
  // datacl NULL means the defaults, which a clone gets anyway. Otherwise replay it exactly: PUBLIC's defaults
  // revoked, then every grant. (The owner's own entries are replayed too: harmless, and right if owners differ.)
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> acl,
                      s.Query(absl::StrCat("SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE "
                                           "pg_get_userbyid(a.grantee) END, a.privilege_type FROM pg_database d, "
                                           "aclexplode(d.datacl) a WHERE d.datname = ",
                                           name, " AND d.datacl IS NOT NULL ORDER BY 1, 2")));
  if (!acl.empty()) {
    f.revoke_public = true;
    std::map<std::string, std::string> by_grantee;
    for (const pg::Row& r : acl) {
      std::string& privs = by_grantee[r[0]];
      if (!privs.empty()) privs += ", ";
      privs += r[1];
    }
    f.grants.assign(by_grantee.begin(), by_grantee.end());
  }
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> settings,
                      s.Query(absl::StrCat("SELECT COALESCE(r.rolname, ''), c.setting FROM pg_db_role_setting s "
                                           "JOIN pg_database d ON d.oid = s.setdatabase "
                                           "LEFT JOIN pg_roles r ON r.oid = s.setrole, "
                                           "unnest(s.setconfig) AS c(setting) WHERE d.datname = ",
                                           name, " ORDER BY 1, 2")));
  for (const pg::Row& r : settings) {
    size_t eq = r[1].find('=');
    if (eq == std::string::npos) continue;
    std::string key = r[1].substr(0, eq), value = r[1].substr(eq + 1);
    if (r[0].empty()) {
      f.settings.emplace_back(key, value);
    } else {
      f.role_settings.push_back({r[0], key, value});
    }
  }
  return f;
}

ClonePool::ClonePool(ClonePoolOptions options) : options_(std::move(options)), target_(options_.target) {
  avg_ms_[0] = options_.file_copy_ms;
  avg_ms_[1] = options_.wal_log_ms;
  samples_[0] = options_.file_copy_ms > 0;
  samples_[1] = options_.wal_log_ms > 0;
}

ClonePool::~ClonePool() { Shutdown(); }

void ClonePool::Start() {
  absl::MutexLock l(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  worker_ = std::thread([this] { Work(); });
}

CloneStrategy ClonePool::BestStrategy() const {
  if (options_.forced) return *options_.forced;
  // Unmeasured strategies are tried first; then the faster on recent average.
  if (samples_[0] == 0) return CloneStrategy::kFileCopy;
  if (samples_[1] == 0) return CloneStrategy::kWalLog;
  return avg_ms_[0] <= avg_ms_[1] ? CloneStrategy::kFileCopy : CloneStrategy::kWalLog;
}

CloneStrategy ClonePool::NextStrategy() {
  CloneStrategy best = BestStrategy();
  if (!options_.forced && clones_ > 0 && clones_ % kExploreEvery == 0) return Other(best);
  return best;
}

void ClonePool::Record(CloneStrategy s, absl::Duration took) {
  double ms = absl::ToDoubleMilliseconds(took);
  int i = Index(s);
  avg_ms_[i] = samples_[i] == 0 ? ms : (1 - kAlpha) * avg_ms_[i] + kAlpha * ms;
  ++samples_[i];
  ++clones_;
}

absl::StatusOr<std::string> ClonePool::Clone(pg::SqlSession& s, int64_t seq, CloneStrategy strategy) {
  std::string db = options_.name(seq);
  std::string create =
      absl::StrCat("CREATE DATABASE ", QuoteIdent(db), " TEMPLATE ", QuoteIdent(options_.template_name), " STRATEGY ",
                   ToAbsl(CloneStrategyName(strategy)));
  absl::Duration backoff = absl::Milliseconds(50);
  for (int attempt = 0;; ++attempt) {
    absl::Time t0 = absl::Now();
    absl::Status st = s.Exec(create);
    if (st.ok()) {
      absl::MutexLock l(&mu_);
      Record(strategy, absl::Now() - t0);
      break;
    }
    if (st.code() == absl::StatusCode::kAlreadyExists) {
      // Left by an earlier attempt whose reply was lost; it is ours (the name carries our instance).
      TS_RETURN_IF_ERROR(s.Exec(absl::StrCat("DROP DATABASE IF EXISTS ", QuoteIdent(db), " WITH (FORCE)")));
      continue;
    }
    if (!Retryable(st) || attempt >= 8) {
      return Annotate(st, absl::StrCat("cloning template ", options_.template_name, " into ", db));
    }
    // Who holds the template? Name them: waiting in silence for a session that never leaves helps nobody.
    auto who = s.Query(absl::StrCat("SELECT pid, usename, application_name FROM pg_stat_activity WHERE datname = ",
                                    QuoteLiteral(options_.template_name)));
    if (who.ok() && !who->empty()) {
      spdlog::warn("template {} is in use by pid {} ({}, {}); retrying the clone", options_.template_name, (*who)[0][0],
                   (*who)[0][1], (*who)[0][2]);
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(3));
  }
  if (!options_.fixups.empty()) {
    absl::Status st = s.Exec(options_.fixups.Sql(db));
    if (!st.ok()) {
      (void)s.Exec(absl::StrCat("DROP DATABASE IF EXISTS ", QuoteIdent(db), " WITH (FORCE)"));
      return Annotate(st, absl::StrCat("re-applying database grants and settings to ", db));
    }
  }
  return db;
}

absl::StatusOr<std::string> ClonePool::CloneNow(pg::SqlSession& session) {
  int64_t seq;
  CloneStrategy strategy;
  {
    absl::MutexLock l(&mu_);
    seq = ++seq_;
    strategy = NextStrategy();
  }
  return Clone(session, seq, strategy);
}

void ClonePool::Adopt(std::string name) {
  absl::MutexLock l(&mu_);
  ready_.push_front(std::move(name));
}

std::optional<std::string> ClonePool::TryTake() {
  absl::MutexLock l(&mu_);
  if (ready_.empty()) return std::nullopt;
  std::string name = std::move(ready_.front());
  ready_.pop_front();
  return name;
}

void ClonePool::Drop(std::string name) {
  absl::MutexLock l(&mu_);
  drops_.push_back({std::move(name), 0, absl::InfinitePast()});
}

void ClonePool::SetTarget(int target) {
  absl::MutexLock l(&mu_);
  target_ = std::max(0, target);
}

absl::Status ClonePool::DropOne(pg::SqlSession& s, const std::string& name) {
  absl::Status st = s.Exec(absl::StrCat("DROP DATABASE IF EXISTS ", QuoteIdent(name), " WITH (FORCE)"));
  if (st.code() == absl::StatusCode::kPermissionDenied || st.code() == absl::StatusCode::kAborted) {
    // FORCE may not end another role's sessions without pg_signal_backend: let no new ones in, try again later.
    (void)s.Exec(absl::StrCat("ALTER DATABASE ", QuoteIdent(name), " ALLOW_CONNECTIONS false"));
  }
  return st;
}

ClonePool::Stats ClonePool::stats() const {
  absl::MutexLock l(&mu_);
  Stats st;
  st.ready = static_cast<int>(ready_.size());
  st.pending_drops = static_cast<int>(drops_.size());
  st.clones = clones_;
  st.drops = drops_done_;
  st.drop_failures = drop_failures_;
  st.file_copy_ms = samples_[0] ? avg_ms_[0] : 0;
  st.wal_log_ms = samples_[1] ? avg_ms_[1] : 0;
  st.strategy = BestStrategy();
  st.last_error = last_error_;
  return st;
}

void ClonePool::Work() {
  std::unique_ptr<pg::SqlSession> session;
  absl::Time next_maintenance = absl::Now() + absl::Milliseconds(200);
  absl::Duration backoff = absl::Milliseconds(100);
  absl::Time resume = absl::InfinitePast();  // after a failure, no clone before this
  while (true) {
    enum { kIdle, kClone, kDrop, kMaintain } job = kIdle;
    PendingDrop drop;
    int64_t seq = 0;
    CloneStrategy strategy = CloneStrategy::kFileCopy;
    {
      absl::MutexLock l(&mu_);
      absl::Time now = absl::Now();
      auto due_drop =
          std::find_if(drops_.begin(), drops_.end(), [&](const PendingDrop& d) { return d.not_before <= now; });
      bool can_clone = static_cast<int>(ready_.size()) < target_ && now >= resume;
      // A shard waiting for a clone matters more than freeing space, unless drops pile up.
      bool drops_first =
          due_drop != drops_.end() && (!can_clone || drops_.size() > static_cast<size_t>(2 * target_ + 2));
      if (stopping_) return;
      if (drops_first) {
        job = kDrop;
      } else if (can_clone) {
        job = kClone;
      } else if (due_drop != drops_.end()) {
        job = kDrop;
      } else if (options_.maintenance && now >= next_maintenance) {
        job = kMaintain;
      }
      if (job == kDrop) {
        drop = *due_drop;
        drops_.erase(due_drop);
      } else if (job == kClone) {
        seq = ++seq_;
        strategy = NextStrategy();
      } else if (job == kIdle) {
        // Sleep until there is something to do: a take, a drop, a stop, the next maintenance or retry.
        absl::Time wake = options_.maintenance ? next_maintenance : now + absl::Seconds(5);
        if (resume > now) wake = std::min(wake, resume);
        for (const PendingDrop& d : drops_) wake = std::min(wake, d.not_before);
        size_t ready = ready_.size(), drops = drops_.size();
        int target = target_;
        auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || ready_.size() != ready || drops_.size() != drops || target_ != target;
        };
        mu_.AwaitWithDeadline(absl::Condition(&changed), wake);
        continue;
      }
    }
    if (!session || !session->is_open()) {
      auto opened = pg::SqlSession::Open(options_.admin, "testshard clone pool");
      if (!opened.ok()) {
        absl::MutexLock l(&mu_);
        last_error_ = std::string(opened.status().message());
        if (job == kDrop) drops_.push_front(drop);
        resume = absl::Now() + backoff;
        backoff = std::min(backoff * 2, absl::Seconds(5));
        // Wait out the backoff unless stopped.
        auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
        mu_.AwaitWithDeadline(absl::Condition(&stop), resume);
        continue;
      }
      session = std::move(*opened);
    }
    if (job == kClone) {
      absl::StatusOr<std::string> db = Clone(*session, seq, strategy);
      absl::MutexLock l(&mu_);
      if (db.ok()) {
        ready_.push_back(std::move(*db));
        last_error_.clear();
        backoff = absl::Milliseconds(100);
      } else {
        last_error_ = std::string(db.status().message());
        spdlog::warn("clone pool: {}", last_error_);
        resume = absl::Now() + backoff;
        backoff = std::min(backoff * 2, absl::Seconds(5));
      }
    } else if (job == kDrop) {
      absl::Status st = DropOne(*session, drop.name);
      absl::MutexLock l(&mu_);
      if (st.ok()) {
        ++drops_done_;
      } else {
        ++drop_failures_;
        if (++drop.attempts < options_.max_drop_attempts && st.code() != absl::StatusCode::kUnavailable) {
          drop.not_before = absl::Now() + absl::Milliseconds(250) * (1 << std::min(drop.attempts, 5));
          drops_.push_back(drop);
        } else if (st.code() == absl::StatusCode::kUnavailable) {
          drops_.push_back(drop);  // the server is away: keep it for when it is back (or for the janitor)
          resume = absl::Now() + backoff;
        } else {
          spdlog::warn("giving up dropping {} (the janitor drops it once this agent is gone): {}", drop.name,
                       ToStd(st.message()));
        }
      }
    } else if (job == kMaintain) {
      options_.maintenance(*session);
      next_maintenance = absl::Now() + options_.maintenance_interval;
    }
  }
}

void ClonePool::Shutdown(absl::Duration budget) {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (worker_.joinable()) worker_.join();
  std::vector<std::string> left;
  {
    absl::MutexLock l(&mu_);
    for (std::string& n : ready_) left.push_back(std::move(n));
    for (PendingDrop& d : drops_) left.push_back(std::move(d.name));
    ready_.clear();
    drops_.clear();
  }
  if (left.empty()) return;
  absl::Time deadline = absl::Now() + budget;
  auto session = pg::SqlSession::Open(options_.admin, "testshard clone pool");
  if (!session.ok()) {
    spdlog::warn("cannot drop {} database(s) at shutdown (the janitor will): {}", left.size(),
                 ToStd(session.status().message()));
    return;
  }
  for (const std::string& name : left) {
    if (absl::Now() > deadline) {
      spdlog::warn("out of time dropping databases at shutdown; the janitor drops the rest");
      return;
    }
    absl::Status st = DropOne(**session, name);
    if (!st.ok()) spdlog::warn("dropping {} at shutdown: {}", name, ToStd(st.message()));
  }
}

}  // namespace testshard::agent

#include "agent/handoff_check.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace testshard::agent {
namespace {

constexpr size_t kMaxIdentifier = 63;  // PostgreSQL's NAMEDATALEN - 1
constexpr size_t kQueryShown = 120;

std::string Lower(std::string_view s) { return absl::AsciiStrToLower(ToAbsl(s)); }

// The statement with leading whitespace and SQL comments removed, lower-cased.
std::string Normalized(std::string_view q) {
  std::string s = Lower(q);
  size_t i = 0;
  while (i < s.size()) {
    if (std::isspace(static_cast<unsigned char>(s[i]))) {
      ++i;
    } else if (s.compare(i, 2, "--") == 0) {
      size_t nl = s.find('\n', i);
      i = nl == std::string::npos ? s.size() : nl + 1;
    } else if (s.compare(i, 2, "/*") == 0) {
      size_t end = s.find("*/", i + 2);
      i = end == std::string::npos ? s.size() : end + 2;
    } else {
      break;
    }
  }
  return s.substr(i);
}

bool StartsWithWord(const std::string& s, std::string_view word) {
  return absl::StartsWith(s, ToAbsl(word)) &&
         (s.size() == word.size() || !std::isalnum(static_cast<unsigned char>(s[word.size()])));
}

std::string Shown(std::string_view query) {
  std::string q(query);
  std::replace_if(q.begin(), q.end(), [](char c) { return c == '\n' || c == '\r' || c == '\t'; }, ' ');
  if (q.size() > kQueryShown) q = q.substr(0, kQueryShown) + "...";
  return q;
}

}  // namespace

std::string TestApplicationName(std::string_view run_id, std::string_view agent_id) {
  std::string name = absl::StrCat(ToAbsl(kTestApplicationPrefix), ToAbsl(run_id), "/", ToAbsl(agent_id));
  return name.size() > kMaxIdentifier ? name.substr(0, kMaxIdentifier) : name;
}

bool IsDerivedDatabase(std::string_view datname, std::string_view own) {
  if (own.empty()) return false;
  for (size_t pos = datname.find(own); pos != std::string_view::npos; pos = datname.find(own, pos + 1)) {
    size_t end = pos + own.size();
    if ((pos == 0 || datname[pos - 1] == '_') && (end == datname.size() || datname[end] == '_')) return true;
  }
  return false;
}

bool IsMaintenanceDatabase(std::string_view datname) { return datname == "postgres" || datname == "template1"; }

bool IsMaintenanceStatement(std::string_view query) {
  std::string s = Normalized(query);
  if (s.empty()) return true;  // connected, nothing run yet
  // What pg_stat_activity shows a role without pg_read_all_stats for other roles' sessions: benefit of the doubt.
  if (s == "<insufficient privilege>") return true;
  for (std::string_view word : {"set", "show", "reset", "begin", "commit", "rollback", "end", "start", "discard",
                                "savepoint", "release", "listen", "unlisten"}) {
    if (StartsWithWord(s, word)) return true;
  }
  for (std::string_view prefix : {"create database", "drop database", "alter database"}) {
    if (absl::StartsWith(s, ToAbsl(prefix))) return true;
  }
  if (!StartsWithWord(s, "select")) return false;
  // A SELECT is a catalog read when everything it reads from is a pg_ relation or information_schema.
  size_t from = s.find(" from ");
  while (from != std::string::npos) {
    size_t i = from + 6;
    while (i < s.size() && (std::isspace(static_cast<unsigned char>(s[i])) || s[i] == '"')) ++i;
    std::string_view rest = std::string_view(s).substr(i);
    if (!absl::StartsWith(ToAbsl(rest), "pg_") && !absl::StartsWith(ToAbsl(rest), "information_schema.") &&
        !absl::StartsWith(ToAbsl(rest), "(")) {
      return false;
    }
    from = s.find(" from ", from + 6);
  }
  return s.find(" join ") == std::string::npos || s.find(" join pg_") != std::string::npos;
}

HandoffLedger::HandoffLedger(Identity identity) : identity_(std::move(identity)) {}

void HandoffLedger::SetDatabase(const std::string& name) {
  if (name == database_) return;
  database_ = name;
  handed_.insert(name);
}

bool HandoffLedger::IsOwn(std::string_view datname) const {
  for (const std::string& db : handed_) {
    if (IsDerivedDatabase(datname, db)) return true;
  }
  return false;
}

std::vector<ServerSession> HandoffLedger::NeedOwner(const std::vector<ServerSession>& sessions) const {
  std::vector<ServerSession> out;
  for (const ServerSession& s : sessions) {
    if (absl::StartsWith(ToAbsl(s.application_name), ToAbsl(kTestApplicationPrefix))) continue;
    auto known = seen_.find(s.pid);
    if (IsOwn(s.datname) || (known != seen_.end() && known->second.backend_start == s.backend_start)) continue;
    out.push_back(s);
  }
  return out;
}

void HandoffLedger::Observe(const std::vector<ServerSession>& sessions, const std::set<int>& resolved) {
  for (const ServerSession& s : sessions) {
    bool tagged = s.application_name == identity_.application_name;
    auto known = seen_.find(s.pid);
    bool ours = tagged || resolved.count(s.pid) > 0 ||
                // A session found to be ours stays ours: its client is looked up once.
                (known != seen_.end() && known->second.backend_start == s.backend_start &&
                 known->second.datname == s.datname);
    if (!ours || s.datname.empty()) continue;
    bool maintenance_ok = IsMaintenanceDatabase(s.datname) && IsMaintenanceStatement(s.query);
    bool own = IsOwn(s.datname) || maintenance_ok;
    auto [it, fresh] = seen_.try_emplace(s.pid);
    Seen& seen = it->second;
    if (fresh || seen.backend_start != s.backend_start) {  // new, or a reused pid
      seen = Seen{s.datname,          s.usename,       s.application_name, stage_, test_,
                  Shown(s.query),     s.backend_start, tagged,             own};
    } else if (!own && seen.own) {
      seen.own = false;  // a maintenance session that went on to do real work
      seen.query = Shown(s.query);
    }
    if (own) continue;
    Foreign& f = foreign_[s.datname];
    if (f.sessions.empty()) {
      f.usename = s.usename;
      f.application_name = s.application_name;
      f.stage = stage_;
      f.test = test_;
      f.query = Shown(s.query);
      f.maintenance = IsMaintenanceDatabase(s.datname);
    }
    f.sessions.insert(s.pid);
  }
}

void HandoffLedger::Leftovers(const TableNames& tables, const std::string& cause) {
  if (tables.empty()) return;
  auto [it, fresh] = leftovers_.try_emplace(database_);
  if (fresh) it->second.cause = cause;
  it->second.tables.insert(tables.begin(), tables.end());
}

void HandoffLedger::Result(const std::string& test_id, bool failed, const std::string& message) {
  auto it = leftovers_.find(database_);
  if (!failed || it == leftovers_.end()) return;
  if (it->second.failures++ == 0) {
    it->second.first_test = test_id;
    it->second.first_message = Shown(message);
  }
}

void HandoffLedger::Note(const std::string& message) {
  HandoffFinding h;
  h.kind = HandoffFinding::Kind::kNote;
  h.agent = identity_.agent;
  h.own_database = database_;
  h.message = message;
  notes_.push_back(std::move(h));
}

std::string HandoffLedger::Advice() const {
  std::string vars = identity_.env_vars.empty()
                         ? std::string("the variables in [database.env]")
                         : absl::StrCat(absl::StrJoin(identity_.env_vars, ", "), " (from [database.env])");
  if (!identity_.env_names_database) {
    return absl::StrCat("None of ", vars,
                        " carries the database's name: add one ({dbname}, or a URL such as {url}) and have the code "
                        "read it; without it every agent's tests land in the same database.");
  }
  return absl::StrCat("Check that the code under test takes its database from ", vars,
                      ": a hard-coded or default database name sends every agent to the same database, where they "
                      "trample one another.");
}

std::vector<HandoffFinding> HandoffLedger::TakeFindings() {
  std::vector<HandoffFinding> out = std::move(notes_);
  notes_.clear();
  for (auto& [db, f] : foreign_) {
    if (f.reported) continue;
    f.reported = true;
    HandoffFinding h;
    h.kind = HandoffFinding::Kind::kForeignDatabase;
    h.agent = identity_.agent;
    h.database = db;
    h.own_database = database_;
    h.stage = f.stage;
    h.first_test = f.test;
    h.sessions = static_cast<int>(f.sessions.size());
    // The application_name says whose a session is only when it is not our own tag.
    std::string who = absl::StrCat("as ", f.usename.empty() ? "?" : f.usename);
    if (!f.application_name.empty() &&
        !absl::StartsWith(ToAbsl(f.application_name), ToAbsl(kTestApplicationPrefix))) {
      absl::StrAppend(&who, ", application_name '", f.application_name, "'");
    }
    if (!f.test.empty()) {
      absl::StrAppend(&who, "; first during ", f.test);
    } else if (!f.stage.empty()) {
      absl::StrAppend(&who, "; first in stage ", f.stage);
    }
    if (f.maintenance) {
      h.message = absl::StrCat(
          "agent ", identity_.agent, ": its tests worked in the server's maintenance database \"", db, "\" (", who,
          ": `", f.query, "`), not in \"", database_,
          "\", the database testshard handed them. A connection that names no database lands there (libpq's "
          "default is the role's name). ", Advice());
    } else {
      // test_<name> is what Django's test runner and pytest-django create: a fixed one comes from the settings.
      std::string django = absl::StartsWith(db, "test_")
                               ? " A test_ name is what pytest-django creates: settings that fix DATABASES[...]"
                                 "[\"TEST\"][\"NAME\"] give every agent the same one; drop it, or set "
                                 "django_test_db = \"reuse\"."
                               : "";
      h.message = absl::StrCat("agent ", identity_.agent, ": its tests had ", f.sessions.size(),
                               " session(s) on database \"", db, "\" (", who, "), not on \"", database_,
                               "\", the database testshard handed them. ", Advice(), django);
    }
    out.push_back(std::move(h));
  }
  for (auto& [database, left] : leftovers_) {
    if (left.failures == 0 || left.reported) continue;
    left.reported = true;
    HandoffFinding h;
    h.kind = HandoffFinding::Kind::kLeftoverTables;
    h.agent = identity_.agent;
    h.own_database = database;
    h.stage = stage_;
    h.first_test = left.first_test;
    std::vector<std::string> tables(left.tables.begin(), left.tables.end());
    if (tables.size() > 8) {
      size_t more = tables.size() - 8;
      tables.resize(8);
      tables.push_back(absl::StrCat("and ", more, " more"));
    }
    h.message = absl::StrCat(
        "agent ", identity_.agent, ": ", left.failures, " test(s) failed on database \"", database, "\" after ",
        left.cause, " and left tables the fresh database does not have (", absl::StrJoin(tables, ", "),
        "); the first was ", left.first_test, ": ", left.first_message,
        ". Tests that create their own tables need a pristine database per shard: set reset = \"shard\" for stage '",
        stage_, "' (or have the suite drop what it creates even when it is interrupted).");
    out.push_back(std::move(h));
  }
  return out;
}

std::string DjangoNameAdvice(std::string_view dbname) {
  std::string longest = absl::StrCat("test_", ToAbsl(dbname), "_gw99");
  if (longest.size() <= kMaxIdentifier) return "";
  return absl::StrCat("pytest-django names its test database \"test_", ToAbsl(dbname),
                      "\" (plus \"_gwN\" under xdist): longer than PostgreSQL's 63 bytes, so the server truncates it "
                      "and two workers' databases may collide. Use django_test_db = \"reuse\", or shorter names.");
}

}  // namespace testshard::agent

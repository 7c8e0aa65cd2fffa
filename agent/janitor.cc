#include "agent/janitor.h"

#include <cctype>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace testshard::agent {
namespace {

using pg::QuoteIdent;
using pg::QuoteLiteral;

constexpr char kPrefix[] = "ts_";
constexpr size_t kMaxName = 63;

// Lowercase letters and digits only, so '_' separates parts unambiguously; at most `max` of them.
std::string Part(std::string_view s, size_t max) {
  std::string out;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c))) out.push_back(static_cast<char>(std::tolower(c)));
  }
  if (out.empty()) out = "x";
  // Keep the tail: ids such as "lease-1234" differ at the end.
  if (out.size() > max) out = out.substr(out.size() - max);
  return out;
}

bool IsInstance(std::string_view s) {
  if (s.size() != 8) return false;
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c)) || std::isupper(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

std::string MakeDatabaseName(const DatabaseNameParts& p) {
  // 3 + 8 + 1 + 12 + 1 + 12 + 1 + 25 = 63.
  std::string name =
      absl::StrCat(kPrefix, Part(p.instance, 8), "_", Part(p.run, 12), "_", Part(p.agent, 12), "_", Part(p.use, 25));
  return name.substr(0, kMaxName);
}

std::optional<DatabaseNameParts> ParseDatabaseName(std::string_view name) {
  if (name.rfind(kPrefix, 0) != 0) return std::nullopt;
  std::vector<std::string> parts = absl::StrSplit(ToAbsl(name.substr(3)), '_');
  if (parts.size() != 4 || !IsInstance(parts[0])) return std::nullopt;
  for (const std::string& p : parts) {
    if (p.empty()) return std::nullopt;
  }
  return DatabaseNameParts{parts[0], parts[1], parts[2], parts[3]};
}

std::string NewInstanceId() {
  std::random_device rd;
  return absl::StrFormat("%08x", rd());
}

std::string PresenceApplicationName(std::string_view instance) {
  return absl::StrCat("testshard agent ", ToAbsl(instance));
}

std::string PresenceLockKey(std::string_view instance) {
  return absl::StrCat("hashtextextended(", QuoteLiteral(absl::StrCat("testshard-agent:", ToAbsl(instance))), ", 0)");
}

absl::Status ClaimPresence(pg::SqlSession& session, std::string_view instance) {
  return Annotate(session.Exec(absl::StrCat("SELECT pg_advisory_lock(", PresenceLockKey(instance), ")")),
                  "claiming the agent's presence lock");
}

absl::StatusOr<SweepResult> SweepDeadAgents(pg::SqlSession& session, std::string_view own_instance) {
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> dbs,
                      session.Query("SELECT datname FROM pg_database WHERE datname LIKE 'ts\\_%' ORDER BY 1"));
  std::map<std::string, std::vector<std::string>> by_instance;
  for (const pg::Row& r : dbs) {
    std::optional<DatabaseNameParts> parts = ParseDatabaseName(r[0]);
    if (parts && parts->instance != own_instance) by_instance[parts->instance].push_back(r[0]);
  }
  SweepResult result;
  if (by_instance.empty()) return result;
  // Sessions that say they are an agent, wherever they are connected.
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> sessions,
                      session.Query("SELECT DISTINCT application_name FROM pg_stat_activity "
                                    "WHERE application_name LIKE 'testshard agent %'"));
  std::set<std::string> announced;
  for (const pg::Row& r : sessions) announced.insert(r[0]);

  for (const auto& [instance, names] : by_instance) {
    if (announced.count(PresenceApplicationName(instance))) {
      result.live_kept += static_cast<int>(names.size());
      continue;
    }
    TS_ASSIGN_OR_RETURN(std::string got, session.QueryValue(absl::StrCat("SELECT pg_try_advisory_lock(",
                                                                         PresenceLockKey(instance), ")")));
    if (got != "t") {
      result.live_kept += static_cast<int>(names.size());
      continue;
    }
    // Ours now: the agent is dead and nobody else is sweeping it.
    for (const std::string& db : names) {
      absl::Status s = session.Exec(absl::StrCat("DROP DATABASE IF EXISTS ", QuoteIdent(db), " WITH (FORCE)"));
      if (s.ok()) {
        ++result.dropped;
        spdlog::info("janitor: dropped {}, left by a dead agent", db);
      } else {
        ++result.failed;
        spdlog::warn("janitor: cannot drop {} (left by a dead agent): {}", db, ToStd(s.message()));
        if (s.code() == absl::StatusCode::kUnavailable) return s;
      }
    }
    TS_RETURN_IF_ERROR(session.Exec(absl::StrCat("SELECT pg_advisory_unlock(", PresenceLockKey(instance), ")")));
  }
  return result;
}

}  // namespace testshard::agent

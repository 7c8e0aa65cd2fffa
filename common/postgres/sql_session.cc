#include "common/postgres/sql_session.h"

#include <libpq-fe.h>
#include <signal.h>

#include <cerrno>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace testshard::pg {
namespace {

// libpq prints notices ("database x does not exist, skipping") to stderr by default; they are not errors.
void QuietNotices(void*, const char* message) { spdlog::debug("postgres: {}", message); }

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Connection failures carry no SQLSTATE through libpq, only the server's or libpq's message.
absl::Status ConnectError(std::string_view message, const Connection& where) {
  std::string msg = Trim(std::string(message));
  std::string context =
      absl::StrCat("connecting to PostgreSQL at ", where.is_socket() ? "socket " : "", where.host, ":", where.port,
                   " as ", where.user.empty() ? "(default user)" : where.user, ", database ", where.dbname);
  std::string full = absl::StrCat(context, ": ", msg);
  auto has = [&](std::string_view s) { return absl::StrContains(msg, ToAbsl(s)); };
  if (has("password authentication failed") || has("no pg_hba.conf entry") || has("authentication failed") ||
      has("no password supplied")) {
    return absl::UnauthenticatedError(full);
  }
  if (has("does not exist") && has("database")) return absl::NotFoundError(full);
  if (has("does not exist") && has("role")) return absl::FailedPreconditionError(full);
  if (has("not currently accepting connections")) return absl::FailedPreconditionError(full);
  if (has("permission denied") || has("does not have CONNECT privilege")) return absl::PermissionDeniedError(full);
  if (has("too many clients") || has("connection slots are reserved")) return absl::ResourceExhaustedError(full);
  return absl::UnavailableError(absl::StrCat(context, ": cannot reach PostgreSQL: ", msg));
}

}  // namespace

absl::Status SqlError(std::string_view sqlstate, std::string_view message, std::string_view context) {
  std::string full = absl::StrCat(ToAbsl(context), ": ", ToAbsl(message));
  std::string_view cls = sqlstate.substr(0, std::min<size_t>(2, sqlstate.size()));
  if (absl::StrContains(ToAbsl(message), "No space left on device")) return absl::ResourceExhaustedError(full);
  if (cls == "08" || sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03") {
    return absl::UnavailableError(full);
  }
  if (sqlstate == "42501") return absl::PermissionDeniedError(full);
  if (cls == "28") return absl::UnauthenticatedError(full);
  if (cls == "53") return absl::ResourceExhaustedError(full);
  if (sqlstate == "55006") return absl::AbortedError(full);
  if (sqlstate == "3D000") return absl::NotFoundError(full);
  if (sqlstate == "42P04" || sqlstate == "42710" || sqlstate == "23505") return absl::AlreadyExistsError(full);
  if (sqlstate == "57014") return absl::DeadlineExceededError(full);
  if (sqlstate == "55000") return absl::FailedPreconditionError(full);
  return absl::InternalError(full);
}

absl::StatusOr<std::unique_ptr<SqlSession>> SqlSession::Open(const Connection& where,
                                                             std::string_view application_name) {
  std::string conninfo =
      absl::StrCat(where.Conninfo(), " connect_timeout=10 application_name=", QuoteConninfo(application_name));
  if (!where.is_socket()) {
    // A machine that vanishes mid-run is noticed in about a minute rather than TCP's two hours.
    absl::StrAppend(&conninfo, " keepalives=1 keepalives_idle=20 keepalives_interval=5 keepalives_count=4");
  }
  PGconn* conn = nullptr;
  absl::Duration backoff = absl::Milliseconds(20);
  for (int attempt = 0;; ++attempt) {
    conn = PQconnectdb(conninfo.c_str());
    if (!conn) return absl::ResourceExhaustedError("libpq could not allocate a connection");
    if (PQstatus(conn) == CONNECTION_OK) break;
    std::string message = PQerrorMessage(conn);
    PQfinish(conn);
    // Moments that pass: every slot taken while many agents start at once, a server still starting.
    bool passing = absl::StrContains(message, "too many clients") || absl::StrContains(message, "reserved for") ||
                   absl::StrContains(message, "starting up");
    if (!passing || attempt >= 8) return ConnectError(message, where);
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
  PQsetNoticeProcessor(conn, QuietNotices, nullptr);
  auto session = std::unique_ptr<SqlSession>(new SqlSession());
  session->where_ = where;
  session->conn_ = conn;
  return session;
}

SqlSession::~SqlSession() {
  if (conn_) PQfinish(conn_);
}

bool SqlSession::is_open() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }

int SqlSession::backend_pid() const { return conn_ ? PQbackendPID(conn_) : 0; }

absl::StatusOr<std::vector<Row>> SqlSession::Query(std::string_view sql) {
  std::string text(sql);
  PGresult* res = PQexec(conn_, text.c_str());
  std::unique_ptr<PGresult, decltype(&PQclear)> guard(res, PQclear);
  ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    std::vector<Row> rows(PQntuples(res));
    for (int r = 0; r < PQntuples(res); ++r) {
      rows[r].reserve(PQnfields(res));
      for (int f = 0; f < PQnfields(res); ++f) rows[r].emplace_back(PQgetvalue(res, r, f));
    }
    return rows;
  }
  std::string short_sql = text.size() > 200 ? text.substr(0, 200) + "..." : text;
  if (PQstatus(conn_) != CONNECTION_OK) {
    return absl::UnavailableError(absl::StrCat("PostgreSQL at ", where_.host, ":", where_.port,
                                               " went away (server stopped or crashed?) during `", short_sql,
                                               "`: ", Trim(PQerrorMessage(conn_))));
  }
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string message = Trim(res ? PQresultErrorMessage(res) : PQerrorMessage(conn_));
  return SqlError(state ? state : "", message, absl::StrCat("`", short_sql, "`"));
}

absl::Status SqlSession::Exec(std::string_view sql) { return Query(sql).status(); }

absl::StatusOr<std::string> SqlSession::QueryValue(std::string_view sql) {
  TS_ASSIGN_OR_RETURN(std::vector<Row> rows, Query(sql));
  if (rows.empty() || rows[0].empty()) {
    return absl::NotFoundError(absl::StrCat("no row from `", ToAbsl(sql), "`"));
  }
  return rows[0][0];
}

absl::Status SqlSession::Ping() { return Exec("SELECT 1"); }

absl::Status CheckLocalServerProcess(const Connection& where) {
  if (!where.is_socket()) return absl::OkStatus();
  std::string lock = absl::StrCat(where.host, "/.s.PGSQL.", where.port, ".lock");
  std::ifstream in(lock);
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0) {
    return absl::UnavailableError(
        absl::StrCat("PostgreSQL at ", where.host, ":", where.port, " has gone (no socket lock file ", lock, ")"));
  }
  bool alive = kill(pid, 0) == 0 || errno == EPERM;
  if (alive) {
    // A zombie has exited, whatever kill() says.
    std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
    std::string text((std::istreambuf_iterator<char>(stat)), {});
    size_t paren = text.rfind(')');
    if (paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z') alive = false;
  }
  if (!alive) {
    return absl::UnavailableError(
        absl::StrCat("PostgreSQL at ", where.host, ":", where.port, " has died (postmaster pid ", pid, " is gone)"));
  }
  return absl::OkStatus();
}

}  // namespace testshard::pg

// One libpq session with every failure turned into an absl::Status at this boundary, so nothing above it includes
// libpq or libpqxx headers or catches exceptions.
//
// Codes (what callers branch on):
//   kUnavailable        the server cannot be reached or went away (refused, no socket, shut down, crashed)
//   kPermissionDenied   the role lacks a privilege (CREATEDB, ownership, terminating another role's session)
//   kUnauthenticated    the server refused the role's credentials
//   kResourceExhausted  disk full, out of memory, too many connections
//   kAborted            the object is in use by other sessions (SQLSTATE 55006): worth retrying
//   kNotFound           the database does not exist
//   kAlreadyExists      the database or role already exists
//   kFailedPrecondition the database does not accept connections, and other refusals of the request as made
//   kInternal           anything else (a bug in our SQL, say), with the server's message
#ifndef TESTSHARD_COMMON_POSTGRES_SQL_SESSION_H_
#define TESTSHARD_COMMON_POSTGRES_SQL_SESSION_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/connection.h"

struct pg_conn;

namespace testshard::pg {

// A result row; SQL NULL reads as "" (select COALESCE(...) where the difference matters).
using Row = std::vector<std::string>;

// Not thread-safe: one thread at a time (callers guard a shared session with their own mutex).
class SqlSession {
 public:
  // Connects. `application_name` shows in pg_stat_activity, so an operator can tell whose session it is.
  static absl::StatusOr<std::unique_ptr<SqlSession>> Open(const Connection& where,
                                                          std::string_view application_name = "testshard");
  ~SqlSession();

  // Runs one statement outside any transaction block (CREATE/DROP DATABASE need that), discarding rows.
  absl::Status Exec(std::string_view sql);
  // Runs one statement and returns its rows.
  absl::StatusOr<std::vector<Row>> Query(std::string_view sql);
  // The first column of the single row a statement returns; NotFound when it returns none.
  absl::StatusOr<std::string> QueryValue(std::string_view sql);

  // True while the connection is usable as far as libpq knows (no round trip).
  bool is_open() const;
  // A round trip (SELECT 1): OK while the server answers, Unavailable once it has gone.
  absl::Status Ping();

  // The server process serving this session.
  int backend_pid() const;
  const Connection& where() const { return where_; }

 private:
  SqlSession() = default;
  Connection where_;
  pg_conn* conn_ = nullptr;  // PGconn
};

// For a server on a local unix socket: whether its postmaster still runs, from the pid in the socket's lock file
// (`<dir>/.s.PGSQL.<port>.lock`). A few microseconds, where a new connection costs milliseconds; and exact, where an
// established session goes on answering for tens of milliseconds after its postmaster was killed. OK for servers
// reached over TCP (nothing to look at) and when the process belongs to a user we may not signal.
absl::Status CheckLocalServerProcess(const Connection& where);

// The Status for a failed statement with SQLSTATE `sqlstate` (may be empty for connection failures), prefixed
// with `context`. Exposed for tests.
absl::Status SqlError(std::string_view sqlstate, std::string_view message, std::string_view context);

}  // namespace testshard::pg

#endif  // TESTSHARD_COMMON_POSTGRES_SQL_SESSION_H_

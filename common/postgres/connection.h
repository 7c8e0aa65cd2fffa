// Where a PostgreSQL database is and how to reach it, and the forms in which it is handed to a test process.
#ifndef TESTSHARD_COMMON_POSTGRES_CONNECTION_H_
#define TESTSHARD_COMMON_POSTGRES_CONNECTION_H_

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace testshard::pg {

struct Connection {
  std::string host;  // a host name, or an absolute unix-socket directory
  int port = 5432;
  std::string user;
  std::string password;
  std::string dbname;

  bool is_socket() const { return !host.empty() && host.front() == '/'; }
  // The same server and credentials, another database or role.
  Connection WithDb(std::string_view db) const;
  Connection WithUser(std::string_view user, std::string_view password = "") const;

  // postgresql://user:password@host:port/dbname, or postgresql://user@/dbname?host=/dir&port=N for a socket.
  std::string Url(std::string_view scheme = "postgresql") const;
  // libpq's key=value form, quoted, for our own connections.
  std::string Conninfo() const;
};

// Parses a libpq URL or key=value string (as PQconninfoParse does). InvalidArgument naming the problem.
absl::StatusOr<Connection> ParseConnection(std::string_view text);

// Renders an env-var template over `c`: {url} (libpq URL), {sqlalchemy_url} (postgresql+psycopg2://),
// {asyncpg_url} (postgresql+asyncpg://), {host}, {port}, {user}, {password}, {dbname}, {socket_dir} (empty over
// TCP). "{{" and "}}" are literal braces. An unknown placeholder is InvalidArgument.
absl::StatusOr<std::string> RenderTemplate(std::string_view tmpl, const Connection& c);

// Checks a template's placeholders without a connection, so a config typo fails before anything runs.
absl::Status ValidateTemplate(std::string_view tmpl);

// Quotes an identifier for SQL ("a""b").
std::string QuoteIdent(std::string_view name);
// Quotes a string literal for SQL ('it''s'; E'...' when it holds a backslash).
std::string QuoteLiteral(std::string_view value);
// Quotes a value for a libpq key=value string ('a\'b').
std::string QuoteConninfo(std::string_view value);

}  // namespace testshard::pg

#endif  // TESTSHARD_COMMON_POSTGRES_CONNECTION_H_

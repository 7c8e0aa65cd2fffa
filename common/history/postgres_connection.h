// One connection to PostgreSQL, shared by everything testshard keeps there (the duration history, run journals):
// connect, create the schema once per connection, libpqxx exceptions as absl::Status.
#ifndef TESTSHARD_COMMON_HISTORY_POSTGRES_CONNECTION_H_
#define TESTSHARD_COMMON_HISTORY_POSTGRES_CONNECTION_H_

#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace testshard::history {

// Converts whatever libpqxx threw into a canonical status, with context: a lost server is kUnavailable, a refused
// login kPermissionDenied, a deadlock or serialisation failure kAborted. REQUIRES: called inside a catch block.
absl::Status PostgresError(std::string_view what);

// Not thread-safe: the owner serialises calls (each store holds it under its own mutex). A broken connection is
// re-opened by the next EnsureConnected().
class PostgresConnection {
 public:
  // `conninfo`: a libpq URI (postgresql://...) or key=value string. `schema`: SQL (CREATE TABLE IF NOT EXISTS ...)
  // run on every new connection under a transaction-scoped advisory lock keyed by `lock_name`, because concurrent
  // first connects would race on CREATE TABLE IF NOT EXISTS (a unique violation in pg_type).
  PostgresConnection(std::string conninfo, std::string lock_name, std::string schema);

  // Connects and creates the schema unless already connected. `what` is the context for errors.
  absl::Status EnsureConnected(std::string_view what);
  // REQUIRES: EnsureConnected() returned OK since the last failure.
  pqxx::connection& get() { return *conn_; }
  // The server without the password ("postgresql://user@host:port/db").
  std::string Describe() const { return conn_ ? describe_ : "postgresql (not connected)"; }

 private:
  const std::string conninfo_;
  const std::string lock_name_;
  const std::string schema_;
  std::unique_ptr<pqxx::connection> conn_;
  std::string describe_;
};

}  // namespace testshard::history

#endif  // TESTSHARD_COMMON_HISTORY_POSTGRES_CONNECTION_H_

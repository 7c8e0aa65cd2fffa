#include "common/history/postgres_connection.h"

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace testshard::history {

absl::Status PostgresError(std::string_view what) {
  try {
    throw;
  } catch (const pqxx::broken_connection& e) {
    return absl::UnavailableError(absl::StrCat(ToAbsl(what), ": connection to PostgreSQL lost: ", e.what()));
  } catch (const pqxx::sql_error& e) {
    const std::string state = e.sqlstate();
    std::string message = absl::StrCat(ToAbsl(what), ": ", e.what(), " (SQLSTATE ", state, ")");
    if (state == "40001" || state == "40P01") return absl::AbortedError(message);
    if (state == "28P01" || state == "28000" || state == "42501") return absl::PermissionDeniedError(message);
    if (state == "3D000") return absl::NotFoundError(message);
    if (state.rfind("08", 0) == 0 || state == "57P01" || state == "57P03") return absl::UnavailableError(message);
    return absl::InternalError(message);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(ToAbsl(what), ": ", e.what()));
  }
}

PostgresConnection::PostgresConnection(std::string conninfo, std::string lock_name, std::string schema)
    : conninfo_(std::move(conninfo)), lock_name_(std::move(lock_name)), schema_(std::move(schema)) {}

absl::Status PostgresConnection::EnsureConnected(std::string_view what) {
  if (conn_ && conn_->is_open()) return absl::OkStatus();
  try {
    auto conn = std::make_unique<pqxx::connection>(conninfo_);
    const char* user = conn->username();
    const char* host = conn->hostname();
    const char* port = conn->port();
    const char* db = conn->dbname();
    std::string describe = absl::StrCat("postgresql://", user ? user : "", "@", host ? host : "", ":",
                                        port ? port : "", "/", db ? db : "");
    pqxx::work txn(*conn);
    txn.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))", lock_name_);
    txn.exec(schema_);
    txn.commit();
    conn_ = std::move(conn);
    describe_ = std::move(describe);
    return absl::OkStatus();
  } catch (...) {
    conn_.reset();
    // A refused or unreachable server at connect time is libpqxx's broken_connection too; the message tells which.
    return PostgresError(what);
  }
}

}  // namespace testshard::history

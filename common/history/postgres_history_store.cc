#include "common/history/postgres_history_store.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <pqxx/pqxx>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/history/postgres_connection.h"
#include "common/status.h"

namespace testshard::history {

namespace {

constexpr const char* kCreateTable = R"sql(
CREATE TABLE IF NOT EXISTS testshard_history (
  project    text NOT NULL,
  test_id    text NOT NULL,
  ewma_s     double precision NOT NULL,
  p90_s      double precision NOT NULL,
  recent_s   double precision[] NOT NULL,
  outcomes   text NOT NULL,
  last_seen  timestamptz NOT NULL,
  runs       bigint NOT NULL,
  PRIMARY KEY (project, test_id)
))sql";

std::string Double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string ArrayLiteral(const std::vector<double>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    out += Double(values[i]);
  }
  return out + "}";
}

// Rows of (test_id, ewma_s, p90_s, recent as "a,b,c", outcomes, last_seen in µs, runs).
constexpr const char* kColumns =
    "h.test_id, h.ewma_s, h.p90_s, array_to_string(h.recent_s, ','), h.outcomes, "
    "(extract(epoch from h.last_seen) * 1000000)::bigint, h.runs";

absl::StatusOr<std::vector<TestHistory>> Rows(const pqxx::result& result) {
  std::vector<TestHistory> out;
  out.reserve(result.size());
  for (const pqxx::row& row : result) {
    TestHistory h;
    h.test_id = row[0].c_str();
    h.ewma_s = std::strtod(row[1].c_str(), nullptr);
    h.p90_s = std::strtod(row[2].c_str(), nullptr);
    const char* p = row[3].c_str();
    while (*p) {
      char* end = nullptr;
      h.recent_s.push_back(std::strtod(p, &end));
      if (end == p) return absl::DataLossError("testshard_history: bad recent_s for '" + h.test_id + "'");
      p = *end == ',' ? end + 1 : end;
    }
    h.outcomes = row[4].c_str();
    h.last_seen = absl::FromUnixMicros(std::strtoll(row[5].c_str(), nullptr, 10));
    h.runs = std::strtoll(row[6].c_str(), nullptr, 10);
    out.push_back(std::move(h));
  }
  return out;
}

// Reads the project's rows for `ids` inside `txn`: the ids go in by COPY, not as a giant IN list.
absl::StatusOr<std::vector<TestHistory>> ReadIn(pqxx::work& txn, const std::string& project,
                                                const std::vector<std::string>& ids) {
  txn.exec("CREATE TEMP TABLE IF NOT EXISTS testshard_wanted (test_id text) ON COMMIT DROP");
  {
    pqxx::stream_to stream(txn, "testshard_wanted");
    for (const std::string& id : ids) stream << std::make_tuple(id);
    stream.complete();
  }
  return Rows(txn.exec_params(absl::StrCat("SELECT ", kColumns,
                                           " FROM testshard_history h JOIN testshard_wanted w USING (test_id) "
                                           "WHERE h.project = $1"),
                              project));
}

void WriteIn(pqxx::work& txn, const std::string& project, const std::vector<TestHistory>& records) {
  txn.exec(
      "CREATE TEMP TABLE IF NOT EXISTS testshard_incoming (test_id text, ewma_s float8, p90_s float8, "
      "recent_s float8[], outcomes text, last_seen_us bigint, runs bigint) ON COMMIT DROP");
  {
    pqxx::stream_to stream(txn, "testshard_incoming");
    for (const TestHistory& h : records) {
      stream << std::make_tuple(h.test_id, Double(h.ewma_s), Double(h.p90_s), ArrayLiteral(h.recent_s), h.outcomes,
                                std::to_string(absl::ToUnixMicros(h.last_seen)), std::to_string(h.runs));
    }
    stream.complete();
  }
  // DISTINCT ON keeps one row per id should a Put carry duplicates (the last one, as the other stores do).
  txn.exec_params(
      "INSERT INTO testshard_history "
      "SELECT DISTINCT ON (test_id) $1, test_id, ewma_s, p90_s, recent_s, outcomes, "
      "       timestamptz 'epoch' + last_seen_us * interval '1 microsecond', runs "
      "FROM (SELECT *, row_number() OVER () AS n FROM testshard_incoming) i ORDER BY test_id, n DESC "
      "ON CONFLICT (project, test_id) DO UPDATE SET ewma_s = EXCLUDED.ewma_s, p90_s = EXCLUDED.p90_s, "
      "recent_s = EXCLUDED.recent_s, outcomes = EXCLUDED.outcomes, last_seen = EXCLUDED.last_seen, "
      "runs = EXCLUDED.runs",
      project);
}

void LockProject(pqxx::work& txn, const std::string& project) {
  txn.exec_params("SELECT pg_advisory_xact_lock(hashtext('testshard_history'), hashtext($1))", project);
}

}  // namespace

PostgresHistoryStore::PostgresHistoryStore(std::string conninfo, HistoryOptions options)
    : options_(options), conn_(std::move(conninfo), "testshard_history", kCreateTable) {}

PostgresHistoryStore::~PostgresHistoryStore() = default;

absl::StatusOr<std::unique_ptr<PostgresHistoryStore>> PostgresHistoryStore::Connect(std::string conninfo,
                                                                                     HistoryOptions options) {
  std::unique_ptr<PostgresHistoryStore> store(new PostgresHistoryStore(std::move(conninfo), options));
  absl::MutexLock l(&store->mu_);
  TS_RETURN_IF_ERROR(store->conn_.EnsureConnected("opening the PostgreSQL history store"));
  return store;
}

std::string PostgresHistoryStore::Describe() const {
  // The conninfo may carry a password; describe the server without it.
  absl::MutexLock l(&mu_);
  return conn_.Describe();
}

absl::StatusOr<std::vector<TestHistory>> PostgresHistoryStore::Read(std::string_view project,
                                                                    const std::vector<std::string>& test_ids) {
  TS_RETURN_IF_ERROR(CheckProject(project));
  absl::MutexLock l(&mu_);
  TS_RETURN_IF_ERROR(conn_.EnsureConnected("opening the PostgreSQL history store"));
  try {
    pqxx::work txn(conn_.get());
    auto out = ReadIn(txn, std::string(project), test_ids);
    txn.commit();
    return out;
  } catch (...) {
    return PostgresError("reading the history");
  }
}

absl::StatusOr<std::vector<TestHistory>> PostgresHistoryStore::ReadAll(std::string_view project) {
  TS_RETURN_IF_ERROR(CheckProject(project));
  absl::MutexLock l(&mu_);
  TS_RETURN_IF_ERROR(conn_.EnsureConnected("opening the PostgreSQL history store"));
  try {
    pqxx::work txn(conn_.get());
    auto out = Rows(txn.exec_params(
        absl::StrCat("SELECT ", kColumns, " FROM testshard_history h WHERE h.project = $1"), std::string(project)));
    txn.commit();
    return out;
  } catch (...) {
    return PostgresError("reading the history");
  }
}

absl::Status PostgresHistoryStore::Update(std::string_view project_view, const std::vector<Sample>& samples) {
  TS_RETURN_IF_ERROR(CheckProject(project_view));
  const std::string project(project_view);
  std::vector<std::string> ids;
  {
    std::unordered_set<std::string_view> distinct;
    for (const Sample& s : samples) {
      if (s.outcome != Outcome::kNotRun && distinct.insert(s.test_id).second) ids.push_back(s.test_id);
    }
  }
  if (ids.empty()) return absl::OkStatus();
  absl::MutexLock l(&mu_);
  TS_RETURN_IF_ERROR(conn_.EnsureConnected("opening the PostgreSQL history store"));
  try {
    pqxx::work txn(conn_.get());
    LockProject(txn, project);
    TS_ASSIGN_OR_RETURN(std::vector<TestHistory> records, ReadIn(txn, project, ids));
    ApplySamples(records, samples, options_);
    WriteIn(txn, project, records);
    txn.commit();
    return absl::OkStatus();
  } catch (...) {
    return PostgresError("updating the history");
  }
}

absl::Status PostgresHistoryStore::Put(std::string_view project_view, const std::vector<TestHistory>& records) {
  TS_RETURN_IF_ERROR(CheckProject(project_view));
  if (records.empty()) return absl::OkStatus();
  const std::string project(project_view);
  absl::MutexLock l(&mu_);
  TS_RETURN_IF_ERROR(conn_.EnsureConnected("opening the PostgreSQL history store"));
  try {
    pqxx::work txn(conn_.get());
    LockProject(txn, project);
    WriteIn(txn, project, records);
    txn.commit();
    return absl::OkStatus();
  } catch (...) {
    return PostgresError("writing the history");
  }
}

}  // namespace testshard::history

#include "agent/handoff_monitor.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <set>
#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace testshard::agent {
namespace {

// Client backends only (not autovacuum, walwriter, ...), and not the monitor's own session.
constexpr char kSessionsQuery[] =
    "SELECT pid, coalesce(datname, ''), coalesce(usename, ''), coalesce(application_name, ''), "
    "coalesce(state, ''), left(coalesce(query, ''), 400), coalesce(client_port, -1), "
    "coalesce(extract(epoch FROM backend_start)::text, '') "
    "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()";

// Tables and views the suite can create; not the catalogs, toast or temporary schemas.
constexpr char kTablesQuery[] =
    "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

std::string Conninfo(const pg::Connection& c) {
  // The monitor's own sessions say whose they are, in pg_stat_activity and to other agents' monitors.
  return absl::StrCat(c.Conninfo(), " application_name='testshard handoff check' connect_timeout=10");
}

}  // namespace

struct HandoffMonitor::Sampler {
  // One connection kept open (a connection per sample would start a backend each time); re-made after an error.
  std::unique_ptr<pqxx::connection> conn;
  // Sessions (pid, backend_start) whose client was already looked up; ones found to be the agent's stay in the
  // ledger's seen(), so a lookup is never repeated.
  std::set<std::pair<int, std::string>> checked;
};

HandoffMonitor::HandoffMonitor(HandoffMonitorOptions options)
    : options_(std::move(options)), sampler_(std::make_unique<Sampler>()), ledger_(options_.identity) {}

absl::StatusOr<std::unique_ptr<HandoffMonitor>> HandoffMonitor::Start(HandoffMonitorOptions options) {
  if (!options.resolver) {
    options.resolver = std::make_unique<ProcfsClientResolver>(getpid(), options.admin.port);
  }
  try {
    pqxx::connection c(Conninfo(options.admin));
    pqxx::nontransaction tx(c);
    tx.exec(kSessionsQuery);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("the hand-off check cannot read pg_stat_activity: ", e.what()));
  }
  auto m = std::unique_ptr<HandoffMonitor>(new HandoffMonitor(std::move(options)));
  m->thread_ = std::thread([p = m.get()] { p->Loop(); });
  return m;
}

HandoffMonitor::~HandoffMonitor() { Stop(); }

void HandoffMonitor::Stop() {
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  absl::MutexLock l(&mu_);
  WriteLog();
}

void HandoffMonitor::Loop() {
  while (true) {
    {
      absl::MutexLock l(&mu_);
      sampling_ = true;
    }
    Sample();
    absl::MutexLock l(&mu_);
    sampling_ = false;
    ++samples_done_;
    auto wake = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || samples_wanted_ > samples_done_; };
    mu_.AwaitWithTimeout(absl::Condition(&wake), options_.interval);
    if (stopping_) return;
  }
}

void HandoffMonitor::Sample() {
  std::vector<ServerSession> sessions;
  std::string error;
  try {
    std::unique_ptr<pqxx::connection>& conn = sampler_->conn;
    if (!conn || !conn->is_open()) conn = std::make_unique<pqxx::connection>(Conninfo(options_.admin));
    pqxx::nontransaction tx(*conn);
    for (const pqxx::row& r : tx.exec(kSessionsQuery)) {
      ServerSession s;
      s.pid = r[0].as<int>();
      s.datname = r[1].c_str();
      s.usename = r[2].c_str();
      s.application_name = r[3].c_str();
      s.state = r[4].c_str();
      s.query = r[5].c_str();
      s.client_port = r[6].as<int>();
      s.backend_start = r[7].c_str();
      sessions.push_back(std::move(s));
    }
  } catch (const std::exception& e) {
    error = e.what();
    sampler_->conn.reset();
  }
  if (!error.empty()) {
    absl::MutexLock l(&mu_);
    if (error != last_error_) spdlog::warn("{}: hand-off check: {}", options_.identity.agent, error);
    last_error_ = error;
    return;
  }
  std::vector<ServerSession> unknown;
  {
    absl::MutexLock l(&mu_);
    unknown = ledger_.NeedOwner(sessions);
  }
  // Reading /proc and the socket table is done only for sessions nothing else identifies, once per session (its
  // client does not change), outside the lock.
  std::set<std::pair<int, std::string>>& checked = sampler_->checked;
  std::set<std::pair<int, std::string>> present;
  for (const ServerSession& s : sessions) present.emplace(s.pid, s.backend_start);
  for (auto it = checked.begin(); it != checked.end();) it = present.count(*it) ? std::next(it) : checked.erase(it);
  std::erase_if(unknown, [&](const ServerSession& s) { return !checked.emplace(s.pid, s.backend_start).second; });
  std::set<int> ours = unknown.empty() ? std::set<int>() : options_.resolver->Ours(unknown);
  absl::MutexLock l(&mu_);
  ledger_.Observe(sessions, ours);
}

absl::StatusOr<TableNames> HandoffMonitor::Tables(const std::string& database) const {
  try {
    pqxx::connection c(Conninfo(options_.admin.WithDb(database)));
    pqxx::nontransaction tx(c);
    TableNames out;
    for (const pqxx::row& r : tx.exec(kTablesQuery)) out.insert(r[0].c_str());
    return out;
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("listing the tables of ", database, ": ", e.what()));
  }
}

void HandoffMonitor::SetDatabase(const std::string& name) {
  bool fresh;
  {
    absl::MutexLock l(&mu_);
    ledger_.SetDatabase(name);
    fresh = !baselines_.count(name);
  }
  if (!fresh) return;
  auto tables = Tables(name);
  if (!tables.ok()) spdlog::warn("{}: hand-off check: {}", options_.identity.agent, ToStd(tables.status().message()));
  absl::MutexLock l(&mu_);
  baselines_[name] = tables.ok() ? *tables : TableNames();
}

void HandoffMonitor::SetStage(const std::string& stage) {
  absl::MutexLock l(&mu_);
  ledger_.SetStage(stage);
}

void HandoffMonitor::TestStarted(const std::string& test_id) {
  absl::MutexLock l(&mu_);
  ledger_.SetTest(test_id);
}

void HandoffMonitor::Result(const std::string& test_id, bool failed, const std::string& message) {
  absl::MutexLock l(&mu_);
  ledger_.Result(test_id, failed, message);
}

void HandoffMonitor::ProcessEnded(const std::string& cause) {
  std::string database;
  {
    absl::MutexLock l(&mu_);
    database = ledger_.database();
    ledger_.SetTest("");
  }
  if (database.empty()) return;
  auto tables = Tables(database);
  if (!tables.ok()) return;
  absl::MutexLock l(&mu_);
  TableNames left;
  const TableNames& baseline = baselines_[database];
  for (const std::string& t : *tables) {
    if (!baseline.count(t)) left.insert(t);
  }
  ledger_.Leftovers(left, cause);
}

void HandoffMonitor::Note(const std::string& message) {
  absl::MutexLock l(&mu_);
  ledger_.Note(message);
}

std::vector<HandoffFinding> HandoffMonitor::Flush() {
  absl::MutexLock l(&mu_);
  if (!stopping_) {
    // A sample already under way may have read the server before the caller's last event: wait for the next.
    int64_t target = samples_done_ + (sampling_ ? 2 : 1);
    samples_wanted_ = std::max(samples_wanted_, target);
    auto sampled = [this, target]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || samples_done_ >= target; };
    mu_.AwaitWithTimeout(absl::Condition(&sampled), absl::Seconds(5));
  }
  WriteLog();
  return ledger_.TakeFindings();
}

void HandoffMonitor::WriteLog() {
  if (options_.log_path.empty()) return;
  std::ofstream out(options_.log_path + ".tmp", std::ios::trunc);
  for (const auto& [pid, s] : ledger_.seen()) {
    nlohmann::json j = {{"backend_pid", pid},     {"database", s.datname}, {"user", s.usename},
                        {"application_name", s.application_name},      {"stage", s.stage},
                        {"test", s.test},         {"query", s.query},     {"tagged", s.tagged},
                        {"own", s.own}};
    out << j.dump() << "\n";
  }
  out.close();
  std::rename((options_.log_path + ".tmp").c_str(), options_.log_path.c_str());
}

}  // namespace testshard::agent

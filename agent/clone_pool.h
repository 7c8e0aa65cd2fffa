// Clones of one template kept ready, and used ones dropped, by a background thread, so handing a database to a
// shard is a lookup and a rename rather than a copy, and a drop (which forces a checkpoint) is never on a shard's
// path.
//
// The CREATE DATABASE strategy is chosen by measurement: it starts from the template's calibration (or the
// configured strategy, which is then kept), tracks each strategy's recent clone times, and tries the other one
// every kExploreEvery clones, so it follows what the server does under the run's real load.
#ifndef TESTSHARD_AGENT_CLONE_POOL_H_
#define TESTSHARD_AGENT_CLONE_POOL_H_

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/template_builder.h"
#include "common/postgres/sql_session.h"

namespace testshard::agent {

// What a clone does not inherit from its template: database-level grants and ALTER DATABASE ... SET settings.
struct CloneFixups {
  bool revoke_public = false;                                 // REVOKE ALL ON DATABASE ... FROM PUBLIC first
  std::vector<std::pair<std::string, std::string>> grants;    // grantee (a role, or "PUBLIC") -> privileges
  std::vector<std::pair<std::string, std::string>> settings;  // name -> value, for every role
  struct RoleSetting {
    std::string role, name, value;
  };
  std::vector<RoleSetting> role_settings;  // ALTER ROLE ... IN DATABASE ... SET

  bool empty() const { return !revoke_public && grants.empty() && settings.empty() && role_settings.empty(); }
  // One batch of statements (a single round trip, one implicit transaction) applying all of it to `db`. Values go
  // through set_config(), so they are parsed exactly as the server stored them (lists such as search_path too).
  std::string Sql(const std::string& db) const;
};

// Reads what `template_name` carries that a clone would lose (its datacl and pg_db_role_setting rows).
absl::StatusOr<CloneFixups> ReadTemplateFixups(pg::SqlSession& session, const std::string& template_name);

struct ClonePoolOptions {
  pg::Connection admin;
  std::string template_name;
  std::function<std::string(int64_t seq)> name;  // a clone's name while it waits in the pool
  CloneFixups fixups;
  int target = 2;                           // clones kept ready
  std::optional<CloneStrategy> forced;      // a configured strategy: never changed
  double file_copy_ms = 0, wal_log_ms = 0;  // the template's calibration; 0 = unknown
  // Run by the worker every `maintenance_interval` (first soon after Start), on the worker's session: the janitor
  // and template garbage collection.
  std::function<void(pg::SqlSession&)> maintenance;
  absl::Duration maintenance_interval = absl::Minutes(1);
  int max_drop_attempts = 8;
};

// Thread-safe. One worker thread, started by Start() and joined by Shutdown() or the destructor.
class ClonePool {
 public:
  static constexpr int kExploreEvery = 16;

  explicit ClonePool(ClonePoolOptions options);
  ~ClonePool();

  void Start();
  // Clones now on `session` (the caller's thread). The result is the caller's, not the pool's.
  absl::StatusOr<std::string> CloneNow(pg::SqlSession& session);
  // Hands a database the caller cloned to the pool, first in line.
  void Adopt(std::string name);
  // A ready clone, or nullopt when none is (the caller then uses CloneNow).
  std::optional<std::string> TryTake();
  // Queues `name` for DROP ... WITH (FORCE) in the background.
  void Drop(std::string name);
  // Clones to keep ready from now on.
  void SetTarget(int target);
  // Stops the worker, then drops the ready clones and what is queued, spending at most `budget`.
  void Shutdown(absl::Duration budget = absl::Seconds(15));

  struct Stats {
    int ready = 0;
    int pending_drops = 0;
    int64_t clones = 0;  // made by the worker or CloneNow
    int64_t drops = 0;
    int64_t drop_failures = 0;  // attempts that failed (retried later)
    double file_copy_ms = 0;    // recent average clone time per strategy (0 = none yet)
    double wal_log_ms = 0;
    CloneStrategy strategy = CloneStrategy::kFileCopy;  // the one the next clone would use, exploration aside
    std::string last_error;                             // the worker's last failure, "" when its last attempt worked
  };
  Stats stats() const;

 private:
  struct PendingDrop {
    std::string name;
    int attempts = 0;
    absl::Time not_before;
  };
  CloneStrategy NextStrategy() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  CloneStrategy BestStrategy() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Record(CloneStrategy s, absl::Duration took) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::string> Clone(pg::SqlSession& session, int64_t seq, CloneStrategy strategy);
  absl::Status DropOne(pg::SqlSession& session, const std::string& name);
  void Work();

  const ClonePoolOptions options_;
  std::thread worker_;

  mutable absl::Mutex mu_;
  std::deque<std::string> ready_ ABSL_GUARDED_BY(mu_);
  std::deque<PendingDrop> drops_ ABSL_GUARDED_BY(mu_);
  int target_ ABSL_GUARDED_BY(mu_);
  int64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t clones_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t drops_done_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t drop_failures_ ABSL_GUARDED_BY(mu_) = 0;
  double avg_ms_[2] ABSL_GUARDED_BY(mu_) = {0, 0};  // FILE_COPY, WAL_LOG
  int samples_[2] ABSL_GUARDED_BY(mu_) = {0, 0};
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_CLONE_POOL_H_

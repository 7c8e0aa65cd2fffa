// A throwaway PostgreSQL cluster for tests: initdb into a private directory (on tmpfs when there is room), a server
// listening on a unix socket in that directory (and loopback TCP when asked), settings for speed rather than
// durability, and everything removed on Stop(), on destruction, and - through a parent-death signal and a sweep of
// stale directories at the next start - after the owner was killed.
#ifndef TESTSHARD_COMMON_POSTGRES_EMBEDDED_POSTGRES_H_
#define TESTSHARD_COMMON_POSTGRES_EMBEDDED_POSTGRES_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/postgres/connection.h"
#include "common/postgres/sql_session.h"
#include "common/process.h"

namespace testshard::pg {

struct EmbeddedOptions {
  std::string bin_dir;     // empty: next to initdb on PATH, else `pg_config --bindir`, else /usr/lib/postgresql/*/bin
  std::string base_dir;    // empty: /dev/shm when it has room, else $TMPDIR or /tmp
  std::string run_as = "postgres";  // the unprivileged user the server runs as when we are root
  bool tcp = false;        // also listen on 127.0.0.1 at a free port
  int max_connections = 300;
  // Keep a copy of a fresh initdb next to the clusters (testshard-pgcache-<key>) and start later clusters from it.
  bool cache_initdb = true;
  // A project directory: start from the snapshot SaveSnapshot kept for it, when there is one, so the template
  // databases its earlier runs built come with the cluster. The snapshot goes once the directory is gone, or when
  // it is not among the 8 most recently used. Empty: start from a fresh initdb (the cache above).
  std::string snapshot;
  absl::Duration start_timeout = absl::Seconds(60);
};

// Not thread-safe. Start it from a thread that lives as long as the server should (see ProcessSpec).
class EmbeddedPostgres {
 public:
  static absl::StatusOr<std::unique_ptr<EmbeddedPostgres>> Start(const EmbeddedOptions& options);
  ~EmbeddedPostgres();

  // The superuser's connection to the `postgres` database, over the unix socket.
  Connection admin() const { return admin_; }
  // Loopback TCP connection, when started with tcp = true.
  std::optional<Connection> admin_tcp() const { return admin_tcp_; }
  const std::string& dir() const { return dir_; }
  pid_t server_pid() const { return server_ ? server_->pid() : -1; }
  absl::Duration startup_time() const { return startup_time_; }

  // OK while the server process runs; Unavailable with the tail of its log once it has died.
  absl::Status Health() const;

  // Fast shutdown, then removes the directory. Idempotent.
  absl::Status Stop();

  // For a cluster started with a snapshot name: keeps its template databases for the next start with that name.
  // When they differ from the ones it started with, every other database is dropped, the server is shut down and
  // the data directory is copied beside the initdb cache, replacing the older snapshot at once (a rename), so a
  // concurrent start sees the old one or the new one, never half of one. Stops the cluster either way.
  absl::Status SaveSnapshot();

  // Removes clusters left by owners that no longer run (found by the owner file in each directory: pid and process
  // start time, so a recycled pid does not keep a stale cluster, nor make a live one look stale).
  // Returns how many were removed.
  static int SweepStale(const std::string& base_dir);

 private:
  EmbeddedPostgres() = default;
  // Fast shutdown (SIGKILL after 10 s); the directory stays.
  void StopServer();
  // The cluster's template databases (other than template0/1), by name; `others` gets the rest but `postgres`.
  absl::StatusOr<std::vector<std::string>> Templates(SqlSession& s, std::vector<std::string>* others = nullptr) const;

  std::string dir_;
  std::string snapshot_;                   // the project directory the snapshot is for
  std::string snapshot_dir_;               // where SaveSnapshot writes; empty without a snapshot
  std::vector<std::string> templates_;     // the template databases the cluster started with
  Connection admin_;
  std::optional<Connection> admin_tcp_;
  std::optional<Subprocess> server_;
  absl::Duration startup_time_;
};

// The directory holding initdb and postgres, found as EmbeddedOptions::bin_dir describes.
absl::StatusOr<std::string> FindPostgresBinDir(const std::string& configured);

}  // namespace testshard::pg

#endif  // TESTSHARD_COMMON_POSTGRES_EMBEDDED_POSTGRES_H_

#include "common/postgres/embedded_postgres.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "common/postgres/sql_session.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace testshard::pg {
namespace {

namespace fs = std::filesystem;

constexpr char kDirPrefix[] = "testshard-pg-";
constexpr char kOwnerFile[] = "owner.pid";
constexpr char kCachePrefix[] = "testshard-pgcache-";
constexpr auto kCacheUnusedFor = std::chrono::hours(24 * 7);
constexpr char kSnapshotInfix[] = "-snap-";

bool HasServerBinaries(const fs::path& dir) {
  return access((dir / "initdb").c_str(), X_OK) == 0 && access((dir / "postgres").c_str(), X_OK) == 0;
}

std::string DefaultBaseDir() {
  // tmpfs makes clones and drops 3-8x faster (reference/postgres-isolation.md 6.2); use it when it has room.
  struct statvfs st;
  if (statvfs("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 &&
      static_cast<double>(st.f_bavail) * st.f_frsize > 2.0 * (1 << 30)) {
    return "/dev/shm";
  }
  const char* tmp = getenv("TMPDIR");
  return tmp && *tmp ? tmp : "/tmp";
}

absl::StatusOr<int> FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError("cannot find a free loopback port");
  }
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot. With the pid it names one
// process for the life of the machine, so a recycled pid is not mistaken for the owner. 0 when unreadable.
uint64_t ProcessStartTime(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  size_t paren = stat.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return 0;
  std::istringstream rest(stat.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  }
  return 0;
}

// Alive and not a zombie; and, when `start_time` is known, the same process that wrote it.
bool ProcessAlive(pid_t pid, uint64_t start_time = 0) {
  if (pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM)) return false;
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  size_t paren = stat.rfind(')');
  if (paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z') return false;
  return start_time == 0 || ProcessStartTime(pid) == start_time;
}

absl::Status RunQuiet(ProcessSpec spec, const std::string& what) {
  PosixProcessRunner runner;
  TS_ASSIGN_OR_RETURN(ProcessResult r, runner.Run(spec, nullptr));
  if (!r.ok()) {
    return absl::InternalError(
        absl::StrCat(what, " failed (", r.Describe(), "):\n", ReadTail(spec.stdout_path, 4096)));
  }
  return absl::OkStatus();
}

// What makes two initdb runs give the same cluster: the binaries (path, size, mtime), the arguments, the user.
std::string InitdbCacheKey(const std::vector<std::string>& argv, uid_t uid) {
  StableHasher h;
  h.Add("initdb-cache-1").Add(std::to_string(uid));
  for (size_t i = 0; i < argv.size(); ++i) {
    if (i > 0 && argv[i - 1] == "-D") continue;  // the target directory differs every time
    h.Add(argv[i]);
  }
  fs::path bin = fs::path(argv[0]).parent_path();
  for (const char* name : {"initdb", "postgres"}) {
    struct stat st {};
    if (stat((bin / name).c_str(), &st) == 0) {
      h.Add(std::to_string(st.st_size)).Add(std::to_string(st.st_mtim.tv_sec)).Add(std::to_string(st.st_ino));
    }
  }
  return h.Hex().substr(0, 16);
}

// Copies the data directory `data` to <dest>.tmp-<pid>/data and marks it complete with `what`; returns that
// directory, for the caller to rename into place (so nobody ever starts from half a copy).
absl::StatusOr<std::string> CopyBeside(const std::string& dest, const std::string& data, const std::string& what) {
  std::error_code ec;
  std::string tmp = absl::StrCat(dest, ".tmp-", getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  chmod(tmp.c_str(), 0700);
  ProcessSpec cp;
  cp.argv = {"cp", "-a", data, tmp + "/data"};
  absl::Status copied = RunQuiet(cp, absl::StrCat("copying ", data, " to ", tmp));
  if (!copied.ok()) {
    fs::remove_all(tmp, ec);
    return copied;
  }
  std::ofstream(tmp + "/complete") << what << "\n";
  return tmp;
}

// Copies a pristine data directory into the cache (atomically: a rename), and removes caches nobody used for a
// week (other PostgreSQL versions, say). Best effort: a failure only means the next start runs initdb.
void FillInitdbCache(const std::string& base, const std::string& cache, const std::string& data) {
  std::error_code ec;
  auto tmp = CopyBeside(cache, data, "initdb output, copied before the server first started");
  if (tmp.ok()) {
    fs::rename(*tmp, cache, ec);  // fails harmlessly when another start filled it first
    fs::remove_all(*tmp, ec);
  }
  for (const auto& e : fs::directory_iterator(base, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(kCachePrefix, 0) != 0 || e.path() == fs::path(cache)) continue;
    auto used = fs::last_write_time(e.path() / "complete", ec);
    if (ec || fs::file_time_type::clock::now() - used > kCacheUnusedFor) fs::remove_all(e.path(), ec);
  }
}

}  // namespace

absl::StatusOr<std::string> FindPostgresBinDir(const std::string& configured) {
  if (!configured.empty()) {
    if (HasServerBinaries(configured)) return configured;
    return absl::NotFoundError(absl::StrCat("no initdb and postgres in ", configured));
  }
  if (const char* path = getenv("PATH")) {
    std::string p = path;
    size_t start = 0;
    while (start <= p.size()) {
      size_t end = std::min(p.find(':', start), p.size());
      fs::path candidate = fs::path(p.substr(start, end - start)) / "initdb";
      std::error_code ec;
      if (!candidate.parent_path().empty() && fs::exists(candidate, ec)) {
        fs::path real = fs::canonical(candidate, ec).parent_path();
        if (!ec && HasServerBinaries(real)) return real.string();
      }
      start = end + 1;
    }
  }
  // pg_config --bindir, without a shell.
  char tmpl[] = "/tmp/ts-pgconfig-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd >= 0) {
    close(fd);
    ProcessSpec spec;
    spec.argv = {"pg_config", "--bindir"};
    spec.stdout_path = tmpl;
    PosixProcessRunner runner;
    auto r = runner.Run(spec, nullptr);
    std::string out = ReadTail(tmpl, 4096);
    unlink(tmpl);
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    if (r.ok() && r->ok() && HasServerBinaries(out)) return out;
  }
  std::vector<fs::path> versions;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    if (HasServerBinaries(e.path() / "bin")) versions.push_back(e.path() / "bin");
  }
  if (!versions.empty()) {
    std::sort(versions.begin(), versions.end(), [](const fs::path& a, const fs::path& b) {
      return std::atoi(a.parent_path().filename().c_str()) < std::atoi(b.parent_path().filename().c_str());
    });
    return versions.back().string();
  }
  return absl::NotFoundError(
      "PostgreSQL server binaries (initdb, postgres) not found on PATH, via pg_config, or in /usr/lib/postgresql; "
      "install the postgresql package (scripts/setup does) or set the bin directory");
}

int EmbeddedPostgres::SweepStale(const std::string& base_dir) {
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(base_dir, ec)) {
    if (e.path().filename().string().rfind(kDirPrefix, 0) != 0) continue;
    std::ifstream owner(e.path() / kOwnerFile);
    pid_t pid = 0;
    uint64_t started = 0;
    if (!(owner >> pid)) continue;
    owner >> started;  // absent in directories written before start times were recorded
    if (ProcessAlive(pid, started)) continue;
    // The owner is gone. Its server should have died with it (parent-death signal); make sure.
    std::ifstream pm(e.path() / "data" / "postmaster.pid");
    pid_t server = 0;
    if (pm >> server && ProcessAlive(server)) kill(server, SIGKILL);
    fs::remove_all(e.path(), ec);
    if (!ec) ++removed;
  }
  return removed;
}

namespace {

// Snapshots live in memory (/dev/shm) and a test suite makes one per temporary project: one whose project
// directory is gone goes at once, and beyond the newest few the least recently used go too.
void SweepSnapshots(const std::string& base) {
  constexpr size_t kKeep = 8;
  std::error_code ec;
  std::vector<std::pair<fs::file_time_type, fs::path>> kept;
  for (const auto& e : fs::directory_iterator(base, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(kCachePrefix, 0) != 0 || name.find(kSnapshotInfix) == std::string::npos) continue;
    std::ifstream in(e.path() / "project");
    std::string project;
    if (!std::getline(in, project)) continue;  // being written, or a leftover the week-old sweep removes
    std::error_code tec;
    auto used = fs::last_write_time(e.path() / "complete", tec);
    if (project.empty() || !fs::exists(project) || tec) {
      fs::remove_all(e.path(), ec);
    } else {
      kept.emplace_back(used, e.path());
    }
  }
  if (kept.size() <= kKeep) return;
  std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = kKeep; i < kept.size(); ++i) fs::remove_all(kept[i].second, ec);
}

}  // namespace

absl::StatusOr<std::unique_ptr<EmbeddedPostgres>> EmbeddedPostgres::Start(const EmbeddedOptions& options) {
  absl::Time began = absl::Now();
  TS_ASSIGN_OR_RETURN(std::string bin, FindPostgresBinDir(options.bin_dir));
  std::string base = options.base_dir.empty() ? DefaultBaseDir() : options.base_dir;
  if (!options.base_dir.empty()) {
    std::error_code mk;
    if (fs::create_directories(base, mk)) chmod(base.c_str(), 0755);  // the server's user must reach into it
  }
  SweepSnapshots(base);
  int swept = SweepStale(base);
  if (swept) spdlog::info("removed {} stale embedded PostgreSQL cluster(s) from {}", swept, base);

  std::string tmpl = absl::StrCat(base, "/", kDirPrefix, "XXXXXX");
  if (!mkdtemp(tmpl.data())) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create a directory in ", base, ": ", strerror(errno)));
  }
  std::unique_ptr<EmbeddedPostgres> pg(new EmbeddedPostgres());
  pg->dir_ = tmpl;
  std::ofstream(pg->dir_ + "/" + kOwnerFile) << getpid() << " " << ProcessStartTime(getpid()) << "\n";

  // initdb refuses to run as root: run the cluster as an unprivileged user and hand it the directory.
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  if (geteuid() == 0) {
    passwd* pw = getpwnam(options.run_as.c_str());
    if (!pw) pw = getpwnam("nobody");
    if (!pw) return absl::FailedPreconditionError("running as root, and no 'postgres' or 'nobody' user to run as");
    uid = pw->pw_uid;
    gid = pw->pw_gid;
    if (chown(pg->dir_.c_str(), *uid, *gid) != 0) {
      return absl::InternalError(absl::StrCat("chown ", pg->dir_, ": ", strerror(errno)));
    }
  }
  chmod(pg->dir_.c_str(), 0700);

  ProcessSpec init;
  init.argv = {bin + "/initdb", "-D", pg->dir_ + "/data", "-U", "postgres", "-A", "trust", "-E", "UTF8",
               "--locale=C", "--no-sync", "--no-instructions"};
  init.stdout_path = init.stderr_path = pg->dir_ + "/initdb.log";
  init.uid = uid;
  init.gid = gid;
  init.env["LC_ALL"] = "C";
  init.cwd = pg->dir_;
  // The log file is created by us (root) before the switch; make it writable for the server user.
  std::ofstream(init.stdout_path).close();
  if (uid) chown(init.stdout_path.c_str(), *uid, *gid);
  // initdb is most of the start-up (about 1 s idle, 4 s on a loaded machine); a copy of a pristine cluster made
  // by the same binaries with the same options, for the same user, is the same cluster in a tenth of the time.
  std::string cache;
  std::error_code ec;
  const std::string cache_key = InitdbCacheKey(init.argv, uid.value_or(geteuid()));
  if (options.cache_initdb) cache = absl::StrCat(base, "/", kCachePrefix, cache_key);
  if (!options.snapshot.empty()) {
    pg->snapshot_ = fs::absolute(options.snapshot).lexically_normal().string();
    // Made by the same binaries, options and user as the initdb cache, so it lives under the same key.
    pg->snapshot_dir_ = absl::StrCat(base, "/", kCachePrefix, cache_key, kSnapshotInfix,
                                     StableHasher().Add(pg->snapshot_).Hex().substr(0, 12));
  }
  auto copy_from = [&](const std::string& from) {
    if (from.empty() || !fs::exists(from + "/complete")) return false;
    ProcessSpec cp;
    cp.argv = {"cp", "-a", from + "/data", pg->dir_ + "/data"};
    cp.stdout_path = cp.stderr_path = init.stdout_path;
    bool ok = RunQuiet(cp, "copying the cached cluster").ok();
    if (!ok) fs::remove_all(pg->dir_ + "/data", ec);
    // Touched, so an unused cache can be told from a used one.
    fs::last_write_time(from + "/complete", fs::file_time_type::clock::now(), ec);
    return ok;
  };
  bool copied = copy_from(pg->snapshot_dir_) || copy_from(cache);
  if (!copied) {
    TS_RETURN_IF_ERROR(RunQuiet(init, "initdb"));
    if (!cache.empty()) FillInitdbCache(base, cache, pg->dir_ + "/data");
  }

  int port = 5432;  // the socket lives in our private directory, so the default port cannot collide
  if (options.tcp) {
    TS_ASSIGN_OR_RETURN(port, FreeLoopbackPort());
  }
  ProcessSpec server;
  server.argv = {bin + "/postgres", "-D", pg->dir_ + "/data", "-k", pg->dir_, "-p", std::to_string(port),
                 "-c", absl::StrCat("listen_addresses=", options.tcp ? "127.0.0.1" : ""),
                 // Durability off: a crashed test cluster is thrown away, never recovered.
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "wal_level=minimal", "-c", "max_wal_senders=0", "-c", "max_wal_size=4GB",
                 "-c", "checkpoint_timeout=1h", "-c", "shared_buffers=128MB",
                 "-c", absl::StrCat("max_connections=", options.max_connections),
                 "-c", "unix_socket_permissions=0777",
                 // Shared memory segments inside the data directory, so they go when it goes.
                 "-c", "dynamic_shared_memory_type=mmap", "-c", "logging_collector=off"};
  server.stdout_path = server.stderr_path = pg->dir_ + "/server.log";
  std::ofstream(server.stdout_path).close();
  if (uid) chown(server.stdout_path.c_str(), *uid, *gid);
  server.uid = uid;
  server.gid = gid;
  server.cwd = pg->dir_;
  server.env["LC_ALL"] = "C";
  // SIGQUIT is PostgreSQL's immediate shutdown: if we are killed, the server goes with us.
  server.parent_death_signal = SIGQUIT;
  TS_ASSIGN_OR_RETURN(Subprocess proc, Subprocess::Start(server));
  pg->server_.emplace(std::move(proc));

  pg->admin_.host = pg->dir_;
  pg->admin_.port = port;
  pg->admin_.user = "postgres";
  pg->admin_.dbname = "postgres";
  if (options.tcp) {
    Connection tcp = pg->admin_;
    tcp.host = "127.0.0.1";
    pg->admin_tcp_ = tcp;
  }
  std::string conninfo = pg->admin_.Conninfo();
  absl::Time deadline = absl::Now() + options.start_timeout;
  while (true) {
    if (PQping(conninfo.c_str()) == PQPING_OK) break;
    ProcessResult exited;
    if (pg->server_->Poll(&exited)) {
      return absl::InternalError(absl::StrCat("PostgreSQL server exited during start-up (", exited.Describe(),
                                              "):\n", ReadTail(server.stdout_path, 4096)));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("PostgreSQL server not ready after ",
                                                      absl::FormatDuration(options.start_timeout), ":\n",
                                                      ReadTail(server.stdout_path, 4096)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!pg->snapshot_dir_.empty()) {
    auto s = SqlSession::Open(pg->admin_, "testshard snapshot");
    auto templates = s.ok() ? pg->Templates(**s) : s.status();
    if (templates.ok()) pg->templates_ = *std::move(templates);
  }
  pg->startup_time_ = absl::Now() - began;
  return pg;
}

absl::StatusOr<std::vector<std::string>> EmbeddedPostgres::Templates(SqlSession& s,
                                                                     std::vector<std::string>* others) const {
  TS_ASSIGN_OR_RETURN(std::vector<Row> rows,
                      s.Query("SELECT datname, datistemplate::text FROM pg_database WHERE datname NOT IN "
                              "('template0', 'template1', 'postgres') ORDER BY datname"));
  std::vector<std::string> templates;
  for (const Row& r : rows) {
    if (r.at(1) == "true") {
      templates.push_back(r.at(0));
    } else if (others) {
      others->push_back(r.at(0));
    }
  }
  return templates;
}

absl::Status EmbeddedPostgres::SaveSnapshot() {
  if (snapshot_dir_.empty() || !server_) return Stop();
  {
    TS_ASSIGN_OR_RETURN(auto s, SqlSession::Open(admin_, "testshard snapshot"));
    std::vector<std::string> others;
    TS_ASSIGN_OR_RETURN(std::vector<std::string> templates, Templates(*s, &others));
    if (templates == templates_) return Stop();  // nothing new: the saved snapshot is still this cluster
    // Only templates are worth keeping: the run's own databases would be copied into every later cluster.
    for (const std::string& name : others) {
      TS_RETURN_IF_ERROR(s->Exec(absl::StrCat("DROP DATABASE ", QuoteIdent(name), " WITH (FORCE)")));
    }
  }
  // A fast shutdown ends with a checkpoint: the directory is then a clean cluster that starts without recovery.
  StopServer();
  std::error_code ec;
  auto tmp = CopyBeside(snapshot_dir_, dir_ + "/data", "the template databases of an earlier run, after a clean shutdown");
  absl::Status saved = tmp.status();
  if (tmp.ok()) {
    std::ofstream(*tmp + "/project") << snapshot_ << "\n";
    // rename() does not replace a non-empty directory: move the old snapshot aside first. A start in between
    // finds none and starts from initdb, which is merely slower.
    std::string old = absl::StrCat(snapshot_dir_, ".old-", getpid());
    fs::rename(snapshot_dir_, old, ec);
    fs::rename(*tmp, snapshot_dir_, ec);
    if (ec) {
      saved = absl::InternalError(absl::StrCat("cannot rename ", *tmp, " to ", snapshot_dir_, ": ", ec.message()));
    }
    fs::remove_all(*tmp, ec);
    fs::remove_all(old, ec);
  }
  absl::Status removed = Stop();
  return saved.ok() ? removed : saved;
}

absl::Status EmbeddedPostgres::Stop() {
  StopServer();
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot remove ", dir_, ": ", ec.message()));
    dir_.clear();
  }
  return absl::OkStatus();
}

void EmbeddedPostgres::StopServer() {
  if (server_) {
    // SIGINT is a fast shutdown: sessions are cut, nothing is flushed that we will not throw away anyway.
    server_->SignalGroup(SIGINT);
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    ProcessResult r;
    while (!server_->Poll(&r)) {
      if (absl::Now() > deadline) {
        server_->SignalGroup(SIGKILL);
        server_->Wait();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    server_.reset();
  }
}

absl::Status EmbeddedPostgres::Health() const {
  if (!server_) return absl::FailedPreconditionError("the embedded PostgreSQL server was stopped");
  if (ProcessAlive(server_->pid())) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("the embedded PostgreSQL server (pid ", server_->pid(), ", ", dir_,
                                             ") has died; its log ends:\n", ReadTail(dir_ + "/server.log", 4096)));
}

EmbeddedPostgres::~EmbeddedPostgres() {
  absl::Status s = Stop();
  if (!s.ok()) spdlog::warn("{}", ToStd(s.message()));
}

}  // namespace testshard::pg

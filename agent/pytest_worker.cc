#include "agent/pytest_worker.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr size_t kTailBytes = 8 * 1024;

Outcome ParseOutcome(const std::string& s) {
  if (s == "passed") return Outcome::kPassed;
  if (s == "failed") return Outcome::kFailed;
  if (s == "skipped") return Outcome::kSkipped;
  return Outcome::kError;
}

std::string Str(const json& m, const char* key) {
  auto it = m.find(key);
  return it != m.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::string DefaultPluginDir() {
  if (const char* env = getenv("TESTSHARD_PLUGIN_DIR"); env && *env) return env;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return (exe.parent_path().parent_path() / "share" / "testshard" / "python").string();
}

TestCase ResultFromMessage(const json& m) {
  TestCase tc;
  tc.id = Str(m, "id");
  PytestJunitNames(tc.id, &tc.classname, &tc.name);
  tc.result.outcome = ParseOutcome(Str(m, "outcome"));
  if (auto d = m.find("duration"); d != m.end() && d->is_number()) tc.result.time_s = d->get<double>();
  tc.result.message = Str(m, "message");
  tc.result.type = Str(m, "error_type");
  tc.result.details = Str(m, "details");
  tc.result.system_out = Str(m, "stdout");
  tc.result.system_err = Str(m, "stderr");
  if (auto p = m.find("properties"); p != m.end() && p->is_array()) {
    for (const json& kv : *p) {
      if (kv.is_array() && kv.size() == 2 && kv[0].is_string() && kv[1].is_string()) {
        tc.properties.emplace_back(kv[0].get<std::string>(), kv[1].get<std::string>());
      }
    }
  }
  return tc;
}

absl::StatusOr<std::unique_ptr<PytestWorker>> PytestWorker::Start(const WorkerOptions& options) {
  auto w = std::unique_ptr<PytestWorker>(new PytestWorker());
  std::error_code ec;
  fs::create_directories(options.scratch_dir, ec);
  w->socket_path_ = options.scratch_dir + "/worker.sock";
  w->log_path_ = options.scratch_dir + "/worker.log";
  sockaddr_un addr{};
  // A unix socket's path must fit sun_path (108 bytes). A checkout deep in the file system gets a private
  // directory in /tmp for it instead (mode 0700 from mkdtemp); without one the agent would have to give up its warm
  // worker and run one process per shard.
  std::string short_dir;
  if (w->socket_path_.size() >= sizeof(addr.sun_path)) {
    char tmpl[] = "/tmp/testshard-w-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      return absl::InternalError(absl::StrCat("socket path too long (", w->socket_path_,
                                              ") and no directory for it in /tmp: ", strerror(errno)));
    }
    short_dir = tmpl;
    w->socket_path_ = short_dir + "/worker.sock";
  }
  // Once the worker has connected (or failed to), the path has served its purpose.
  struct RemoveSocket {
    std::string path, dir;
    ~RemoveSocket() {
      unlink(path.c_str());
      if (!dir.empty()) rmdir(dir.c_str());
    }
  } remove_socket{w->socket_path_, short_dir};
  unlink(w->socket_path_.c_str());
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, w->socket_path_.c_str(), sizeof(addr.sun_path) - 1);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listener, 1) != 0) {
    int err = errno;
    close(listener);
    return absl::InternalError(absl::StrCat("cannot listen on ", w->socket_path_, ": ", strerror(err)));
  }

  ProcessSpec spec;
  spec.argv = options.command;
  // -p loads the plugin into the project's own pytest; no:cacheprovider keeps agents off a shared .pytest_cache.
  spec.argv.insert(spec.argv.end(), {"-p", "testshard_worker", "-p", "no:cacheprovider", "-q"});
  spec.cwd = options.cwd;
  spec.env = options.env;
  std::string pythonpath = options.plugin_dir;
  if (auto it = options.env.find("PYTHONPATH"); it != options.env.end() && !it->second.empty()) {
    pythonpath += ":" + it->second;
  } else if (const char* inherited = getenv("PYTHONPATH"); inherited && *inherited) {
    pythonpath += std::string(":") + inherited;
  }
  spec.env["PYTHONPATH"] = pythonpath;
  spec.env["TESTSHARD_WORKER_SOCKET"] = w->socket_path_;
  spec.stdout_path = spec.stderr_path = w->log_path_;
  // If the agent is killed, its worker goes too: a worker running on alone would run tests the coordinator has
  // already handed to another agent.
  spec.parent_death_signal = SIGKILL;
  auto proc = Subprocess::Start(spec);
  if (!proc.ok()) {
    close(listener);
    return proc.status();
  }
  w->process_.emplace(std::move(*proc));

  // Accept the worker's connection, or notice that pytest ended without making one.
  absl::Time deadline = absl::Now() + options.startup_timeout;
  while (w->fd_ < 0) {
    pollfd pfd{listener, POLLIN, 0};
    if (poll(&pfd, 1, 50) > 0) w->fd_ = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    ProcessResult r;
    if (w->fd_ < 0 && w->process_->Poll(&r)) {
      close(listener);
      w->exited_ = true;
      return absl::FailedPreconditionError(absl::StrCat("pytest ended before the worker plugin connected (",
                                                        r.Describe(), "):\n", ReadTail(w->log_path_, kTailBytes)));
    }
    if (w->fd_ < 0 && absl::Now() > deadline) {
      close(listener);
      return absl::DeadlineExceededError("pytest worker did not start in time:\n" + ReadTail(w->log_path_, kTailBytes));
    }
  }
  close(listener);

  // The first message says whether collection worked.
  while (true) {
    auto m = w->Read(std::max(absl::ZeroDuration(), deadline - absl::Now()));
    if (!m.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("pytest worker failed while collecting: ", m.status().message(),
                                                        "\n", ReadTail(w->log_path_, kTailBytes)));
    }
    if (!m->has_value()) return absl::DeadlineExceededError("pytest worker did not finish collecting in time");
    const json& msg = **m;
    std::string type = Str(msg, "type");
    if (type == "ready") {
      w->collected_ = msg.value("count", 0);
      return w;
    }
    if (type == "collect_error") {
      return absl::FailedPreconditionError(absl::StrCat("pytest collection failed:\n", Str(msg, "text")));
    }
  }
}

PytestWorker::~PytestWorker() {
  if (fd_ >= 0) close(fd_);
  // Subprocess's destructor kills the group of a worker still running.
}

absl::Status PytestWorker::Send(const json& message) {
  std::string line = message.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  size_t sent = 0;
  while (sent < line.size()) {
    ssize_t n = send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(absl::StrCat("pytest worker is gone (", strerror(errno), ")"));
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<json>> PytestWorker::Read(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      json m = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (m.is_discarded() || !m.is_object()) return absl::DataLossError("unreadable message from the pytest worker");
      return std::optional<json>(std::move(m));
    }
    int ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
    pollfd pfd{fd_, POLLIN, 0};
    int r = poll(&pfd, 1, ms);
    if (r == 0) return std::optional<json>();
    if (r < 0 && errno == EINTR) continue;
    char buf[64 * 1024];
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError("the pytest worker closed its connection");
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

absl::StatusOr<std::vector<std::string>> PytestWorker::Select(const std::string& markers,
                                                              const std::string& group_marker,
                                                              std::vector<std::string>* groups) {
  json request = {{"type", "select"}, {"markers", markers}};
  if (!group_marker.empty() && groups) request["group_marker"] = group_marker;
  TS_RETURN_IF_ERROR(Send(request));
  while (true) {
    TS_ASSIGN_OR_RETURN(auto m, Read(absl::Minutes(5)));
    if (!m) return absl::DeadlineExceededError("pytest worker did not answer a selection");
    std::string type = Str(*m, "type");
    if (type == "selected") {
      std::vector<std::string> ids = (*m)["ids"].get<std::vector<std::string>>();
      if (groups) {
        groups->clear();
        // A plugin too old to know groups answers without them: the stage is then planned by granularity only.
        if (m->contains("groups") && (*m)["groups"].is_array() && (*m)["groups"].size() == ids.size()) {
          *groups = (*m)["groups"].get<std::vector<std::string>>();
        }
      }
      return ids;
    }
    if (type == "select_error") return absl::FailedPreconditionError(Str(*m, "text"));
  }
}

absl::Status PytestWorker::Run(const std::vector<std::string>& ids) { return Send({{"type", "run"}, {"ids", ids}}); }

absl::Status PytestWorker::Flush() { return Send({{"type", "flush"}}); }

WorkerEvent PytestWorker::Exited() {
  WorkerEvent e;
  e.kind = WorkerEvent::kExited;
  if (!exited_) {
    // The socket closed: the process is ending or already gone. Make sure, and collect how it ended.
    absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (!process_->Poll(&e.exit) && absl::Now() < deadline) usleep(10000);
    if (!process_->Poll(&e.exit)) {
      process_->SignalGroup(SIGKILL);
      e.exit = process_->Wait();
    }
    exited_ = true;
  }
  return e;
}

std::optional<WorkerEvent> PytestWorker::Next(absl::Duration timeout) {
  if (exited_) return Exited();
  auto m = Read(timeout);
  if (!m.ok()) return Exited();
  if (!m->has_value()) return std::nullopt;
  const json& msg = **m;
  std::string type = Str(msg, "type");
  WorkerEvent e;
  e.id = Str(msg, "id");
  if (type == "start") {
    e.kind = WorkerEvent::kStart;
  } else if (type == "result") {
    e.kind = WorkerEvent::kResult;
    e.result = ResultFromMessage(msg);
  } else if (type == "unknown") {
    e.kind = WorkerEvent::kUnknown;
  } else {
    return std::nullopt;  // nothing the agent acts on
  }
  return e;
}

void PytestWorker::Stop(absl::Duration grace) {
  if (exited_) return;
  if (Send({{"type", "stop"}}).ok()) {
    absl::Time deadline = absl::Now() + grace;
    ProcessResult r;
    while (!process_->Poll(&r)) {
      if (absl::Now() > deadline) break;
      usleep(10000);
    }
  }
  Kill();
}

void PytestWorker::Kill() {
  if (!exited_) {
    process_->SignalGroup(SIGKILL);
    process_->Wait();
    exited_ = true;
  }
}

}  // namespace testshard::agent

#include "common/process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace testshard {
namespace {

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// Everything the child needs, prepared before fork: after fork only async-signal-safe calls are allowed.
struct ExecPlan {
  std::vector<std::string> argv_storage, env_storage;
  std::vector<char*> argv, envp;
};

ExecPlan MakePlan(const ProcessSpec& spec) {
  ExecPlan p;
  p.argv_storage = spec.argv;
  std::set<std::string> overridden;
  for (const auto& [k, v] : spec.env) overridden.insert(k);
  for (const std::string& k : spec.unset_env) overridden.insert(k);
  if (spec.inherit_env) {
    for (char** e = environ; e && *e; ++e) {
      std::string entry(*e);
      std::string key = entry.substr(0, entry.find('='));
      if (!overridden.count(key)) p.env_storage.push_back(std::move(entry));
    }
  }
  for (const auto& [k, v] : spec.env) p.env_storage.push_back(k + "=" + v);
  for (std::string& s : p.argv_storage) p.argv.push_back(s.data());
  p.argv.push_back(nullptr);
  for (std::string& s : p.env_storage) p.envp.push_back(s.data());
  p.envp.push_back(nullptr);
  return p;
}

// Finds argv[0] on the PATH the child will see, like execvp but with the child's environment.
std::string Resolve(const ProcessSpec& spec) {
  const std::string& name = spec.argv[0];
  if (name.find('/') != std::string::npos) return name;
  std::string path;
  auto it = spec.env.find("PATH");
  if (it != spec.env.end()) {
    path = it->second;
  } else if (const char* p = getenv("PATH")) {
    path = p;
  } else {
    path = "/usr/local/bin:/usr/bin:/bin";
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return name;
}

[[noreturn]] void ChildFail(int fd, int err) {
  (void)!write(fd, &err, sizeof err);
  _exit(127);
}

void OpenOnto(const std::string& path, int target, int flags, int report_fd) {
  int fd = open(path.empty() ? "/dev/null" : path.c_str(), flags, 0644);
  if (fd < 0) ChildFail(report_fd, errno);
  if (fd != target) {
    if (dup2(fd, target) < 0) ChildFail(report_fd, errno);
    close(fd);
  }
}

}  // namespace

std::string ProcessResult::Describe() const {
  if (timed_out) return absl::StrCat("timed out after ", absl::FormatDuration(wall));
  if (cancelled) return "cancelled";
  if (term_signal) return absl::StrCat("killed by signal ", term_signal, " (", strsignal(term_signal), ")");
  return absl::StrCat("exit code ", exit_code);
}

absl::StatusOr<Subprocess> Subprocess::Start(const ProcessSpec& spec) {
  if (spec.argv.empty()) return absl::InvalidArgumentError("empty argv");
  ExecPlan plan = MakePlan(spec);
  std::string exe = Resolve(spec);
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  bool same_out = !spec.stdout_path.empty() && spec.stdout_path == spec.stderr_path;
  const int out_flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;

  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(report[0]);
    close(report[1]);
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", strerror(err)));
  }
  if (pid == 0) {
    // Child: its own process group (and session), so the whole tree can be signalled at once.
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGQUIT}) signal(sig, SIG_DFL);
    OpenOnto(spec.stdin_path, 0, O_RDONLY | O_CLOEXEC, report[1]);
    OpenOnto(spec.stdout_path, 1, out_flags, report[1]);
    if (same_out) {
      if (dup2(1, 2) < 0) ChildFail(report[1], errno);
    } else {
      OpenOnto(spec.stderr_path, 2, out_flags, report[1]);
    }
    if (!spec.cwd.empty() && chdir(spec.cwd.c_str()) != 0) ChildFail(report[1], errno);
    if (spec.gid && (setgroups(0, nullptr) != 0 || setgid(*spec.gid) != 0)) ChildFail(report[1], errno);
    if (spec.uid && setuid(*spec.uid) != 0) ChildFail(report[1], errno);
    // Set after the credential change, which would clear it.
    if (spec.parent_death_signal) prctl(PR_SET_PDEATHSIG, spec.parent_death_signal);
    execve(exe.c_str(), plan.argv.data(), plan.envp.data());
    ChildFail(report[1], errno);
  }
  close(report[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(report[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  Subprocess p;
  p.pid_ = pid;
  p.started_ = absl::Now();
  p.timeout_ = spec.timeout;
  p.kill_grace_ = spec.kill_grace;
  if (n > 0) {
    int status;
    waitpid(pid, &status, 0);
    p.reaped_ = true;
    std::string what = absl::StrCat("cannot start ", spec.argv[0], ": ", strerror(child_errno));
    if (child_errno == ENOENT) return absl::NotFoundError(what);
    return absl::FailedPreconditionError(what);
  }
  p.pidfd_ = PidfdOpen(pid);
  return p;
}

Subprocess::Subprocess(Subprocess&& o) noexcept { *this = std::move(o); }

Subprocess& Subprocess::operator=(Subprocess&& o) noexcept {
  std::swap(pid_, o.pid_);
  std::swap(pidfd_, o.pidfd_);
  std::swap(reaped_, o.reaped_);
  started_ = o.started_;
  timeout_ = o.timeout_;
  kill_grace_ = o.kill_grace_;
  return *this;
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !reaped_) {
    kill(-pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
  if (pidfd_ >= 0) close(pidfd_);
}

void Subprocess::SignalGroup(int sig) {
  if (pid_ > 0 && !reaped_) kill(-pid_, sig);
}

void Subprocess::Reap(int status, ProcessResult* result) {
  reaped_ = true;
  // The leader is gone; anything it left in its group goes too.
  kill(-pid_, SIGKILL);
  result->wall = absl::Now() - started_;
  if (WIFEXITED(status)) {
    result->exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result->term_signal = WTERMSIG(status);
  }
}

bool Subprocess::Poll(ProcessResult* result) {
  if (reaped_) return true;
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r != pid_) return false;
  Reap(status, result);
  return true;
}

ProcessResult Subprocess::Wait(const Cancellation* cancel) {
  ProcessResult result;
  enum { kRunning, kTermSent, kKillSent } stage = kRunning;
  absl::Time kill_at;
  while (true) {
    if (Poll(&result)) return result;
    absl::Time now = absl::Now();
    if (stage == kRunning) {
      bool timed_out = timeout_ > absl::ZeroDuration() && now - started_ >= timeout_;
      bool cancelled = cancel && cancel->cancelled();
      if (timed_out || cancelled) {
        result.timed_out = timed_out;
        result.cancelled = cancelled && !timed_out;
        SignalGroup(SIGTERM);
        stage = kTermSent;
        kill_at = now + kill_grace_;
      }
    } else if (stage == kTermSent && now >= kill_at) {
      SignalGroup(SIGKILL);
      stage = kKillSent;
    }
    // Sleep until the child exits or the next check (cancel is polled, so keep the interval short).
    if (pidfd_ >= 0) {
      pollfd pfd{pidfd_, POLLIN, 0};
      poll(&pfd, 1, 20);
    } else {
      usleep(5000);
    }
  }
}

absl::StatusOr<ProcessResult> PosixProcessRunner::Run(const ProcessSpec& spec, const Cancellation* cancel) {
  auto p = Subprocess::Start(spec);
  if (!p.ok()) return p.status();
  return p->Wait(cancel);
}

std::string ReadTail(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "";
  std::streamoff size = in.tellg();
  std::streamoff start = size > static_cast<std::streamoff>(max_bytes) ? size - max_bytes : 0;
  in.seekg(start);
  std::string data(static_cast<size_t>(size - start), '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (start > 0) {
    size_t nl = data.find('\n');
    if (nl != std::string::npos && nl + 1 < data.size()) data.erase(0, nl + 1);
  }
  return data;
}

}  // namespace testshard

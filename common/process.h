// Child processes started from an argv list, never through a shell, each in its own process group so that a
// timeout or a cancel kills everything it started.
#ifndef TESTSHARD_COMMON_PROCESS_H_
#define TESTSHARD_COMMON_PROCESS_H_

#include <sys/types.h>

#include <atomic>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace testshard {

struct ProcessSpec {
  std::vector<std::string> argv;          // argv[0] is looked up on PATH when it has no '/'
  std::string cwd;                        // empty = inherit
  std::map<std::string, std::string> env;  // set on top of the inherited environment (or alone, see below)
  bool inherit_env = true;
  std::vector<std::string> unset_env;     // removed from the inherited environment
  std::string stdout_path;                // file to write; empty = /dev/null
  std::string stderr_path;                // file to write; may equal stdout_path; empty = /dev/null
  std::string stdin_path;                 // empty = /dev/null
  std::optional<uid_t> uid;               // switch to this user (and gid) before exec; needs root
  std::optional<gid_t> gid;
  // The child gets `parent_death_signal` when the thread that started it exits (so a server started for a run
  // dies with the run even after kill -9). Start such children from a thread that lives as long as they should.
  int parent_death_signal = 0;
  absl::Duration timeout = absl::ZeroDuration();  // zero = none
  absl::Duration kill_grace = absl::Seconds(2);   // SIGTERM to SIGKILL, on timeout or cancel
};

struct ProcessResult {
  int exit_code = -1;       // valid when term_signal == 0
  int term_signal = 0;      // the signal that ended it, 0 if it exited
  bool timed_out = false;
  bool cancelled = false;
  absl::Duration wall;
  bool ok() const { return term_signal == 0 && exit_code == 0 && !timed_out && !cancelled; }
  std::string Describe() const;  // "exit code 1", "killed by signal 9", "timed out after 30s"
};

// Set from any thread to stop a running child: it gets SIGTERM, then SIGKILL after the grace period.
class Cancellation {
 public:
  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::atomic<bool> cancelled_{false};
};

// A started child. Not copyable; the destructor kills the process group of a child still running and reaps it.
// One thread at a time may call its methods.
class Subprocess {
 public:
  static absl::StatusOr<Subprocess> Start(const ProcessSpec& spec);
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  // Waits for the child to exit, enforcing the spec's timeout and `cancel` (may be null). Kills the whole process
  // group once the leader is gone, so nothing it started outlives it.
  ProcessResult Wait(const Cancellation* cancel = nullptr);
  // Non-blocking: true (and *result filled) when the child has exited.
  bool Poll(ProcessResult* result);
  // Sends `sig` to the child's process group.
  void SignalGroup(int sig);

 private:
  Subprocess() = default;
  void Reap(int status, ProcessResult* result);

  pid_t pid_ = -1;
  int pidfd_ = -1;
  absl::Time started_;
  absl::Duration timeout_;
  absl::Duration kill_grace_;
  bool reaped_ = false;
};

// The seam for running children; tests substitute fakes for processes that must misbehave at an exact moment.
// Thread-safe.
class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  // Runs to completion (or timeout, or cancel). An error status means it could not be started at all.
  virtual absl::StatusOr<ProcessResult> Run(const ProcessSpec& spec, const Cancellation* cancel) = 0;
};

class PosixProcessRunner final : public ProcessRunner {
 public:
  absl::StatusOr<ProcessResult> Run(const ProcessSpec& spec, const Cancellation* cancel) override;
};

// The last `max_bytes` of a file, starting at a line boundary where possible; "" if unreadable.
std::string ReadTail(const std::string& path, size_t max_bytes);

}  // namespace testshard

#endif  // TESTSHARD_COMMON_PROCESS_H_

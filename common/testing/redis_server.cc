#include "common/testing/redis_server.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace testshard::testing {
namespace {

bool CanConnect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(const std::string& extra_config) {
  char tmpl[] = "/tmp/testshard-redis-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  std::unique_ptr<RedisServer> server(new RedisServer());
  server->dir_ = tmpl;
  server->socket_path_ = server->dir_ + "/redis.sock";
  const std::string config_path = server->dir_ + "/redis.conf";
  const std::string log_path = server->dir_ + "/redis.log";
  {
    std::ofstream conf(config_path);
    conf << "port 0\n"  // no TCP listener at all
         << "unixsocket " << server->socket_path_ << "\n"
         << "unixsocketperm 700\n"
         << "dir " << server->dir_ << "\n"
         << "save \"\"\n"
         << "appendonly no\n"
         << "daemonize no\n"
         << "logfile " << log_path << "\n"
         << extra_config << "\n";
    if (!conf) return absl::InternalError("cannot write " + config_path);
  }
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the test died before prctl took effect
    ::execlp("redis-server", "redis-server", config_path.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  server->pid_ = pid;
  // Readiness, not time, is what we wait for: the socket accepting, or the child dying.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!CanConnect(server->socket_path_)) {
    int wstatus = 0;
    if (::waitpid(pid, &wstatus, WNOHANG) == pid) {
      server->pid_ = -1;
      return absl::UnavailableError(absl::StrCat("redis-server exited (status ", wstatus,
                                                 ") before it was ready; log: ", ReadFile(log_path)));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError("redis-server did not open its socket in 20 s; log: " + ReadFile(log_path));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return server;
}

RedisServer::~RedisServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int wstatus = 0;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (::waitpid(pid_, &wstatus, WNOHANG) == 0) {
      if (absl::Now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &wstatus, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

}  // namespace testshard::testing

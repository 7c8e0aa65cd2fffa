#include "agent/client_sockets.h"

#include <dirent.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace testshard::agent {
namespace {

std::vector<pid_t> AllPids() {
  std::vector<pid_t> pids;
  DIR* d = opendir("/proc");
  if (!d) return pids;
  while (dirent* e = readdir(d)) {
    int pid = 0;
    if (absl::SimpleAtoi(e->d_name, &pid) && pid > 0) pids.push_back(pid);
  }
  closedir(d);
  return pids;
}

// The parent pid from /proc/<pid>/stat: the field after the command, which is in parentheses and may hold anything.
pid_t ParentOf(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(stat.substr(close + 1));
  std::string state;
  pid_t ppid = -1;
  rest >> state >> ppid;
  return ppid;
}

}  // namespace

std::set<pid_t> Descendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;
  for (pid_t pid : AllPids()) children.emplace(ParentOf(pid), pid);
  std::set<pid_t> out;
  std::vector<pid_t> todo = {root};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    auto [b, e] = children.equal_range(p);
    for (auto it = b; it != e; ++it) {
      if (out.insert(it->second).second) todo.push_back(it->second);
    }
  }
  return out;
}

std::set<uint64_t> SocketInodes(pid_t pid) {
  std::set<uint64_t> out;
  std::string dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  char target[64];
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    uint64_t inode = 0;
    if (std::strncmp(target, "socket:[", 8) == 0 &&
        absl::SimpleAtoi(absl::string_view(target + 8, static_cast<size_t>(n) - 9), &inode)) {
      out.insert(inode);
    }
  }
  closedir(d);
  return out;
}

std::map<int, uint64_t> TcpClientSockets(int server_port) {
  std::map<int, uint64_t> out;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      std::istringstream f(line);
      std::string sl, local, remote, st, queues, timer, retr, uid, timeout;
      uint64_t inode = 0;
      if (!(f >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode)) continue;
      size_t lc = local.rfind(':'), rc = remote.rfind(':');
      if (lc == std::string::npos || rc == std::string::npos) continue;
      int local_port = static_cast<int>(std::strtol(local.c_str() + lc + 1, nullptr, 16));
      int remote_port = static_cast<int>(std::strtol(remote.c_str() + rc + 1, nullptr, 16));
      if (remote_port == server_port && inode != 0) out[local_port] = inode;
    }
  }
  return out;
}

absl::StatusOr<std::map<uint64_t, uint64_t>> UnixPeers() {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("sock_diag socket: ", strerror(errno)));
  struct {
    nlmsghdr nlh;
    unix_diag_req req;
  } request{};
  request.nlh.nlmsg_len = sizeof request;
  request.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  request.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.req.sdiag_family = AF_UNIX;
  request.req.udiag_states = ~0u;
  request.req.udiag_show = UDIAG_SHOW_PEER;
  if (send(fd, &request, sizeof request, 0) < 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("sock_diag request: ", strerror(err)));
  }
  std::map<uint64_t, uint64_t> peers;
  alignas(nlmsghdr) char buf[64 * 1024];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    int len = static_cast<int>(n);
    for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        close(fd);
        return peers;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        close(fd);
        return absl::UnavailableError("sock_diag refused the unix socket dump");
      }
      auto* m = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
      int attr_len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
      for (rtattr* a = reinterpret_cast<rtattr*>(m + 1); RTA_OK(a, attr_len); a = RTA_NEXT(a, attr_len)) {
        if (a->rta_type == UNIX_DIAG_PEER) peers[m->udiag_ino] = *static_cast<uint32_t*>(RTA_DATA(a));
      }
    }
  }
  close(fd);
  return peers;
}

ProcfsClientResolver::ProcfsClientResolver(pid_t root, int server_port) : root_(root), server_port_(server_port) {}

std::set<int> ProcfsClientResolver::Ours(const std::vector<ServerSession>& sessions) {
  std::set<int> ours;
  if (sessions.empty()) return ours;
  // A child between fork and exec still holds copies of the agent's own sockets (its clone pool's, its
  // monitor's): those are the agent's sessions, not its tests'. Seen in a run, once in a few: the clone pool's
  // GRANT in the maintenance database was reported as the tests working in the wrong database.
  const std::set<uint64_t> roots = SocketInodes(root_);
  std::set<uint64_t> mine;
  for (pid_t pid : Descendants(root_)) {
    for (uint64_t inode : SocketInodes(pid)) {
      if (!roots.count(inode)) mine.insert(inode);
    }
  }
  if (mine.empty()) return ours;
  bool any_tcp = false, any_unix = false;
  for (const ServerSession& s : sessions) (s.client_port >= 0 ? any_tcp : any_unix) = true;
  if (any_tcp) {
    std::map<int, uint64_t> tcp = TcpClientSockets(server_port_);
    for (const ServerSession& s : sessions) {
      auto it = s.client_port >= 0 ? tcp.find(s.client_port) : tcp.end();
      if (it != tcp.end() && mine.count(it->second)) ours.insert(s.pid);
    }
  }
  if (any_unix) {
    auto peers = UnixPeers();
    if (peers.ok()) {
      for (const ServerSession& s : sessions) {
        if (s.client_port >= 0) continue;
        for (uint64_t inode : SocketInodes(s.pid)) {
          auto it = peers->find(inode);
          if (it != peers->end() && mine.count(it->second)) {
            ours.insert(s.pid);
            break;
          }
        }
      }
    }
  }
  return ours;
}

}  // namespace testshard::agent

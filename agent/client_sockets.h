// Which local process holds the client end of a PostgreSQL server session: the part of the hand-off check that
// recognises an agent's test processes when their sessions carry no application_name of ours (asyncpg ignores
// PGAPPNAME; a suite may set its own name).
//
// Linux only, from /proc and the kernel's socket diagnostics: a TCP session is matched by its client port
// (pg_stat_activity.client_port) to a socket in /proc/net/tcp{,6}; a unix-socket session by the peer of the server
// backend's socket (NETLINK_SOCK_DIAG, as `ss -xp` does), which needs read access to the backend's /proc/<pid>/fd
// (the same user, or root). A process is the agent's when it descends from the agent's process.
#ifndef TESTSHARD_AGENT_CLIENT_SOCKETS_H_
#define TESTSHARD_AGENT_CLIENT_SOCKETS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/handoff_check.h"

namespace testshard::agent {

// Seam for the hand-off check. Called from the monitor's thread only.
class ClientResolver {
 public:
  virtual ~ClientResolver() = default;
  // The backend pids among `sessions` whose client is one of the agent's processes. Sessions it cannot tell
  // about (no permission, a remote server) are left out.
  virtual std::set<int> Ours(const std::vector<ServerSession>& sessions) = 0;
};

// The real one. `root` is the process whose descendants count as the agent's (its own sessions do not);
// `server_port` is the server's TCP port, to tell a session's client socket from the server's.
class ProcfsClientResolver final : public ClientResolver {
 public:
  ProcfsClientResolver(pid_t root, int server_port);
  std::set<int> Ours(const std::vector<ServerSession>& sessions) override;

 private:
  const pid_t root_;
  const int server_port_;
};

// Building blocks, exposed for tests.
// Every descendant of `root` (not `root` itself), from /proc/*/stat.
std::set<pid_t> Descendants(pid_t root);
// The socket inodes a process holds open (from /proc/<pid>/fd); empty when it cannot be read.
std::set<uint64_t> SocketInodes(pid_t pid);
// TCP client port -> socket inode, for connections whose remote port is `server_port` (IPv4 and IPv6).
std::map<int, uint64_t> TcpClientSockets(int server_port);
// Unix socket inode -> the inode of its peer, for every connected unix socket on the machine.
absl::StatusOr<std::map<uint64_t, uint64_t>> UnixPeers();

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_CLIENT_SOCKETS_H_

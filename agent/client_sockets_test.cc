// The hand-off check's process lookup against a real server: a child of this process connects over the unix socket
// and over TCP without any application_name, and the resolver finds both its sessions - and not this process's own.
#include "agent/client_sockets.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/postgres/embedded_postgres.h"
#include "common/process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;

constexpr char kClient[] = R"PY(
import sys, time, psycopg2
a = psycopg2.connect(sys.argv[1])
b = psycopg2.connect(sys.argv[2])
for c in (a, b):
    c.cursor().execute("SELECT 1")
open(sys.argv[3], "w").write("%d %d" % (a.get_backend_pid(), b.get_backend_pid()))
time.sleep(60)
)PY";

std::vector<ServerSession> Sessions(const pg::Connection& admin) {
  pqxx::connection c(admin.Conninfo());
  pqxx::nontransaction tx(c);
  std::vector<ServerSession> out;
  for (const pqxx::row& r : tx.exec("SELECT pid, coalesce(datname, ''), coalesce(client_port, -1) "
                                    "FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                    "AND pid <> pg_backend_pid()")) {
    ServerSession s;
    s.pid = r[0].as<int>();
    s.datname = r[1].c_str();
    s.client_port = r[2].as<int>();
    out.push_back(s);
  }
  return out;
}

TEST(ClientSocketsTest, DescendantsAreFoundThroughProc) {
  ProcessSpec spec;
  spec.argv = {"/bin/sleep", "30"};
  auto child = Subprocess::Start(spec);
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_TRUE(Descendants(getpid()).count(child->pid()));
  EXPECT_FALSE(Descendants(child->pid()).count(getpid()));
  child->SignalGroup(SIGKILL);
  child->Wait();
}

TEST(ClientSocketsTest, FindsAChildsSocketAndTcpSessionsButNotOurOwn) {
  pg::EmbeddedOptions o;
  o.tcp = true;
  auto pg = pg::EmbeddedPostgres::Start(o);
  ASSERT_TRUE(pg.ok()) << pg.status();
  pg::Connection socket = (*pg)->admin();
  pg::Connection tcp = *(*pg)->admin_tcp();

  std::string dir = (*pg)->dir() + "/client";
  fs::create_directories(dir);
  std::ofstream(dir + "/client.py") << kClient;
  ProcessSpec spec;
  spec.argv = {"/usr/bin/python3", dir + "/client.py", socket.Url(), tcp.Url(), dir + "/pids"};
  spec.stderr_path = dir + "/err";
  auto child = Subprocess::Start(spec);
  ASSERT_TRUE(child.ok()) << child.status();
  for (int i = 0; i < 300 && !fs::exists(dir + "/pids"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(fs::exists(dir + "/pids")) << std::ifstream(dir + "/err").rdbuf();
  int socket_backend = 0, tcp_backend = 0;
  std::ifstream(dir + "/pids") >> socket_backend >> tcp_backend;

  pqxx::connection mine(socket.Conninfo());  // this process's own session: not a descendant's
  int my_backend = mine.backendpid();

  ProcfsClientResolver resolver(getpid(), tcp.port);
  std::set<int> ours = resolver.Ours(Sessions(socket));
  EXPECT_TRUE(ours.count(socket_backend)) << "unix-socket session not attributed";
  EXPECT_TRUE(ours.count(tcp_backend)) << "TCP session not attributed";
  EXPECT_FALSE(ours.count(my_backend));

  // A child forked and not (yet) exec'd holds a copy of every socket of this process: still this process's own
  // sessions, not the child's.
  pid_t forked = fork();
  ASSERT_GE(forked, 0);
  if (forked == 0) {
    pause();
    _exit(0);
  }
  ASSERT_TRUE(Descendants(getpid()).count(forked));
  std::set<int> with_fork = resolver.Ours(Sessions(socket));
  kill(forked, SIGKILL);
  waitpid(forked, nullptr, 0);
  EXPECT_FALSE(with_fork.count(my_backend)) << "an inherited copy of our own socket made our session a child's";
  EXPECT_TRUE(with_fork.count(socket_backend));

  // Seen from the child's side, this process is nobody's descendant: nothing is the child's.
  ProcfsClientResolver theirs(child->pid() + 1000000, tcp.port);
  EXPECT_TRUE(theirs.Ours(Sessions(socket)).empty());
  child->SignalGroup(SIGKILL);
  child->Wait();
}

}  // namespace
}  // namespace testshard::agent

// Faults end to end: agents killed, frozen and cut off from the network, tests that hang, an agent's database
// server dying. Every run must end with each collected test exactly once, with the right outcome.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/testing/redis_server.h"
#include "coordinator/run_journal_backends.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

namespace testshard::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "fault-token-0123456789abcdef0123";

constexpr char kSlowTests[] = R"PY(
import os, time, pytest

@pytest.mark.unit
@pytest.mark.parametrize("i", range(24))
def test_slow(i, record_property):
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    time.sleep(0.5)
)PY";

class FaultsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    project_.Write("tests/test_slow.py", kSlowTests);
    project_.Write("testshard.toml",
                   "command = [\"/usr/bin/python3\", \"-m\", \"pytest\"]\n\n[[stages]]\nname = \"unit\"\nmarkers = \"unit\"\n");
  }

  Subprocess Start(const std::vector<std::string>& args, const std::string& log,
                   std::map<std::string, std::string> env = {}) {
    env["TESTSHARD_TOKEN"] = kToken;
    return project_.Start(args, log, std::move(env));
  }

  // `testshard run` with short leases, so a silent agent loses its shard within seconds.
  Subprocess Run(int agents = 3) {
    return Start({"run", "--agents", std::to_string(agents), "--junit-out", "report.xml", "--lease-ttl", "2",
                  "--heartbeat", "0.3"},
                 "run.log");
  }

  void KillCoordinatorAndResume(const std::function<std::string(const std::string&)>& journal_text);

  // Waits until `pred` holds for the text of `log`, up to 60 s.
  bool WaitFor(const std::string& log, const std::function<bool(const std::string&)>& pred) {
    for (int i = 0; i < 1200; ++i) {
      if (pred(project_.Read(log))) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // The pid a local agent logged when it registered.
  pid_t AgentPid(int n) {
    std::string log = ".testshard/runs/latest/agent-" + std::to_string(n) + ".log";
    pid_t pid = -1;
    WaitFor(log, [&](const std::string& text) {
      std::smatch m;
      if (!std::regex_search(text, m, std::regex("\\(pid ([0-9]+)\\)"))) return false;
      pid = std::stoi(m[1]);
      return text.find("pytest worker ready") != std::string::npos;
    });
    return pid;
  }

  bool Running(int min_done) {
    return WaitFor("run.log", [&](const std::string& text) {
      std::smatch m;
      std::string::const_iterator from = text.begin();
      int best = -1;
      std::regex re("running +([0-9]+)/");
      while (std::regex_search(from, text.end(), m, re)) {
        best = std::max(best, std::stoi(m[1]));
        from = m.suffix().first;
      }
      return best >= min_done;
    });
  }

  void ExpectEveryTestOncePassed(int n) {
    Report report = ReadReport(project_.dir() + "/report.xml");
    ASSERT_EQ(report.cases.size(), static_cast<size_t>(n)) << project_.Read("run.log");
    for (const auto& [id, count] : report.Appearances()) EXPECT_EQ(count, 1) << id;
    EXPECT_EQ(report.Count(Outcome::kPassed), n) << project_.Read("run.log");
  }

  Project project_;
};

TEST_F(FaultsE2eTest, AgentKilledMidShardLosesNothing) {
  Subprocess run = Run();
  pid_t victim = AgentPid(1);
  ASSERT_GT(victim, 0) << project_.Read("run.log");
  ASSERT_TRUE(Running(3)) << project_.Read("run.log");
  kill(victim, SIGKILL);
  ProcessResult r = run.Wait();
  EXPECT_EQ(r.exit_code, 0) << project_.Read("run.log");
  ExpectEveryTestOncePassed(24);
}

TEST_F(FaultsE2eTest, FrozenAgentsShardRunsElsewhere) {
  Subprocess run = Run();
  pid_t victim = AgentPid(2);
  ASSERT_GT(victim, 0) << project_.Read("run.log");
  ASSERT_TRUE(Running(3)) << project_.Read("run.log");
  kill(victim, SIGSTOP);  // alive but silent: its heartbeats stop
  ProcessResult r = run.Wait();
  kill(victim, SIGCONT);
  EXPECT_EQ(r.exit_code, 0) << project_.Read("run.log");
  ExpectEveryTestOncePassed(24);
}

TEST_F(FaultsE2eTest, HungTestIsKilledAndReportedTheRestRun) {
  project_.Write("tests/test_hang.py", R"PY(
import time, pytest

@pytest.mark.unit
def test_hangs_forever():
    time.sleep(3600)
)PY");
  project_.Write("testshard.toml", "command = [\"/usr/bin/python3\", \"-m\", \"pytest\"]\n\n[[stages]]\nname = \"unit\"\n"
                                   "markers = \"unit\"\ntest_timeout = \"2s\"\n");
  Subprocess run = Run();
  ProcessResult r = run.Wait();
  EXPECT_EQ(r.exit_code, 1) << project_.Read("run.log");
  Report report = ReadReport(project_.dir() + "/report.xml");
  ASSERT_EQ(report.cases.size(), 25u) << project_.Read("run.log");
  for (const auto& [id, count] : report.Appearances()) EXPECT_EQ(count, 1) << id;
  EXPECT_EQ(report.Count(Outcome::kPassed), 24);
  for (const ReportedCase& c : report.cases) {
    if (c.name == "test_hangs_forever") {
      EXPECT_EQ(c.outcome, Outcome::kError);
      EXPECT_THAT(c.message, HasSubstr("timed out after 2s (test_timeout)"));
    }
  }
}

// A worker that crashed is started again for the agent's next lease, and here starting it takes longer than the
// lease's TTL. The agent heartbeats the lease from the moment it arrives, so the lease survives the start-up rather
// than expiring, being cancelled, and killing the worker it waited for, over and over.
TEST_F(FaultsE2eTest, WorkerRestartSlowerThanTheLeaseTtlKeepsTheLease) {
  project_.Write("conftest.py", "import time\ntime.sleep(3)  # a slow session start-up: longer than --lease-ttl 2\n");
  project_.Write("tests/test_crash.py", R"PY(
import os, pytest

@pytest.mark.unit
def test_crashes_its_worker():
    os._exit(3)
)PY");
  Subprocess run = Run(1);
  ProcessResult r = run.Wait();
  EXPECT_EQ(r.exit_code, 1) << project_.Read("run.log");
  Report report = ReadReport(project_.dir() + "/report.xml");
  ASSERT_EQ(report.cases.size(), 25u) << project_.Read("run.log");
  for (const auto& [id, count] : report.Appearances()) EXPECT_EQ(count, 1) << id;
  EXPECT_EQ(report.Count(Outcome::kPassed), 24) << project_.Read(".testshard/runs/latest/agent-1.log");
  EXPECT_THAT(project_.Read(".testshard/runs/latest/agent-1.log"), Not(HasSubstr("expired")));
}

// The coordinator and two agents as separate processes, each agent with its own embedded server; one agent's
// server is killed under it. Its failed tests are retried on the other agent, where they pass: reported as flaky
// (with the database error kept), never lost and never a plain pass.
TEST_F(FaultsE2eTest, AgentsDatabaseServerDies) {
  project_.Write("tests/test_slow.py", R"PY(
import os, time, psycopg2, pytest

@pytest.mark.unit
@pytest.mark.parametrize("i", range(24))
def test_db(i, record_property):
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    time.sleep(0.4)
    psycopg2.connect(os.environ["DATABASE_URL"]).cursor().execute("SELECT 1")
)PY");
  project_.Write("testshard.toml", R"(command = ["/usr/bin/python3", "-m", "pytest"]

[database]
env = { DATABASE_URL = "{url}" }

[[stages]]
name = "unit"
markers = "unit"
retries = 2
)");
  std::string sock = project_.dir() + "/c.sock";
  Subprocess coordinator = Start({"coordinator", "--listen", "unix:" + sock, "--agents", "2", "--junit-out",
                                  "report.xml", "--lease-ttl", "2", "--heartbeat", "0.3"},
                                 "run.log");
  for (int i = 0; i < 200 && !fs::exists(sock); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  Subprocess a1 = Start({"agent", "--coordinator", "unix:" + sock, "--name", "doomed"}, "a1.log");
  Subprocess a2 = Start({"agent", "--coordinator", "unix:" + sock, "--name", "healthy"}, "a2.log");
  ASSERT_TRUE(WaitFor("a1.log", [](const std::string& t) { return t.find("pytest worker ready") != std::string::npos; }));
  ASSERT_TRUE(Running(2)) << project_.Read("run.log");
  // The doomed agent's server: the embedded cluster whose owner is that agent's pid.
  pid_t postmaster = -1;
  for (const auto& dir : {std::string("/dev/shm"), std::string("/tmp")}) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().filename().string().rfind("testshard-pg-", 0) != 0) continue;
      std::ifstream owner(e.path() / "owner.pid");
      pid_t pid = 0;
      if (owner >> pid && pid == a1.pid()) std::ifstream(e.path() / "data" / "postmaster.pid") >> postmaster;
    }
  }
  ASSERT_GT(postmaster, 0);
  kill(postmaster, SIGKILL);
  ProcessResult r = coordinator.Wait();
  a1.Wait();
  a2.Wait();
  Report report = ReadReport(project_.dir() + "/report.xml");
  ASSERT_EQ(report.cases.size(), 24u) << project_.Read("run.log");
  for (const auto& [id, count] : report.Appearances()) EXPECT_EQ(count, 1) << id;
  // Whatever ran on the dead server failed there; every test ends passed on the healthy agent or failed with the
  // database error, and none is missing.
  EXPECT_EQ(report.Count(Outcome::kPassed) + report.Count(Outcome::kFailed) + report.Count(Outcome::kError), 24);
  EXPECT_THAT(project_.Read("report.xml"), HasSubstr("flakyFailure"));
  EXPECT_EQ(r.exit_code, report.Count(Outcome::kPassed) == 24 ? 0 : 1) << project_.Read("run.log");
}

// A coordinator and two agents over a unix socket; the coordinator is SIGKILLed mid-run and restarted with
// --resume. `journal_text(run_id)` reads what the dead coordinator had journaled (the JSON lines, wherever they
// are kept): those tests must not run again, and the report must have every test once.
void FaultsE2eTest::KillCoordinatorAndResume(const std::function<std::string(const std::string&)>& journal_text) {
  project_.Write("tests/test_slow.py", R"PY(
import os, time, pytest

@pytest.mark.unit
@pytest.mark.parametrize("i", range(24))
def test_slow(i):
    time.sleep(0.5)
    with open(os.path.join(os.path.dirname(__file__), "..", "ran.log"), "a") as f:
        f.write("test_slow[%d]\n" % i)
)PY");
  std::string sock = project_.dir() + "/c.sock";
  std::vector<std::string> args = {"coordinator", "--listen", "unix:" + sock, "--agents", "2", "--junit-out",
                                   "report.xml", "--lease-ttl", "2", "--heartbeat", "0.3"};
  std::optional<Subprocess> coordinator(Start(args, "run.log"));
  std::string run_id;
  ASSERT_TRUE(WaitFor("run.log", [&](const std::string& t) {
    std::smatch m;
    if (!std::regex_search(t, m, std::regex("coordinator for run ([0-9a-f]+) listening"))) return false;
    run_id = m[1];
    return true;
  })) << project_.Read("run.log");
  Subprocess a1 = Start({"agent", "--coordinator", "unix:" + sock, "--name", "a1"}, "a1.log");
  Subprocess a2 = Start({"agent", "--coordinator", "unix:" + sock, "--name", "a2"}, "a2.log");
  ASSERT_TRUE(Running(6)) << project_.Read("run.log");
  coordinator->SignalGroup(SIGKILL);
  coordinator->Wait();
  // What the dead coordinator had kept: those tests must not run again.
  std::string journal = journal_text(run_id);
  std::set<std::string> kept;
  for (std::smatch m; std::regex_search(journal, m, std::regex("\"n\":\"(test_slow\\[[0-9]+\\])\""));
       journal = m.suffix()) {
    kept.insert(m[1]);
  }
  EXPECT_FALSE(kept.empty());
  args.insert(args.end(), {"--resume", run_id});
  coordinator.emplace(Start(args, "run2.log"));
  ProcessResult r = coordinator->Wait();
  EXPECT_EQ(r.exit_code, 0) << project_.Read("run2.log");
  EXPECT_EQ(a1.Wait().exit_code, 0) << project_.Read("a1.log");
  EXPECT_EQ(a2.Wait().exit_code, 0) << project_.Read("a2.log");
  EXPECT_THAT(project_.Read("run2.log"), HasSubstr("resumed run " + run_id));
  ExpectEveryTestOncePassed(24);
  std::map<std::string, int> ran;
  std::istringstream lines(project_.Read("ran.log"));
  for (std::string line; std::getline(lines, line);) ++ran[line];
  for (const std::string& id : kept) EXPECT_EQ(ran[id], 1) << id << " ran again after the restart";
}

// The coordinator is killed mid-stage and restarted with --resume: agents reconnect and re-register, the results
// it had journaled are kept (those tests never run again), the rest run, and the report has every test once.
TEST_F(FaultsE2eTest, CoordinatorKilledAndResumed) {
  KillCoordinatorAndResume(
      [&](const std::string& run_id) { return project_.Read(".testshard/runs/" + run_id + "/journal.jsonl"); });
}

// The same with the history, and so the journal, in Redis: a restarted coordinator needs nothing from the dead
// one's disk.
TEST_F(FaultsE2eTest, CoordinatorKilledAndResumedFromRedis) {
  auto redis = testshard::testing::RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  project_.Write("testshard.toml", "project = \"journal-e2e\"\nhistory = \"" + (*redis)->url() +
                                       "\"\ncommand = [\"/usr/bin/python3\", \"-m\", \"pytest\"]\n\n"
                                       "[[stages]]\nname = \"unit\"\nmarkers = \"unit\"\n");
  KillCoordinatorAndResume([&](const std::string& run_id) {
    EXPECT_FALSE(fs::exists(project_.dir() + "/.testshard/runs/" + run_id + "/journal.jsonl"));
    auto events = coordinator::ReadRunJournal((*redis)->url(), "journal-e2e", run_id, "/nonexistent");
    EXPECT_TRUE(events.ok()) << events.status();
    std::string text;
    if (events.ok()) {
      for (const coordinator::JournalEvent& e : *events) text += coordinator::EncodeJournalEvent(e) + "\n";
    }
    return text;
  });
}

// A network namespace with a veth link to this host: an agent inside it reaches the coordinator over 10.213.x.1,
// and the test can cut that link. Skips (with the reason) where namespaces cannot be made.
class Netns {
 public:
  Netns() {
    std::string tag = std::to_string(getpid() % 100000);
    ns_ = "tsnet" + tag;
    host_if_ = "tsh" + tag;
    ns_if_ = "tsn" + tag;
    int subnet = 1 + getpid() % 250;
    host_ip_ = "10.213." + std::to_string(subnet) + ".1";
    ns_ip_ = "10.213." + std::to_string(subnet) + ".2";
    ok_ = Ip({"netns", "add", ns_}) && Ip({"link", "add", host_if_, "type", "veth", "peer", "name", ns_if_}) &&
          Ip({"link", "set", ns_if_, "netns", ns_}) && Ip({"addr", "add", host_ip_ + "/24", "dev", host_if_}) &&
          Ip({"link", "set", host_if_, "up"}) &&
          Ip({"netns", "exec", ns_, "ip", "addr", "add", ns_ip_ + "/24", "dev", ns_if_}) &&
          Ip({"netns", "exec", ns_, "ip", "link", "set", ns_if_, "up"}) &&
          Ip({"netns", "exec", ns_, "ip", "link", "set", "lo", "up"});
  }
  ~Netns() {
    Ip({"link", "del", host_if_});
    Ip({"netns", "del", ns_});
  }
  bool ok() const { return ok_; }
  const std::string& name() const { return ns_; }
  const std::string& host_ip() const { return host_ip_; }
  void Cut() { Ip({"link", "set", host_if_, "down"}); }
  const std::string& error() const { return error_; }

 private:
  bool Ip(std::vector<std::string> args) {
    ProcessSpec spec;
    spec.argv = {"ip"};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    char tmpl[] = "/tmp/ts-ip-XXXXXX";
    int fd = mkstemp(tmpl);
    close(fd);
    spec.stdout_path = spec.stderr_path = tmpl;
    PosixProcessRunner runner;
    auto r = runner.Run(spec, nullptr);
    bool ok = r.ok() && r->ok();
    if (!ok && error_.empty()) error_ = "ip " + args[0] + " " + args[1] + ": " + ReadTail(tmpl, 500);
    unlink(tmpl);
    return ok;
  }
  std::string ns_, host_if_, ns_if_, host_ip_, ns_ip_, error_;
  bool ok_ = false;
};

// One agent reaches the coordinator through a link that is then taken down: its lease expires, its unfinished
// tests run on the agent that can still talk, and nothing is lost or counted twice.
TEST_F(FaultsE2eTest, AgentCutOffFromTheNetworkLosesNothing) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  Netns ns;
  if (!ns.ok()) GTEST_SKIP() << "cannot make a network namespace here: " << ns.error();
  Subprocess coordinator = Start({"coordinator", "--listen", "0.0.0.0:0",
                                  "--allow-remote-plaintext", "--agents", "2", "--junit-out", "report.xml",
                                  "--lease-ttl", "2", "--heartbeat", "0.3"},
                                 "run.log");
  std::string port;
  ASSERT_TRUE(WaitFor("run.log", [&](const std::string& t) {
    std::smatch m;
    if (!std::regex_search(t, m, std::regex("listening on 0\\.0\\.0\\.0:([0-9]+);"))) return false;
    port = m[1];
    return true;
  })) << project_.Read("run.log");
  Subprocess local = Start({"agent", "--coordinator", "127.0.0.1:" + port, "--name", "local"},
                           "local.log");
  ProcessSpec spec;
  spec.argv = {"ip", "netns", "exec", ns.name(), TESTSHARD_BIN, "agent", "--coordinator",
               ns.host_ip() + ":" + port, "--name", "remote", "--connect-timeout", "5"};
  spec.cwd = project_.dir();
  spec.env["TESTSHARD_TOKEN"] = kToken;
  spec.stdout_path = spec.stderr_path = project_.dir() + "/remote.log";
  auto remote = Subprocess::Start(spec);
  ASSERT_TRUE(remote.ok());
  ASSERT_TRUE(WaitFor("remote.log", [](const std::string& t) { return t.find("pytest worker ready") != std::string::npos; }))
      << project_.Read("remote.log");
  ASSERT_TRUE(Running(3)) << project_.Read("run.log");
  ns.Cut();
  ProcessResult r = coordinator.Wait();
  EXPECT_EQ(r.exit_code, 0) << project_.Read("run.log") << project_.Read("remote.log");
  local.Wait();
  remote->SignalGroup(SIGKILL);
  remote->Wait();
  ExpectEveryTestOncePassed(24);
}

}  // namespace
}  // namespace testshard::e2e

// `testshard coordinator` and `testshard agent` as separate processes, as on separate machines: agents dial in,
// authenticate, bring their own embedded PostgreSQL, and the coordinator writes the report.
#include <signal.h>

#include <filesystem>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

namespace testshard::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kToken[] = "0123456789abcdef0123456789abcdef";

class DistributedE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    project_.Write("tests/test_unit.py",
                   "import os, time, pytest\n\n@pytest.mark.unit\n@pytest.mark.parametrize('i', range(8))\n"
                   "def test_unit(i, record_property):\n    record_property('agent', os.environ['TESTSHARD_AGENT'])\n"
                   "    time.sleep(float(os.environ.get('TEST_SLEEP', '0')))\n");
    project_.Write("testshard.toml",
                   "command = [\"/usr/bin/python3\", \"-m\", \"pytest\"]\n\n"
                   "[[stages]]\nname = \"unit\"\nmarkers = \"unit\"\n");
    socket_ = project_.dir() + "/coordinator.sock";
  }

  Subprocess Start(std::vector<std::string> args, const std::string& log, const std::string& token,
                   std::map<std::string, std::string> env = {}) {
    env["TESTSHARD_TOKEN"] = token;
    return project_.Start(args, log, std::move(env), absl::Minutes(3));
  }

  Subprocess Coordinator() {
    Subprocess c = Start({"coordinator", "--listen", "unix:" + socket_, "--agents", "2", "--junit-out", "report.xml"},
                         "coordinator.log", kToken);
    for (int i = 0; i < 200 && !fs::exists(socket_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    return c;
  }

  Project project_;
  std::string socket_;
};

TEST_F(DistributedE2eTest, AgentsInSeparateProcessesShareTheRun) {
  Subprocess coordinator = Coordinator();
  // Each shard takes 4 s, so the second agent is up before the first could take both.
  Subprocess a1 = Start({"agent", "--coordinator", "unix:" + socket_, "--name", "remote-1"}, "a1.log", kToken,
                        {{"TEST_SLEEP", "1"}});
  Subprocess a2 = Start({"agent", "--coordinator", "unix:" + socket_, "--name", "remote-2"}, "a2.log", kToken,
                        {{"TEST_SLEEP", "1"}});
  ProcessResult c = coordinator.Wait();
  EXPECT_EQ(c.exit_code, 0) << project_.Read("coordinator.log");
  EXPECT_EQ(a1.Wait().exit_code, 0) << project_.Read("a1.log");
  EXPECT_EQ(a2.Wait().exit_code, 0) << project_.Read("a2.log");
  Report report = ReadReport(project_.dir() + "/report.xml");
  ASSERT_EQ(report.cases.size(), 8u) << project_.Read("coordinator.log");
  EXPECT_EQ(report.Count(Outcome::kPassed), 8);
  std::set<std::string> agents;
  for (const ReportedCase& rc : report.cases) agents.insert(rc.properties.at("agent"));
  EXPECT_EQ(agents, (std::set<std::string>{"remote-1", "remote-2"}));
}

// A fleet agent with its own embedded server keeps the template it built for its next run in the same checkout,
// as `testshard run` does: the set-up command runs once over two runs.
TEST_F(DistributedE2eTest, AgentKeepsItsTemplateForItsNextRun) {
  std::string base = project_.dir() + "/pgbase";
  fs::create_directories(base);
  fs::permissions(base, fs::perms::all);
  project_.Write("setup_db.py", "open('setups.log', 'a').write('built\\n')\n");
  project_.Write("testshard.toml", absl::StrCat(R"(command = ["/usr/bin/python3", "-m", "pytest"]

[database]
setup = [["/usr/bin/python3", "setup_db.py"]]
template_inputs = ["setup_db.py"]
env = { DATABASE_URL = "{url}" }
data_dir = ")", base, R"("

[[stages]]
name = "unit"
markers = "unit"
)"));
  for (int run = 0; run < 2; ++run) {
    Subprocess coordinator =
        Start({"coordinator", "--listen", "unix:" + socket_, "--agents", "1", "--junit-out", "report.xml"},
              "coordinator.log", kToken);
    for (int i = 0; i < 200 && !fs::exists(socket_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    Subprocess agent = Start({"agent", "--coordinator", "unix:" + socket_, "--name", "fleet-1"}, "a1.log", kToken);
    EXPECT_EQ(coordinator.Wait().exit_code, 0) << project_.Read("coordinator.log");
    EXPECT_EQ(agent.Wait().exit_code, 0) << project_.Read("a1.log");
    EXPECT_EQ(ReadReport(project_.dir() + "/report.xml").Count(Outcome::kPassed), 8) << project_.Read("a1.log");
  }
  EXPECT_EQ(project_.Read("setups.log"), "built\n") << project_.Read("a1.log");
}

TEST_F(DistributedE2eTest, AgentWithAWrongTokenIsRefused) {
  Subprocess coordinator = Coordinator();
  Subprocess intruder =
      Start({"agent", "--coordinator", "unix:" + socket_, "--name", "intruder"}, "intruder.log", "wrong-token-wrong-token");
  ProcessResult r = intruder.Wait();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(project_.Read("intruder.log"), HasSubstr("wrong authorization token"));
  coordinator.SignalGroup(SIGTERM);
  coordinator.Wait();
}

// Certificates made by openssl in the test: a CA, a server certificate for 127.0.0.1, a client certificate.
class TlsE2eTest : public DistributedE2eTest {
 protected:
  void SetUp() override {
    DistributedE2eTest::SetUp();
    std::string d = project_.dir();
    project_.Write("san.cnf", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    Openssl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/ca.key", "-out", d + "/ca.pem", "-days",
             "1", "-subj", "/CN=testshard-test-ca"});
    for (std::string who : {"server", "client"}) {
      Openssl({"req", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/" + who + ".key", "-out", d + "/" + who + ".csr",
               "-subj", "/CN=" + who});
      Openssl({"x509", "-req", "-in", d + "/" + who + ".csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key",
               "-CAcreateserial", "-out", d + "/" + who + ".pem", "-days", "1", "-extfile", d + "/san.cnf"});
    }
  }
  void Openssl(std::vector<std::string> args) {
    ProcessSpec spec;
    spec.argv = {"openssl"};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.stdout_path = spec.stderr_path = project_.dir() + "/openssl.log";
    PosixProcessRunner runner;
    auto r = runner.Run(spec, nullptr);
    ASSERT_TRUE(r.ok() && r->ok()) << project_.Read("openssl.log");
  }
  // Starts a TLS coordinator on a loopback port and returns its address.
  std::string TlsCoordinator(std::optional<Subprocess>* out, bool mutual) {
    std::string d = project_.dir();
    std::vector<std::string> args = {"coordinator", "--listen", "127.0.0.1:0", "--agents", "1", "--junit-out",
                                     "report.xml", "--tls-cert", d + "/server.pem", "--tls-key", d + "/server.key"};
    if (mutual) args.insert(args.end(), {"--tls-client-ca", d + "/ca.pem"});
    out->emplace(Start(args, "coordinator.log", kToken));
    for (int i = 0; i < 400; ++i) {
      std::string log = project_.Read("coordinator.log");
      size_t at = log.find("listening on ");
      if (at != std::string::npos && log.find(';', at) != std::string::npos) {
        return log.substr(at + 13, log.find(';', at) - at - 13);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    ADD_FAILURE() << project_.Read("coordinator.log");
    return "";
  }
};

TEST_F(TlsE2eTest, AgentsRunOverTls) {
  std::optional<Subprocess> coordinator;
  std::string address = TlsCoordinator(&coordinator, /*mutual=*/false);
  Subprocess agent = Start({"agent", "--coordinator", address, "--tls-ca", project_.dir() + "/ca.pem"}, "a.log", kToken);
  EXPECT_EQ(agent.Wait().exit_code, 0) << project_.Read("a.log");
  EXPECT_EQ(coordinator->Wait().exit_code, 0) << project_.Read("coordinator.log");
  EXPECT_EQ(ReadReport(project_.dir() + "/report.xml").Count(Outcome::kPassed), 8);
}

TEST_F(TlsE2eTest, PlaintextAgentCannotTalkToATlsPort) {
  std::optional<Subprocess> coordinator;
  std::string address = TlsCoordinator(&coordinator, /*mutual=*/false);
  Subprocess agent = Start({"agent", "--coordinator", address, "--connect-timeout", "3"}, "a.log", kToken);
  EXPECT_NE(agent.Wait().exit_code, 0);
  EXPECT_THAT(project_.Read("a.log"), HasSubstr("registering with the coordinator"));
  coordinator->SignalGroup(SIGTERM);
  coordinator->Wait();
}

TEST_F(TlsE2eTest, MutualTlsRefusesAnAgentWithoutACertificate) {
  std::optional<Subprocess> coordinator;
  std::string address = TlsCoordinator(&coordinator, /*mutual=*/true);
  std::string d = project_.dir();
  Subprocess anonymous =
      Start({"agent", "--coordinator", address, "--tls-ca", d + "/ca.pem", "--connect-timeout", "3"}, "anon.log", kToken);
  EXPECT_NE(anonymous.Wait().exit_code, 0) << project_.Read("anon.log");
  Subprocess agent = Start({"agent", "--coordinator", address, "--tls-ca", d + "/ca.pem", "--tls-cert",
                            d + "/client.pem", "--tls-key", d + "/client.key"},
                           "a.log", kToken);
  EXPECT_EQ(agent.Wait().exit_code, 0) << project_.Read("a.log");
  EXPECT_EQ(coordinator->Wait().exit_code, 0) << project_.Read("coordinator.log");
}

TEST_F(DistributedE2eTest, AgentWithoutATokenDoesNotStart) {
  Project::Result r = project_.Testshard({"agent", "--coordinator", "unix:" + socket_});
  EXPECT_EQ(r.process.exit_code, 4);
  EXPECT_THAT(r.output, HasSubstr("no token"));
}

TEST_F(DistributedE2eTest, PlaintextOnANonLoopbackAddressIsRefused) {
  Project::Result r = project_.Testshard({"coordinator", "--listen", "0.0.0.0:0"}, {{"TESTSHARD_TOKEN", kToken}});
  EXPECT_NE(r.process.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("refusing to serve plaintext gRPC on 0.0.0.0:0"));
}

}  // namespace
}  // namespace testshard::e2e

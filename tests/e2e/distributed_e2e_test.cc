// `testshard coordinator` and `testshard agent` as separate processes, as on separate machines: agents dial in,
// authenticate, bring their own embedded PostgreSQL, and the coordinator writes the report.
#include <signal.h>

#include <filesystem>
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
                   "import os, pytest\n\n@pytest.mark.unit\n@pytest.mark.parametrize('i', range(8))\n"
                   "def test_unit(i, record_property):\n    record_property('agent', os.environ['TESTSHARD_AGENT'])\n");
    project_.Write("testshard.toml",
                   "command = [\"/usr/bin/python3\", \"-m\", \"pytest\"]\n\n"
                   "[[stages]]\nname = \"unit\"\nmarkers = \"unit\"\n");
    socket_ = project_.dir() + "/coordinator.sock";
  }

  Subprocess Start(std::vector<std::string> args, const std::string& log, const std::string& token) {
    ProcessSpec spec;
    spec.argv = {TESTSHARD_BIN};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.cwd = project_.dir();
    spec.env["TESTSHARD_TOKEN"] = token;
    spec.env["TESTSHARD_BRANCH"] = "main";
    spec.stdout_path = spec.stderr_path = project_.dir() + "/" + log;
    spec.timeout = absl::Minutes(3);
    auto p = Subprocess::Start(spec);
    EXPECT_TRUE(p.ok()) << p.status();
    return std::move(*p);
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
  Subprocess a1 = Start({"agent", "--coordinator", "unix:" + socket_, "--name", "remote-1"}, "a1.log", kToken);
  Subprocess a2 = Start({"agent", "--coordinator", "unix:" + socket_, "--name", "remote-2"}, "a2.log", kToken);
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

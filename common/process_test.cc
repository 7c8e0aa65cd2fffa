#include "common/process.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ts-process-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Read(const std::string& name) {
    std::ifstream in(dir_ + "/" + name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string dir_;
  PosixProcessRunner runner_;
};

TEST_F(ProcessTest, ArgumentsReachTheChildVerbatimWithoutAShell) {
  ProcessSpec spec;
  std::string hostile = "a b; echo pwned $(id) `x` '\"' > /tmp/x | &";
  spec.argv = {"/usr/bin/printf", "%s\\n", hostile, "-x"};
  spec.stdout_path = dir_ + "/out";
  TS_ASSERT_OK_AND_ASSIGN(ProcessResult r, runner_.Run(spec, nullptr));
  EXPECT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(Read("out"), hostile + "\n-x\n");
}

TEST_F(ProcessTest, EnvAndCwdAreApplied) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "echo \"$TS_VALUE\"; pwd"};
  spec.env["TS_VALUE"] = "postgresql://u@/db?host=/tmp/s";
  spec.cwd = dir_;
  spec.stdout_path = dir_ + "/out";
  TS_ASSERT_OK_AND_ASSIGN(ProcessResult r, runner_.Run(spec, nullptr));
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(Read("out"), "postgresql://u@/db?host=/tmp/s\n" + fs::canonical(dir_).string() + "\n");
}

TEST_F(ProcessTest, ExitCodeAndSignalAreReported) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "exit 3"};
  TS_ASSERT_OK_AND_ASSIGN(ProcessResult r, runner_.Run(spec, nullptr));
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.Describe(), "exit code 3");
  spec.argv = {"sh", "-c", "kill -9 $$"};
  TS_ASSERT_OK_AND_ASSIGN(r, runner_.Run(spec, nullptr));
  EXPECT_EQ(r.term_signal, SIGKILL);
}

TEST_F(ProcessTest, MissingProgramIsNotFound) {
  ProcessSpec spec;
  spec.argv = {"/nonexistent/pytest"};
  EXPECT_THAT(runner_.Run(spec, nullptr), testing::StatusIs(absl::StatusCode::kNotFound, HasSubstr("cannot start")));
  spec.argv = {"ls"};
  spec.cwd = "/nonexistent-dir";
  EXPECT_FALSE(runner_.Run(spec, nullptr).ok());
}

// The child ignores SIGTERM and leaves a grandchild behind: the timeout must still kill the whole group.
TEST_F(ProcessTest, TimeoutKillsTheWholeProcessGroup) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "trap '' TERM; sleep 300 & echo $! > " + dir_ + "/grandchild; wait"};
  spec.timeout = absl::Milliseconds(300);
  spec.kill_grace = absl::Milliseconds(200);
  TS_ASSERT_OK_AND_ASSIGN(ProcessResult r, runner_.Run(spec, nullptr));
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.ok());
  pid_t grandchild = std::atoi(Read("grandchild").c_str());
  ASSERT_GT(grandchild, 0);
  // Reaped by init eventually; it must at least be dead or a zombie, never still sleeping.
  for (int i = 0; i < 200 && kill(grandchild, 0) == 0; ++i) {
    std::ifstream stat("/proc/" + std::to_string(grandchild) + "/stat");
    std::string pid, comm, state;
    stat >> pid >> comm >> state;
    if (!stat || state == "Z") break;
    usleep(10000);
  }
  std::ifstream stat("/proc/" + std::to_string(grandchild) + "/stat");
  std::string pid, comm, state;
  stat >> pid >> comm >> state;
  EXPECT_TRUE(!stat || state == "Z") << "grandchild still running, state " << state;
}

TEST_F(ProcessTest, CancelStopsTheChild) {
  ProcessSpec spec;
  spec.argv = {"sleep", "300"};
  Cancellation cancel;
  std::thread t([&] {
    usleep(100000);
    cancel.Cancel();
  });
  TS_ASSERT_OK_AND_ASSIGN(ProcessResult r, runner_.Run(spec, &cancel));
  t.join();
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(r.term_signal, SIGTERM);
}

TEST_F(ProcessTest, ReadTailKeepsTheEnd) {
  std::ofstream(dir_ + "/log") << "first line\nsecond line\nthird line\n";
  EXPECT_EQ(ReadTail(dir_ + "/log", 16), "third line\n");
  EXPECT_EQ(ReadTail(dir_ + "/missing", 16), "");
}

}  // namespace
}  // namespace testshard

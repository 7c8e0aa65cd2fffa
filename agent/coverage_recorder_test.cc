#include "agent/coverage_recorder.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::IsSupersetOf;

class CoverageRecorderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("coverage-recorder-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    spec_.set_enabled(true);
    spec_.add_source("app");
    spec_.set_branch(true);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  fs::path dir_;
  v1::CoverageSpec spec_;
  PosixProcessRunner runner_;
};

TEST_F(CoverageRecorderTest, EachProcessMeasuresIntoADirectoryOfItsOwn) {
  CoverageRecorder r(spec_, (dir_ / "coverage").string(), "/plugins");
  std::vector<std::string> worker = {"python3", "-m", "pytest"}, batch = worker;
  std::map<std::string, std::string> worker_env = {{"PYTHONPATH", "/project/lib"}}, batch_env;
  r.Apply("worker", &worker, &worker_env);
  r.Apply("batch", &batch, &batch_env);
  EXPECT_EQ(worker, (std::vector<std::string>{"python3", "-m", "pytest", "-p", "testshard_coverage", "-p",
                                              "pytest_cov", "--cov=app", "--cov-branch", "--cov-report="}));
  EXPECT_NE(worker_env.at("COVERAGE_FILE"), batch_env.at("COVERAGE_FILE"));
  EXPECT_EQ(fs::path(worker_env.at("COVERAGE_FILE")).parent_path(), dir_ / "coverage" / "worker-1");
  EXPECT_EQ(fs::path(batch_env.at("COVERAGE_FILE")).parent_path(), dir_ / "coverage" / "batch-2");
  EXPECT_TRUE(fs::is_directory(dir_ / "coverage" / "batch-2"));
  EXPECT_EQ(worker_env.at("PYTHONPATH"), "/plugins:/project/lib");
  EXPECT_EQ(worker_env.at("TESTSHARD_COVERAGE_PYTHON"), (dir_ / "coverage" / "worker-1" / "python").string());
}

TEST_F(CoverageRecorderTest, NoSourceMeasuresWhatCoveragePyIsConfiguredFor) {
  v1::CoverageSpec plain;
  plain.set_enabled(true);
  CoverageRecorder r(plain, (dir_ / "coverage").string(), "/plugins");
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  r.Apply("batch", &argv, &env);
  EXPECT_THAT(argv, IsSupersetOf({"--cov", "--cov-report="}));
  EXPECT_THAT(argv, ::testing::Not(::testing::Contains("--cov-branch")));
}

TEST_F(CoverageRecorderTest, DataFromAnEarlierRunIsGone) {
  fs::create_directories(dir_ / "coverage" / "worker-1");
  std::ofstream(dir_ / "coverage" / "worker-1" / ".coverage") << "stale";
  CoverageRecorder r(spec_, (dir_ / "coverage").string(), "/plugins");
  EXPECT_FALSE(fs::exists(dir_ / "coverage" / "worker-1"));
}

TEST_F(CoverageRecorderTest, AnAgentThatRanNothingReportsAValidEmptyCobertura) {
  CoverageRecorder r(spec_, (dir_ / "coverage").string(), "/plugins");
  auto report = r.Report(&runner_, dir_.string(), {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(Read(*report), HasSubstr("<coverage"));
  EXPECT_THAT(Read(*report), HasSubstr("lines-valid=\"0\""));
}

TEST_F(CoverageRecorderTest, DataWithoutTheInterpreterThatWroteItIsAnError) {
  CoverageRecorder r(spec_, (dir_ / "coverage").string(), "/plugins");
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  r.Apply("batch", &argv, &env);
  std::ofstream(env.at("COVERAGE_FILE")) << "data";
  auto report = r.Report(&runner_, dir_.string(), {});
  EXPECT_EQ(report.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(report.status().message()), HasSubstr("interpreter"));
}

}  // namespace
}  // namespace testshard::agent

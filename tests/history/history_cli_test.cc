// The planning commands as a CI job uses them: a real pytest project, the real binary, real collection.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/process.h"
#include "common/status.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace testshard {
namespace {
namespace fs = std::filesystem;

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

class HistoryCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/testshard-cli-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    fs::create_directories(dir_ + "/tests/api");
    Write("testshard.toml", R"(project = "cli"
command = ["/usr/bin/python3", "-m", "pytest", "-p", "no:cacheprovider"]

[[stages]]
name = "unit"
markers = "unit"
)");
    Write("pytest.ini", "[pytest]\nmarkers =\n    unit: fast\n    slow: slow\n");
    std::string a = "import pytest\n\n";
    for (int i = 0; i < 20; ++i) a += "@pytest.mark.unit\ndef test_a" + std::to_string(i) + "():\n    pass\n\n";
    a += "@pytest.mark.unit\n@pytest.mark.parametrize('x', ['a::b', 'c d', '$(x)'])\ndef test_p(x):\n    pass\n\n";
    a += "@pytest.mark.slow\ndef test_not_in_unit():\n    pass\n";
    Write("tests/api/test_a.py", a);
    Write("tests/test_b.py",
          "import pytest\n\n@pytest.mark.unit\nclass TestB:\n    def test_1(self):\n        pass\n"
          "    def test_2(self):\n        pass\n");
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Write(const std::string& rel, const std::string& text) { std::ofstream(dir_ + "/" + rel) << text; }

  CliRun Testshard(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    ProcessSpec spec;
    spec.env = std::move(env);
    spec.argv = {(fs::read_symlink("/proc/self/exe").parent_path() / "testshard").string()};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.cwd = dir_;
    spec.stdout_path = dir_ + "/.out";
    spec.stderr_path = dir_ + "/.err";
    spec.timeout = absl::Seconds(120);
    PosixProcessRunner runner;
    CliRun run;
    auto r = runner.Run(spec, nullptr);
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) run.exit_code = r->exit_code;
    std::ifstream o(spec.stdout_path), e(spec.stderr_path);
    std::stringstream so, se;
    so << o.rdbuf();
    se << e.rdbuf();
    run.out = so.str();
    run.err = se.str();
    return run;
  }

  static std::vector<std::string> Lines(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  }

  std::string dir_;
};

TEST_F(HistoryCliTest, SplitShardsCoverTheStageExactlyOnceAndAgreeAcrossJobs) {
  // A history for some of the tests, as a CI job would have it checked out.
  Write("durations.json", R"({"tests/api/test_a.py::test_a0": 30, "tests/api/test_a.py::test_a1": 5,
                              "tests/test_b.py::TestB::test_1": 12})");
  ASSERT_EQ(Testshard({"history", "import", "durations.json"}).exit_code, 0);
  std::multiset<std::string> all;
  std::vector<std::string> first_pass;
  for (int i = 0; i < 4; ++i) {
    CliRun r = Testshard({"split", "--stage", "unit", "--index", std::to_string(i), "--total", "4", "--dry-run"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto ids = Lines(r.out);
    EXPECT_THAT(ids, Not(IsEmpty())) << "shard " << i;
    all.insert(ids.begin(), ids.end());
    first_pass.push_back(r.out);
  }
  EXPECT_EQ(all.size(), 25u);  // 20 + 3 parameters + 2 methods; the slow test is not in the stage
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(), 25u);
  EXPECT_TRUE(all.count("tests/api/test_a.py::test_p[$(x)]"));
  // A second job computes the same shard.
  CliRun again = Testshard({"split", "--stage", "unit", "--index", "2", "--total", "4", "--dry-run"});
  EXPECT_EQ(again.out, first_pass[2]);
}

TEST_F(HistoryCliTest, SplitRunsItsShardWithTheConfiguredCommand) {
  CliRun r = Testshard({"split", "--stage", "unit", "--index", "1", "--total", "2"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("passed"));
}

TEST_F(HistoryCliTest, SplitFromAFileOfIdsIsOrderIndependent) {
  Write("ids1.txt", "a.py::t1\na.py::t2\nb.py::t3\nc.py::t4\n");
  Write("ids2.txt", "c.py::t4\nb.py::t3\na.py::t2\na.py::t1\n");
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> base = {"split", "--index", std::to_string(i), "--total", "3", "--dry-run",
                                     "--tests-from"};
    auto a = base, b = base;
    a.push_back("ids1.txt");
    b.push_back("ids2.txt");
    EXPECT_EQ(Testshard(a).out, Testshard(b).out) << i;
  }
}

// Bazel's test sharding protocol: a test with shard_count = 3 whose body is `testshard split --stage unit`.
TEST_F(HistoryCliTest, BazelShardVariablesSplitLikeTheFlagsAndTouchTheStatusFile) {
  std::multiset<std::string> all;
  for (int i = 0; i < 3; ++i) {
    const std::string status = dir_ + "/status-" + std::to_string(i);
    CliRun r = Testshard({"split", "--stage", "unit", "--dry-run"}, {{"TEST_TOTAL_SHARDS", "3"},
                                                                   {"TEST_SHARD_INDEX", std::to_string(i)},
                                                                   {"TEST_SHARD_STATUS_FILE", status}});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(fs::exists(status)) << "shard " << i;
    auto ids = Lines(r.out);
    EXPECT_THAT(ids, Not(IsEmpty())) << "shard " << i;
    all.insert(ids.begin(), ids.end());
    CliRun flags = Testshard({"split", "--stage", "unit", "--index", std::to_string(i), "--total", "3", "--dry-run"});
    EXPECT_EQ(r.out, flags.out) << "shard " << i;
  }
  EXPECT_EQ(all.size(), 25u);
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(), 25u);
}

TEST_F(HistoryCliTest, BazelShardWritesItsJunitToXmlOutputFile) {
  fs::create_directories(dir_ + "/testlogs");
  const std::string xml = dir_ + "/testlogs/test.xml";
  Write("testlogs/test.xml", "stale");
  std::map<std::string, std::string> env = {{"TEST_TOTAL_SHARDS", "3"},
                                            {"TEST_SHARD_INDEX", "1"},
                                            {"TEST_SHARD_STATUS_FILE", dir_ + "/testlogs/status"},
                                            {"XML_OUTPUT_FILE", xml}};
  const size_t shard_size = Lines(Testshard({"split", "--stage", "unit", "--dry-run"}, env).out).size();
  ASSERT_GT(shard_size, 0u);
  CliRun r = Testshard({"split", "--stage", "unit"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(fs::exists(dir_ + "/testlogs/status"));
  std::ifstream in(xml);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("<testsuite"));
  size_t cases = 0;
  for (size_t at = text.str().find("<testcase "); at != std::string::npos; at = text.str().find("<testcase ", at + 1)) {
    ++cases;
  }
  EXPECT_EQ(cases, shard_size);
}

TEST_F(HistoryCliTest, EmptyBazelShardPassesWithAnEmptyReport) {
  Write("ids.txt", "a.py::t1\nb.py::t2\n");
  int empty_shards = 0;
  for (int i = 0; i < 3; ++i) {
    std::map<std::string, std::string> env = {{"TEST_TOTAL_SHARDS", "3"}, {"TEST_SHARD_INDEX", std::to_string(i)}};
    if (!Testshard({"split", "--tests-from", "ids.txt", "--dry-run"}, env).out.empty()) continue;
    ++empty_shards;
    const std::string xml = dir_ + "/test" + std::to_string(i) + ".xml";
    env["XML_OUTPUT_FILE"] = xml;
    CliRun r = Testshard({"split", "--tests-from", "ids.txt", "--", "/bin/false"}, env);
    EXPECT_EQ(r.exit_code, 0) << r.err;  // nothing ran
    std::ifstream in(xml);
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_THAT(text.str(), HasSubstr("tests=\"0\""));
  }
  EXPECT_EQ(empty_shards, 1);
}

TEST_F(HistoryCliTest, BadBazelShardVariablesAreRefusedNamingTheVariable) {
  struct Case {
    std::map<std::string, std::string> env;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"TEST_TOTAL_SHARDS", "3"}, {"TEST_SHARD_INDEX", "3"}}, "TEST_SHARD_INDEX=3"},
      {{{"TEST_TOTAL_SHARDS", "three"}, {"TEST_SHARD_INDEX", "0"}}, "TEST_TOTAL_SHARDS='three'"},
      {{{"TEST_TOTAL_SHARDS", "0"}, {"TEST_SHARD_INDEX", "0"}}, "TEST_TOTAL_SHARDS=0"},
      {{{"TEST_TOTAL_SHARDS", "3"}}, "TEST_SHARD_INDEX"},
      {{}, "--index and --total"},
  };
  for (const Case& c : cases) {
    CliRun r = Testshard({"split", "--stage", "unit", "--dry-run"}, c.env);
    EXPECT_EQ(r.exit_code, 4) << c.message;
    EXPECT_THAT(r.err, HasSubstr(c.message));
    EXPECT_TRUE(r.out.empty()) << c.message;
  }
  // The flags win, and then the variables are not looked at.
  CliRun flags = Testshard({"split", "--stage", "unit", "--index", "0", "--total", "2", "--dry-run"},
                           {{"TEST_TOTAL_SHARDS", "three"}, {"TEST_SHARD_INDEX", "0"}});
  EXPECT_EQ(flags.exit_code, 0) << flags.err;
  EXPECT_THAT(Lines(flags.out), Not(IsEmpty()));
}

TEST_F(HistoryCliTest, PlanReportsTheBoundAsJson) {
  CliRun r = Testshard({"plan", "--stage", "unit", "--agents", "3", "--format", "json", "--startup", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tests"], 25);
  EXPECT_THAT(j["shards"], SizeIs(3));
  EXPECT_GE(j["makespan_s"].get<double>(), j["lower_bound_s"].get<double>());
  EXPECT_EQ(j["estimate_sources"]["default"], 25);
}

TEST_F(HistoryCliTest, JunitFromARealPytestRunImportsAndExportsForPytestSplit) {
  ProcessSpec pytest;
  pytest.argv = {"/usr/bin/python3", "-m", "pytest", "-p", "no:cacheprovider", "--junitxml=" + dir_ + "/report.xml"};
  pytest.cwd = dir_;
  PosixProcessRunner runner;
  ASSERT_TRUE(runner.Run(pytest, nullptr).ok());
  CliRun imported = Testshard({"history", "import", "report.xml"});
  ASSERT_EQ(imported.exit_code, 0) << imported.err;
  CliRun exported = Testshard({"history", "export", "--format", "test-durations"});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  nlohmann::json j = nlohmann::json::parse(exported.out);
  EXPECT_EQ(j.size(), 26u);  // every test, the slow one included
  EXPECT_TRUE(j.contains("tests/test_b.py::TestB::test_1"));
  EXPECT_TRUE(j.contains("tests/api/test_a.py::test_p[a::b]"));
}

TEST_F(HistoryCliTest, UnknownStageAndUnreachableStoreFailLoudly) {
  CliRun r = Testshard({"split", "--stage", "nope", "--index", "0", "--total", "2", "--dry-run"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("no stage 'nope'"));
  EXPECT_TRUE(r.out.empty());
  CliRun s = Testshard({"split", "--stage", "unit", "--index", "0", "--total", "2", "--dry-run", "--store",
                     "unix:" + dir_ + "/no-redis.sock"});
  EXPECT_NE(s.exit_code, 0);
  EXPECT_TRUE(s.out.empty());  // never a shard computed from a history the other jobs may not have seen
}

}  // namespace
}  // namespace testshard

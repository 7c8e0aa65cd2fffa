// The warm worker against a real pytest: fixture lifetimes across batches, crashes, and result fidelity.
#include "agent/pytest_worker.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testshard::testing::StatusIs;

constexpr char kSuite[] = R"PY(
import os, pytest

LOG = os.path.join(os.path.dirname(__file__), "events.log")

def log(event):
    with open(LOG, "a") as f:
        f.write(event + "\n")

@pytest.fixture(scope="session", autouse=True)
def session_fixture():
    log("session-setup")
    yield
    log("session-teardown")

@pytest.fixture(scope="module")
def module_fixture():
    log("module-setup")
    yield
    log("module-teardown")

@pytest.mark.unit
@pytest.mark.parametrize("i", range(4))
def test_uses_module(module_fixture, i):
    log("test-%d" % i)

@pytest.mark.unit
def test_fails(record_property):
    record_property("k", "v")
    print("to stdout")
    assert 1 == 2, "boom"

@pytest.mark.slow
def test_skip():
    pytest.skip("no time")

@pytest.mark.slow
@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

def test_setup_error(missing_fixture_name):
    pass

@pytest.mark.crash
def test_crash():
    os.kill(os.getpid(), 9)
)PY";

class PytestWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ts-worker-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::ofstream(dir_ + "/pytest.ini") << "[pytest]\nmarkers =\n    unit\n    slow\n    crash\n";
    std::ofstream(dir_ + "/test_w.py") << kSuite;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<PytestWorker> Start(const std::string& scratch = "/scratch") {
    WorkerOptions o;
    o.command = {"/usr/bin/python3", "-m", "pytest"};
    o.cwd = dir_;
    o.plugin_dir = std::string(TESTSHARD_SOURCE_DIR) + "/agent/python";
    o.scratch_dir = dir_ + scratch;
    auto w = PytestWorker::Start(o);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() ? std::move(*w) : nullptr;
  }
  // Collects events until `n` results have arrived (or the worker exits).
  std::map<std::string, TestCase> Results(PytestWorker& w, size_t n, std::vector<std::string>* started = nullptr) {
    std::map<std::string, TestCase> out;
    while (out.size() < n) {
      auto e = w.Next(absl::Seconds(30));
      if (!e) {
        ADD_FAILURE() << "no event within 30s";
        break;
      }
      if (e->kind == WorkerEvent::kExited) break;
      if (e->kind == WorkerEvent::kStart && started) started->push_back(e->id);
      if (e->kind == WorkerEvent::kResult) out[e->id] = e->result;
    }
    return out;
  }
  std::vector<std::string> Events() {
    std::ifstream in(dir_ + "/events.log");
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  std::string dir_;
};

// A checkout deep in the file system: the socket's path would not fit a unix socket address (108 bytes), so it
// lives in a private directory in /tmp, which is gone once the worker has connected. (It used to cost the warm
// worker: the agent fell back to one pytest process per shard.)
TEST_F(PytestWorkerTest, DeepScratchDirectoryStillGetsAWorker) {
  std::string deep = "/" + std::string(60, 'd') + "/" + std::string(60, 'e');
  auto before = [] {
    std::set<std::string> dirs;
    for (const auto& e : fs::directory_iterator("/tmp")) {
      if (e.path().filename().string().rfind("testshard-w-", 0) == 0) dirs.insert(e.path());
    }
    return dirs;
  };
  std::set<std::string> existing = before();
  auto w = Start(deep);
  ASSERT_TRUE(w);
  EXPECT_EQ(before(), existing) << "the socket's directory in /tmp was left behind";
  ASSERT_THAT(w->Run({"test_w.py::test_skip"}), testshard::testing::IsOk());
  ASSERT_THAT(w->Flush(), testshard::testing::IsOk());
  auto results = Results(*w, 1);
  EXPECT_EQ(results["test_w.py::test_skip"].result.outcome, Outcome::kSkipped);
  w->Stop();
}

TEST_F(PytestWorkerTest, SelectsWhatPytestDashMWould) {
  auto w = Start();
  ASSERT_TRUE(w);
  TS_ASSERT_OK_AND_ASSIGN(auto unit, w->Select("unit and not slow"));
  EXPECT_EQ(unit.size(), 5u);
  TS_ASSERT_OK_AND_ASSIGN(auto slow, w->Select("slow"));
  EXPECT_THAT(slow, ElementsAre("test_w.py::test_skip", "test_w.py::test_xfail"));
  TS_ASSERT_OK_AND_ASSIGN(auto all, w->Select(""));
  EXPECT_EQ(all.size(), 9u);
  EXPECT_THAT(w->Select("unit and"), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("Wrong expression")));
  w->Stop();
}

// A group key per selected test: the marker's first argument, else its keyword arguments, else its name; "" for
// tests without it.
TEST_F(PytestWorkerTest, SelectionCarriesEachTestsGroupKey) {
  auto w = Start();
  ASSERT_TRUE(w);
  std::vector<std::string> groups;
  TS_ASSERT_OK_AND_ASSIGN(auto slow, w->Select("slow", "slow", &groups));
  EXPECT_THAT(groups, ElementsAre("slow", "slow"));
  TS_ASSERT_OK_AND_ASSIGN(auto xfail, w->Select("slow", "xfail", &groups));
  EXPECT_THAT(groups, ElementsAre("", "xfail(reason=known bug)"));
  TS_ASSERT_OK_AND_ASSIGN(auto unit, w->Select("unit", "parametrize", &groups));
  ASSERT_EQ(groups.size(), unit.size());
  for (size_t i = 0; i < unit.size(); ++i) {
    EXPECT_EQ(groups[i], unit[i] == "test_w.py::test_fails" ? "" : "parametrize=i") << unit[i];
  }
  w->Stop();
}

// The module fixture lives across two batches and is torn down once, after the module's last test; the session
// fixture is set up once for the worker's life.
TEST_F(PytestWorkerTest, FixturesLiveAcrossBatchesAsInOneSerialRun) {
  auto w = Start();
  ASSERT_TRUE(w);
  ASSERT_TRUE(w->Run({"test_w.py::test_uses_module[0]", "test_w.py::test_uses_module[1]"}).ok());
  auto first = Results(*w, 1);  // the second is held back until its successor is known
  EXPECT_EQ(first.size(), 1u);
  ASSERT_TRUE(w->Run({"test_w.py::test_uses_module[2]", "test_w.py::test_uses_module[3]"}).ok());
  Results(*w, 2);
  ASSERT_TRUE(w->Flush().ok());
  Results(*w, 1);
  w->Stop();
  EXPECT_THAT(Events(), ElementsAre("session-setup", "module-setup", "test-0", "test-1", "test-2", "test-3",
                                    "module-teardown", "session-teardown"));
}

TEST_F(PytestWorkerTest, OutcomesMatchWhatPytestReports) {
  auto w = Start();
  ASSERT_TRUE(w);
  ASSERT_TRUE(w->Run({"test_w.py::test_fails", "test_w.py::test_skip", "test_w.py::test_xfail",
                      "test_w.py::test_setup_error", "test_w.py::test_uses_module[0]", "test_w.py::no_such_test"})
                  .ok());
  ASSERT_TRUE(w->Flush().ok());
  std::map<std::string, TestCase> r;
  bool unknown_seen = false;
  while (r.size() < 5) {
    auto e = w->Next(absl::Seconds(30));
    ASSERT_TRUE(e);
    if (e->kind == WorkerEvent::kUnknown) unknown_seen = e->id == "test_w.py::no_such_test";
    if (e->kind == WorkerEvent::kResult) r[e->id] = e->result;
  }
  EXPECT_TRUE(unknown_seen);
  const TestCase& failed = r["test_w.py::test_fails"];
  EXPECT_EQ(failed.result.outcome, Outcome::kFailed);
  EXPECT_THAT(failed.result.message, HasSubstr("boom"));
  EXPECT_THAT(failed.result.details, HasSubstr("assert 1 == 2"));
  EXPECT_THAT(failed.result.system_out, HasSubstr("to stdout"));
  EXPECT_THAT(failed.properties, ElementsAre(std::make_pair(std::string("k"), std::string("v"))));
  EXPECT_EQ(failed.classname, "test_w");
  EXPECT_EQ(r["test_w.py::test_skip"].result.outcome, Outcome::kSkipped);
  EXPECT_THAT(r["test_w.py::test_skip"].result.message, HasSubstr("no time"));
  EXPECT_EQ(r["test_w.py::test_xfail"].result.outcome, Outcome::kSkipped);
  EXPECT_EQ(r["test_w.py::test_setup_error"].result.outcome, Outcome::kError);
  EXPECT_THAT(r["test_w.py::test_setup_error"].result.message, HasSubstr("setup"));
  EXPECT_EQ(r["test_w.py::test_uses_module[0]"].result.outcome, Outcome::kPassed);
  w->Stop();
}

TEST_F(PytestWorkerTest, ACrashNamesTheTestThatWasRunning) {
  auto w = Start();
  ASSERT_TRUE(w);
  ASSERT_TRUE(w->Run({"test_w.py::test_uses_module[0]", "test_w.py::test_crash", "test_w.py::test_skip"}).ok());
  std::vector<std::string> started;
  std::string last_started;
  ProcessResult exit;
  while (true) {
    auto e = w->Next(absl::Seconds(30));
    ASSERT_TRUE(e);
    if (e->kind == WorkerEvent::kStart) last_started = e->id;
    if (e->kind == WorkerEvent::kExited) {
      exit = e->exit;
      break;
    }
  }
  EXPECT_EQ(last_started, "test_w.py::test_crash");
  EXPECT_EQ(exit.term_signal, SIGKILL);
}

TEST_F(PytestWorkerTest, CollectionErrorIsReportedWithPytestsText) {
  std::ofstream(dir_ + "/test_broken.py") << "import not_a_module_anywhere\n";
  WorkerOptions o;
  o.command = {"/usr/bin/python3", "-m", "pytest"};
  o.cwd = dir_;
  o.plugin_dir = std::string(TESTSHARD_SOURCE_DIR) + "/agent/python";
  o.scratch_dir = dir_ + "/scratch";
  EXPECT_THAT(PytestWorker::Start(o),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not_a_module_anywhere")));
}

TEST_F(PytestWorkerTest, PytestWithoutThePluginFailsClearly) {
  WorkerOptions o;
  o.command = {"/usr/bin/python3", "-m", "pytest"};
  o.cwd = dir_;
  o.plugin_dir = dir_ + "/nowhere";
  o.scratch_dir = dir_ + "/scratch";
  EXPECT_THAT(PytestWorker::Start(o),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("before the worker plugin connected")));
}

}  // namespace
}  // namespace testshard::agent

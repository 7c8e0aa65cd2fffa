// Runs the adapter's argv through a real pytest on a suite written by the test.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "agent/runner_adapter.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testshard::testing::StatusIs;

const std::vector<std::string> kPytest = {"/usr/bin/python3", "-m", "pytest"};

class PytestAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ts-pytest-XXXXXX";
    dir_ = mkdtemp(tmpl);
    Write("pytest.ini", "[pytest]\nmarkers =\n    unit\n    slow\n");
    Write("test_ids.py", R"PY(
import os, pytest

@pytest.mark.unit
@pytest.mark.parametrize("v", ["a b", "x;y", "$(touch pwned)", "q'\"", "\u00e9 \u00fc", "br[ack]et", "-dash"])
def test_p(v):
    assert not os.path.exists("pwned")

class TestK:
    @pytest.mark.unit
    def test_m(self):
        pass

@pytest.mark.slow
def test_fails():
    assert 1 == 2, "boom"

@pytest.mark.slow
def test_skipped():
    pytest.skip("not today")
)PY");
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) { std::ofstream(dir_ + "/" + name) << text; }

  ProcessResult Run(const std::vector<std::string>& argv, const std::string& out) {
    ProcessSpec spec;
    spec.argv = argv;
    spec.cwd = dir_;
    spec.stdout_path = spec.stderr_path = out;
    auto r = runner_.Run(spec, nullptr);
    EXPECT_TRUE(r.ok()) << r.status();
    return *r;
  }
  std::string Read(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  absl::StatusOr<std::vector<std::string>> Collect(const std::string& markers) {
    std::string out = dir_ + "/collect.out";
    ProcessResult r = Run(adapter_.CollectArgv(kPytest, markers), out);
    return adapter_.ParseCollection(Read(out), r);
  }

  std::string dir_;
  PytestAdapter adapter_;
  PosixProcessRunner runner_;
};

TEST_F(PytestAdapterTest, CollectsExactIdsForAMarkerExpression) {
  TS_ASSERT_OK_AND_ASSIGN(auto ids, Collect("unit"));
  EXPECT_THAT(ids, ElementsAre("test_ids.py::test_p[a b]", "test_ids.py::test_p[x;y]",
                               "test_ids.py::test_p[$(touch pwned)]", "test_ids.py::test_p[q'\"]",
                               "test_ids.py::test_p[\\xe9 \\xfc]", "test_ids.py::test_p[br[ack]et]",
                               "test_ids.py::test_p[-dash]", "test_ids.py::TestK::test_m"));
  TS_ASSERT_OK_AND_ASSIGN(ids, Collect("slow and not unit"));
  EXPECT_EQ(ids.size(), 2u);
  TS_ASSERT_OK_AND_ASSIGN(ids, Collect("nomarker"));
  EXPECT_TRUE(ids.empty());
}

TEST_F(PytestAdapterTest, CollectionErrorCarriesPytestsMessage) {
  Write("test_broken.py", "import no_such_module_here\n");
  EXPECT_THAT(Collect("unit"), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no_such_module_here")));
}

TEST_F(PytestAdapterTest, EveryIdRunsAsItselfAndGetsExactlyOneResult) {
  TS_ASSERT_OK_AND_ASSIGN(auto ids, Collect(""));
  ShardFiles files{dir_ + "/report.xml", dir_ + "/out.log"};
  ProcessResult r = Run(adapter_.RunArgv(kPytest, ids, files, 0), files.output_path);
  EXPECT_EQ(r.exit_code, 1);
  std::vector<TestCase> cases = adapter_.ParseResults(ids, files, r, 0);
  ASSERT_EQ(cases.size(), ids.size());
  std::map<Outcome, int> counts;
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(cases[i].id, ids[i]);
    ++counts[cases[i].result.outcome];
  }
  EXPECT_EQ(counts[Outcome::kPassed], 8);
  EXPECT_EQ(counts[Outcome::kFailed], 1);
  EXPECT_EQ(counts[Outcome::kSkipped], 1);
  EXPECT_FALSE(fs::exists(dir_ + "/pwned"));
  for (const TestCase& c : cases) {
    if (c.result.outcome == Outcome::kFailed) {
      EXPECT_THAT(c.result.details, HasSubstr("boom"));
    }
  }
}

TEST_F(PytestAdapterTest, MaxfailLeavesTheRestNotRun) {
  Write("test_many.py", "def test_a():\n    assert 0\n\ndef test_b():\n    assert 0\n\ndef test_c():\n    pass\n");
  std::vector<std::string> ids = {"test_many.py::test_a", "test_many.py::test_b", "test_many.py::test_c"};
  ShardFiles files{dir_ + "/report.xml", dir_ + "/out.log"};
  ProcessResult r = Run(adapter_.RunArgv(kPytest, ids, files, 1), files.output_path);
  std::vector<TestCase> cases = adapter_.ParseResults(ids, files, r, 1);
  EXPECT_EQ(cases[0].result.outcome, Outcome::kFailed);
  EXPECT_EQ(cases[1].result.outcome, Outcome::kNotRun);
  EXPECT_THAT(cases[1].result.message, HasSubstr("maxfail"));
  EXPECT_EQ(cases[2].result.outcome, Outcome::kNotRun);
}

TEST_F(PytestAdapterTest, ShardKilledMidRunGivesErrorsNotMissingTests) {
  Write("test_crash.py", "import os, signal\n\ndef test_ok():\n    pass\n\ndef test_die():\n"
                         "    print('about to die')\n    os.kill(os.getpid(), signal.SIGKILL)\n\ndef test_after():\n    pass\n");
  std::vector<std::string> ids = {"test_crash.py::test_ok", "test_crash.py::test_die", "test_crash.py::test_after"};
  ShardFiles files{dir_ + "/report.xml", dir_ + "/out.log"};
  ProcessResult r = Run(adapter_.RunArgv(kPytest, ids, files, 0), files.output_path);
  EXPECT_EQ(r.term_signal, SIGKILL);
  std::vector<TestCase> cases = adapter_.ParseResults(ids, files, r, 0);
  ASSERT_EQ(cases.size(), 3u);
  for (const TestCase& c : cases) {
    EXPECT_EQ(c.result.outcome, Outcome::kError) << c.id;
    EXPECT_THAT(c.result.message, HasSubstr("killed by signal 9"));
  }
}

TEST_F(PytestAdapterTest, TruncatedReportMakesErrorsNamingIt) {
  std::vector<std::string> ids = {"test_ids.py::TestK::test_m"};
  ShardFiles files{dir_ + "/report.xml", dir_ + "/out.log"};
  Write("report.xml", "<?xml version=\"1.0\"?><testsuites><testsuite name=\"pytest\"><testcase classname=\"test_ids.TestK\"");
  ProcessResult exited;
  exited.exit_code = 0;
  std::vector<TestCase> cases = adapter_.ParseResults(ids, files, exited, 0);
  EXPECT_EQ(cases[0].result.outcome, Outcome::kError);
  EXPECT_THAT(cases[0].result.message, HasSubstr("unreadable"));
}

}  // namespace
}  // namespace testshard::agent

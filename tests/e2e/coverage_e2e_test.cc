// Coverage from `testshard run` end to end (issue 9): a small package and its tests split across 2 agents, measured
// with real pytest-cov, merged by the coordinator, and compared line by line with one serial `pytest --cov`.
#include <signal.h>

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pugixml.hpp"
#include "tests/e2e/e2e_util.h"

namespace testshard::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kCalc[] = R"PY(
def add(a, b):
    return a + b


def sign(x):
    if x > 0:
        return 1
    elif x < 0:
        return -1
    return 0


def classify(values):
    out = []
    for v in values:
        if v % 2:
            out.append("odd")
        else:
            out.append("even")
    return out


def only_before_the_crash():
    total = 0
    for i in range(3):
        total += i
    return total


def never_called():
    return 42
)PY";

constexpr char kUnimported[] = R"PY(
def nobody_imports_me():
    return "not measured by any test, reported as missed everywhere"
)PY";

constexpr char kTestsA[] = R"PY(
import os, time, pytest
from app.calc import add, sign

@pytest.mark.parametrize("i", range(4))
def test_add(i, record_property):
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    time.sleep(0.2)  # long enough that both agents are up before the shards run out
    assert add(i, 1) == i + 1

def test_positive(record_property):
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    assert sign(5) == 1
)PY";

constexpr char kTestsB[] = R"PY(
import os, time, pytest
from app.calc import sign, classify

@pytest.mark.parametrize("i", range(4))
def test_negative(i, record_property):
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    time.sleep(0.2)
    assert sign(-1 - i) == -1

def test_classify(record_property):
    record_property("agent", os.environ["TESTSHARD_AGENT"])
    assert classify([1, 3]) == ["odd", "odd"]
)PY";

// The worker dies on test_die; what test_before measured in that same process must still count.
constexpr char kTestsCrash[] = R"PY(
import os, signal
from app.calc import only_before_the_crash

def test_before():
    assert only_before_the_crash() == 3

def test_die():
    os.kill(os.getpid(), signal.SIGKILL)
)PY";

std::string Config(const std::string& top, const std::string& coverage) {
  return absl::StrCat("command = [\"/usr/bin/python3\", \"-m\", \"pytest\"]\n", top, "\n", coverage,
                      "\n[[stages]]\nname = \"all\"\n");
}

// What a Cobertura report says about each line: "hit" or "miss", plus "(covered/total)" on branch lines. Keyed by
// the file's path relative to the project, whatever <source> the producer wrote.
using LineMap = std::map<std::string, std::map<int, std::string>>;

LineMap ReadLines(const std::string& path, const std::string& project_dir, std::string* error) {
  LineMap out;
  pugi::xml_document doc;
  if (!doc.load_file(path.c_str())) {
    *error = "cannot parse " + path;
    return out;
  }
  std::string source = doc.child("coverage").child("sources").child("source").text().get();
  fs::path base = source.empty() || source == "." ? fs::path(project_dir) : fs::path(source);
  for (pugi::xpath_node n : doc.select_nodes("//class")) {
    std::string file =
        fs::relative(base / n.node().attribute("filename").value(), project_dir).lexically_normal().string();
    for (pugi::xml_node line : n.node().child("lines").children("line")) {
      std::string what = line.attribute("hits").as_ullong() > 0 ? "hit" : "miss";
      std::string cond = line.attribute("condition-coverage").value();
      if (auto p = cond.find('('); p != std::string::npos) what += " " + cond.substr(p);
      out[file][line.attribute("number").as_int()] = what;
    }
  }
  return out;
}

class CoverageE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    project_.Write("app/__init__.py", "");
    project_.Write("app/calc.py", kCalc);
    project_.Write("app/unimported.py", kUnimported);
    project_.Write("tests/test_a.py", kTestsA);
    project_.Write("tests/test_b.py", kTestsB);
  }

  // One serial `pytest --cov` in the project, the reference.
  LineMap Serial(const std::vector<std::string>& extra = {}, bool branch = true) {
    ProcessSpec spec;
    spec.argv = {"/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--cov=app",
                 "--cov-report=xml:" + project_.dir() + "/serial.xml"};
    if (branch) spec.argv.push_back("--cov-branch");
    spec.argv.insert(spec.argv.end(), extra.begin(), extra.end());
    spec.cwd = project_.dir();
    spec.env["COVERAGE_FILE"] = project_.dir() + "/serial.coverage";
    spec.env["TESTSHARD_AGENT"] = "serial";
    spec.stdout_path = spec.stderr_path = project_.dir() + "/serial.out";
    PosixProcessRunner runner;
    auto r = runner.Run(spec, nullptr);
    EXPECT_TRUE(r.ok() && r->ok()) << project_.Read("serial.out");
    std::string error;
    LineMap lines = ReadLines(project_.dir() + "/serial.xml", project_.dir(), &error);
    EXPECT_EQ(error, "");
    return lines;
  }

  LineMap Merged(const std::string& name) {
    std::string error;
    LineMap lines = ReadLines(project_.dir() + "/" + name, project_.dir(), &error);
    EXPECT_EQ(error, "");
    return lines;
  }

  std::set<std::string> Agents() {
    std::set<std::string> agents;
    for (const ReportedCase& c : ReadReport(project_.dir() + "/report.xml").cases) {
      if (c.properties.count("agent")) agents.insert(c.properties.at("agent"));
    }
    return agents;
  }

  Project::Result Run(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"run", "--agents", "2", "--junit-out", "report.xml"};
    args.insert(args.end(), extra.begin(), extra.end());
    return project_.Testshard(args);
  }

  Project project_;
};

TEST_F(CoverageE2eTest, WarmWorkersOnTwoAgentsCoverWhatOneSerialRunCovers) {
  project_.Write("testshard.toml", Config("", "[coverage]\nsource = [\"app\"]\nbranch = true\n"));
  Project::Result r = Run();
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("Coverage report: " + project_.dir() + "/coverage.xml"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("warning: coverage")));
  EXPECT_EQ(Agents().size(), 2u) << r.output;
  LineMap serial = Serial();
  ASSERT_TRUE(serial.count("app/calc.py"));
  ASSERT_TRUE(serial.count("app/unimported.py"));
  EXPECT_EQ(Merged("coverage.xml"), serial);
}

TEST_F(CoverageE2eTest, OneProcessPerShardCoversWhatOneSerialRunCovers) {
  project_.Write("testshard.toml", Config("warm = false\n", "[coverage]\nsource = [\"app\"]\nbranch = true\n"
                                                            "cobertura = \"out/cov.xml\"\nlcov = \"out/cov.lcov\"\n"));
  Project::Result r = Run();
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  EXPECT_EQ(Agents().size(), 2u) << r.output;
  EXPECT_EQ(Merged("out/cov.xml"), Serial());
  std::string lcov = project_.Read("out/cov.lcov");
  EXPECT_THAT(lcov, HasSubstr("SF:app/calc.py"));
  EXPECT_THAT(lcov, HasSubstr("SF:app/unimported.py"));
}

TEST_F(CoverageE2eTest, FlagsTurnCoverageOnAndChooseTheOutputs) {
  project_.Write("testshard.toml", Config("", ""));
  Project::Result r = Run({"--cobertura-out", "flag.xml"});
  ASSERT_EQ(r.process.exit_code, 0) << r.output;
  // No [coverage] source: plain --cov measures everything under the workdir, the package among it.
  LineMap merged = Merged("flag.xml");
  EXPECT_EQ(merged["app/calc.py"], Serial({}, /*branch=*/false)["app/calc.py"]);
}

TEST_F(CoverageE2eTest, AWorkerCrashKeepsWhatEveryOtherTestCovered) {
  project_.Write("tests/test_crash.py", kTestsCrash);
  project_.Write("testshard.toml", Config("", "[coverage]\nsource = [\"app\"]\nbranch = true\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;  // test_die is an error
  Report report = ReadReport(project_.dir() + "/report.xml");
  int errors = 0;
  for (const ReportedCase& c : report.cases) errors += c.outcome == Outcome::kError;
  EXPECT_EQ(errors, 1) << r.output;
  // Everything but the test that killed its worker, measured in whichever processes ran it (test_before possibly
  // in the very worker that died).
  EXPECT_EQ(Merged("coverage.xml"), Serial({"--deselect", "tests/test_crash.py::test_die"}));
}

// One process per shard: the shard's process dies on test_die (the last test of its shard); test_before's lines,
// measured in that process, are kept all the same.
TEST_F(CoverageE2eTest, AOneShotShardKilledMidRunKeepsWhatItsEarlierTestsCovered) {
  project_.Write("tests/test_crash.py", kTestsCrash);
  project_.Write("testshard.toml", Config("warm = false\n", "[coverage]\nsource = [\"app\"]\nbranch = true\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 1) << r.output;
  EXPECT_EQ(Merged("coverage.xml"), Serial({"--deselect", "tests/test_crash.py::test_die"}));
}

TEST_F(CoverageE2eTest, BadCoverageConfigIsRefusedBeforeAnythingRuns) {
  project_.Write("testshard.toml", Config("", "[coverage]\nsource = [\"app\"]\nbranch = \"yes\"\n"));
  Project::Result r = Run();
  EXPECT_EQ(r.process.exit_code, 4) << r.output;
  EXPECT_THAT(r.output, HasSubstr("testshard.toml:5: coverage.branch: expected true or false"));
  EXPECT_FALSE(fs::exists(project_.dir() + "/coverage.xml"));
  project_.Write("testshard.toml", Config("", "[coverage]\nsources = [\"app\"]\n"));
  r = Run();
  EXPECT_EQ(r.process.exit_code, 4) << r.output;
  EXPECT_THAT(r.output, HasSubstr("testshard.toml:4: coverage.sources: unknown key"));
}


// `testshard coordinator` with agents in checkouts of their own, as on other machines: each agent's report names
// its own absolute paths, and the merged report is relative to the coordinator's project all the same.
class DistributedCoverageE2eTest : public CoverageE2eTest {
 protected:
  static constexpr char kToken[] = "0123456789abcdef0123456789abcdef";

  void Checkouts() {
    for (const char* n : {"checkout-1", "checkout-2"}) {
      // A pytest.ini makes each checkout its own rootdir, so test ids agree between agents.
      project_.Write(std::string(n) + "/pytest.ini", "[pytest]\n");
      for (const char* part : {"app", "tests"}) {
        fs::copy(project_.dir() + "/" + part, project_.dir() + "/" + n + "/" + part, fs::copy_options::recursive);
      }
    }
  }

  Subprocess Start(std::vector<std::string> args, const std::string& log) {
    return project_.Start(args, log, {{"TESTSHARD_TOKEN", kToken}}, absl::Minutes(3));
  }

  Subprocess Coordinator() {
    std::string socket = project_.dir() + "/coordinator.sock";
    Subprocess c = Start({"coordinator", "--listen", "unix:" + socket, "--agents", "2", "--lease-ttl", "1",
                          "--junit-out", "report.xml", "--lcov-out", "merged.lcov"},
                         "coordinator.log");
    for (int i = 0; i < 400 && !fs::exists(socket); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    return c;
  }

  Subprocess Agent(int i) {
    std::string n = std::to_string(i);
    return Start({"agent", "--coordinator", "unix:" + project_.dir() + "/coordinator.sock", "--name", "remote-" + n,
                  "--root", project_.dir() + "/checkout-" + n, "--work-dir", project_.dir() + "/work-" + n},
                 "agent-" + n + ".log");
  }
};

TEST_F(DistributedCoverageE2eTest, AgentsInOtherCheckoutsMergeIntoProjectRelativePaths) {
  Checkouts();
  // A long upload_timeout: the coordinator must end because the reports came, not because it gave up.
  project_.Write("testshard.toml", Config("", "[coverage]\nsource = [\"app\"]\nbranch = true\nupload_timeout = \"10m\"\n"));
  Subprocess coordinator = Coordinator();
  Subprocess a1 = Agent(1);
  Subprocess a2 = Agent(2);
  ProcessResult c = coordinator.Wait();
  ASSERT_EQ(c.exit_code, 0) << project_.Read("coordinator.log");
  EXPECT_EQ(a1.Wait().exit_code, 0) << project_.Read("agent-1.log");
  EXPECT_EQ(a2.Wait().exit_code, 0) << project_.Read("agent-2.log");
  std::string log = project_.Read("coordinator.log");
  EXPECT_THAT(log, ::testing::Not(HasSubstr("warning: coverage"))) << log;
  EXPECT_EQ(Agents().size(), 2u) << log;
  EXPECT_EQ(Merged("coverage.xml"), Serial({"tests"}));  // the project's own tests, not the checkouts'
  std::string lcov = project_.Read("merged.lcov");
  EXPECT_THAT(lcov, HasSubstr("SF:app/calc.py"));
  EXPECT_THAT(lcov, ::testing::Not(HasSubstr("checkout-")));
}

// An agent killed mid-run never reports: the coordinator says which one, writes what the others sent, and does not
// wait out upload_timeout for it.
TEST_F(DistributedCoverageE2eTest, AKilledAgentIsAWarningNamingItNotAHang) {
  project_.Write("tests/test_slow.py", R"PY(
import os, time
from app.calc import add

def test_slow():
    agent = os.environ["TESTSHARD_AGENT"]
    if agent != "serial" and not os.path.exists(os.path.join("..", "killed")):
        open(os.path.join("..", agent + ".started"), "w").close()
        time.sleep(120)
    assert add(0, 0) == 0
)PY");
  Checkouts();
  project_.Write("testshard.toml", Config("", "[coverage]\nsource = [\"app\"]\nupload_timeout = \"10m\"\n"));
  Subprocess coordinator = Coordinator();
  std::map<std::string, Subprocess> agents;
  agents.emplace("remote-1", Agent(1));
  agents.emplace("remote-2", Agent(2));
  std::string victim;
  for (int i = 0; i < 2400 && victim.empty(); ++i) {
    for (const auto& [name, p] : agents) {
      if (fs::exists(project_.dir() + "/" + name + ".started")) victim = name;
    }
    if (victim.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_FALSE(victim.empty()) << project_.Read("coordinator.log");
  agents.at(victim).SignalGroup(SIGKILL);
  agents.at(victim).Wait();
  project_.Write("killed", "");
  ProcessResult c = coordinator.Wait();
  std::string log = project_.Read("coordinator.log");
  EXPECT_FALSE(c.timed_out) << log;
  EXPECT_EQ(c.exit_code, 0) << log;  // test_slow ran again on the other agent
  EXPECT_THAT(log, HasSubstr("warning: coverage: agent " + victim + " ("));
  EXPECT_THAT(log, HasSubstr("stopped before the run ended"));
  EXPECT_THAT(log, HasSubstr("from 1 agent report(s)"));
  EXPECT_THAT(project_.Read("coverage.xml"), HasSubstr("filename=\"app/calc.py\""));
}

}  // namespace
}  // namespace testshard::e2e

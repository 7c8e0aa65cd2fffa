// `testshard merge` end to end: the inputs are produced here by the real tools, in shards run from different
// directories, and the merged report is compared with one serial run of the same suite. Reports are read back
// with pugixml and a plain lcov scan, not with testshard's own readers.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pugixml.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Runs argv in `cwd` with output to `log`; returns the exit code (128+signal when killed). Never a shell.
int RunTool(const std::vector<std::string>& argv, const std::string& cwd, const std::string& log,
        const std::vector<std::string>& env = {}) {
  pid_t pid = fork();
  if (pid == 0) {
    if (chdir(cwd.c_str()) != 0) _exit(126);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// ---- independent views of the reports

struct JunitView {
  std::map<std::string, std::string> outcomes;  // "classname::name" -> passed/failure/error/skipped
  int tests = 0, failures = 0, errors = 0, skipped = 0;
  std::string text;
};

void CollectCases(pugi::xml_node node, JunitView* v) {
  for (pugi::xml_node child : node.children()) {
    if (std::string(child.name()) == "testcase") {
      std::string outcome = child.child("error")     ? "error"
                            : child.child("failure") ? "failure"
                            : child.child("skipped") ? "skipped"
                                                     : "passed";
      std::string key = std::string(child.attribute("classname").value()) + "::" + child.attribute("name").value();
      v->outcomes[key] = outcome;
    } else {
      CollectCases(child, v);
    }
  }
}

JunitView ReadJunitView(const std::string& path) {
  JunitView v;
  v.text = ReadFile(path);
  pugi::xml_document doc;
  pugi::xml_parse_result r = doc.load_string(v.text.c_str());
  EXPECT_TRUE(r) << path << ": " << r.description();
  CollectCases(doc, &v);
  pugi::xml_node root = doc.child("testsuites");
  v.tests = root.attribute("tests").as_int();
  v.failures = root.attribute("failures").as_int();
  v.errors = root.attribute("errors").as_int();
  v.skipped = root.attribute("skipped").as_int();
  return v;
}

struct CoverageView {
  std::map<std::string, std::map<int, uint64_t>> lines;  // file -> line -> hits
  uint64_t branches_valid = 0, branches_covered = 0;
};

CoverageView ReadCoberturaView(const std::string& path) {
  CoverageView v;
  pugi::xml_document doc;
  EXPECT_TRUE(doc.load_file(path.c_str())) << path;
  pugi::xml_node root = doc.child("coverage");
  v.branches_valid = root.attribute("branches-valid").as_ullong();
  v.branches_covered = root.attribute("branches-covered").as_ullong();
  for (pugi::xpath_node cls : doc.select_nodes("//class")) {
    auto& lines = v.lines[cls.node().attribute("filename").value()];
    for (pugi::xml_node line : cls.node().child("lines").children("line")) {
      lines[line.attribute("number").as_int()] = line.attribute("hits").as_ullong();
    }
  }
  return v;
}

CoverageView ReadLcovView(const std::string& path, const std::string& strip = "") {
  CoverageView v;
  std::string file, line;
  std::istringstream in(ReadFile(path));
  while (std::getline(in, line)) {
    if (line.starts_with("SF:")) {
      file = line.substr(3);
      if (!strip.empty() && file.starts_with(strip + "/")) file = file.substr(strip.size() + 1);
      v.lines[file];
    } else if (line.starts_with("DA:")) {
      size_t comma = line.find(',');
      size_t comma2 = line.find(',', comma + 1);
      v.lines[file][std::stoi(line.substr(3, comma - 3))] += std::stoull(line.substr(comma + 1, comma2 - comma - 1));
    } else if (line.starts_with("BRDA:")) {
      // Counted from the records: lcov 1.16's capture writes no BRF/BRH summaries.
      std::string taken = line.substr(line.rfind(',') + 1);
      ++v.branches_valid;
      v.branches_covered += taken != "-" && taken != "0";
    }
  }
  return v;
}

// ---- fixture: a private temp dir per test

class MergeE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "merge-e2e-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    log_ = dir_ + "/log.txt";
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- tool output:\n" << ReadFile(log_);
    fs::remove_all(dir_);
  }
  std::string P(const std::string& rel) const { return dir_ + "/" + rel; }

  // Runs `testshard merge ARGS...`; returns its exit code.
  int Merge(std::vector<std::string> args) {
    args.insert(args.begin(), {TESTSHARD_BIN, "merge"});
    return RunTool(args, dir_, log_);
  }

  std::string dir_, log_;
};

// ---- pytest + pytest-cov

constexpr char kCalc[] = R"(def add(a, b):
    return a + b


def sign(x):
    if x > 0:
        return 1
    elif x < 0:
        return -1
    return 0


def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x
)";

constexpr char kText[] = R"(def shout(s):
    if not s:
        return ""
    return s.upper() + "!"


def unused(s):
    return s * 2
)";

constexpr char kTestCalc[] = R"(import pytest
from mypkg.calc import add, sign, clamp


def test_add():
    assert add(1, 2) == 3


def test_sign_pos():
    assert sign(3) == 1


def test_fails():
    assert add(1, 1) == 3


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass


@pytest.mark.parametrize("x,want", [(-5, 0), (5, 5), (50, 10)])
def test_clamp(x, want):
    assert clamp(x, 0, 10) == want


class TestK:
    def test_method(self):
        assert sign(0) == 0
)";

constexpr char kTestText[] = R"(import pytest
from mypkg.text import shout


def test_shout():
    assert shout("hi") == "HI!"


def test_output():
    print("captured <&> output")
    assert shout("") == ""


@pytest.mark.xfail(reason="known")
def test_xfail():
    assert shout("a") == "b"


def test_sign_neg():
    from mypkg.calc import sign
    assert sign(-2) == -1


@pytest.fixture
def broken():
    raise RuntimeError("boom in setup")


def test_errors(broken):
    pass
)";

// Writes the Python project into `root` and runs pytest there on `tests`.
int RunPytest(const std::string& root, const std::vector<std::string>& tests, const std::string& log,
              const std::string& out_prefix, const std::string& junit_family = "xunit2") {
  WriteFile(fs::path(root) / "mypkg/__init__.py", "");
  WriteFile(fs::path(root) / "mypkg/calc.py", kCalc);
  WriteFile(fs::path(root) / "mypkg/text.py", kText);
  WriteFile(fs::path(root) / "tests/test_calc.py", kTestCalc);
  WriteFile(fs::path(root) / "tests/test_text.py", kTestText);
  std::vector<std::string> argv = {"/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   "-o", "junit_logging=all", "-o", "junit_family=" + junit_family,
                                   "--junitxml=" + out_prefix + ".junit.xml", "--cov=mypkg", "--cov-branch",
                                   "--cov-report=xml:" + out_prefix + ".cobertura.xml",
                                   "--cov-report=lcov:" + out_prefix + ".info"};
  argv.insert(argv.end(), tests.begin(), tests.end());
  return RunTool(argv, root, log, {"PYTHONDONTWRITEBYTECODE=1", "PYTEST_ADDOPTS="});
}

TEST_F(MergeE2eTest, PytestShardsFromTwoDirectoriesEqualOneSerialRun) {
  // Two agents, each in its own checkout (one writing pytest's xunit1 dialect); one serial run for reference.
  ASSERT_EQ(RunPytest(P("agent-a/ws"), {"tests/test_calc.py"}, log_, P("a"), "xunit1"), 1);
  ASSERT_EQ(RunPytest(P("agent-b/checkout"), {"tests/test_text.py"}, log_, P("b")), 1);
  ASSERT_EQ(RunPytest(P("serial"), {"tests"}, log_, P("s")), 1);

  ASSERT_EQ(Merge({"--junit-out", P("merged.xml"), "--cobertura-out", P("merged.cobertura.xml"), "--lcov-out",
                   P("merged-from-cobertura.info"), "--input-root", P("a.cobertura.xml") + "=" + P("agent-a/ws"),
                   "--input-root", P("b.cobertura.xml") + "=" + P("agent-b/checkout"), P("a.junit.xml"),
                   P("b.junit.xml"), P("a.cobertura.xml"), P("b.cobertura.xml")}),
            0);
  ASSERT_EQ(Merge({"--lcov-out", P("merged.info"), "--cobertura-out", P("merged-from-lcov.xml"), P("a.info"),
                   P("b.info")}),
            0);
  ASSERT_EQ(Merge({"--junit-out", P("serial-merged.xml"), "--cobertura-out", P("serial.xml"), "--input-root",
                   P("s.cobertura.xml") + "=" + P("serial"), P("s.junit.xml"), P("s.cobertura.xml")}),
            0);

  // JUnit: every test once, with the serial run's outcome; counts equal the serial run's own attributes.
  JunitView merged = ReadJunitView(P("merged.xml"));
  JunitView serial = ReadJunitView(P("s.junit.xml"));
  EXPECT_EQ(merged.outcomes, serial.outcomes);
  EXPECT_EQ(merged.outcomes.size(), 13u);
  pugi::xml_document sdoc;
  ASSERT_TRUE(sdoc.load_file(P("s.junit.xml").c_str()));
  pugi::xml_node ssuite = sdoc.child("testsuites").child("testsuite");
  EXPECT_EQ(merged.tests, ssuite.attribute("tests").as_int());
  EXPECT_EQ(merged.failures, ssuite.attribute("failures").as_int());
  EXPECT_EQ(merged.errors, ssuite.attribute("errors").as_int());
  EXPECT_EQ(merged.skipped, ssuite.attribute("skipped").as_int());
  EXPECT_EQ(merged.outcomes["tests.test_text::test_errors"], "error");
  EXPECT_THAT(merged.text, HasSubstr("file=\"tests/test_calc.py\""));  // xunit1's extra attribute is kept
  EXPECT_THAT(merged.text, HasSubstr("captured &lt;&amp;&gt; output"));
  // Times always carry a decimal point.
  EXPECT_THAT(merged.text, Not(testing::ContainsRegex("time=\"[0-9]+\"")));

  // Coverage: paths relative to the project whatever directory each agent ran in; lines and branches equal the
  // serial run, from Cobertura in and from lcov in, out in both formats.
  CoverageView serial_cov = ReadCoberturaView(P("s.cobertura.xml"));  // paths relative to serial/mypkg
  CoverageView serial_norm = ReadCoberturaView(P("serial.xml"));     // the same, project-relative
  ASSERT_EQ(serial_norm.lines.size(), 3u);
  EXPECT_EQ(serial_norm.lines["mypkg/calc.py"], serial_cov.lines["calc.py"]);
  for (const std::string& out : {P("merged.cobertura.xml"), P("merged-from-lcov.xml")}) {
    SCOPED_TRACE(out);
    CoverageView m = ReadCoberturaView(out);
    EXPECT_EQ(m.lines, serial_norm.lines);
    if (out == P("merged.cobertura.xml")) {
      EXPECT_EQ(m.branches_valid, serial_cov.branches_valid);
      EXPECT_EQ(m.branches_covered, serial_cov.branches_covered);
    }
  }
  CoverageView serial_lcov = ReadLcovView(P("s.info"));
  CoverageView merged_lcov = ReadLcovView(P("merged.info"));
  EXPECT_EQ(merged_lcov.lines, serial_lcov.lines);
  EXPECT_EQ(merged_lcov.branches_valid, serial_lcov.branches_valid);
  EXPECT_EQ(merged_lcov.branches_covered, serial_lcov.branches_covered);
  EXPECT_EQ(ReadLcovView(P("merged-from-cobertura.info")).lines, serial_lcov.lines);
}

TEST_F(MergeE2eTest, RetriedPytestShardIsReportedOnceAsFlaky) {
  // The first attempt of the shard fails test_fails; the retry (with the bug fixed) passes it.
  ASSERT_EQ(RunPytest(P("try1"), {"tests/test_calc.py"}, log_, P("try1")), 1);
  std::string fixed = kTestCalc;
  fixed.replace(fixed.find("add(1, 1) == 3"), 14, "add(1, 1) == 2");
  WriteFile(P("try2/tests/test_calc.py"), fixed);
  ASSERT_EQ(RunPytest(P("try2"), {"tests/test_calc.py"}, log_, P("try2")), 1);  // RunPytest rewrites the tests...
  WriteFile(P("try2/tests/test_calc.py"), fixed);                              // ...so fix and run again
  std::vector<std::string> argv = {"/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   "--junitxml=" + P("try2.junit.xml"), "tests/test_calc.py"};
  ASSERT_EQ(RunTool(argv, P("try2"), log_, {"PYTHONDONTWRITEBYTECODE=1"}), 0);

  ASSERT_EQ(Merge({"--junit-out", P("merged.xml"), P("try1.junit.xml"), P("try2.junit.xml")}), 0);
  JunitView v = ReadJunitView(P("merged.xml"));
  EXPECT_EQ(v.outcomes.size(), 8u);
  EXPECT_EQ(v.tests, 8);
  EXPECT_EQ(v.failures, 0);
  EXPECT_EQ(v.outcomes["tests.test_calc::test_fails"], "passed");
  EXPECT_THAT(v.text, HasSubstr("<flakyFailure message=\"assert 2 == 3"));
}

TEST_F(MergeE2eTest, BrokenInputsBecomeErrorsAndLoseNothingElse) {
  ASSERT_EQ(RunPytest(P("good"), {"tests/test_text.py"}, log_, P("good")), 1);
  ASSERT_EQ(RunPytest(P("crashed"), {"tests/test_calc.py"}, log_, P("crashed")), 1);
  // The crashed shard's file is cut inside its fourth test case, as a killed pytest leaves it.
  std::string full = ReadFile(P("crashed.junit.xml"));
  size_t cut = full.find("<skipped", full.find("name=\"test_skipped\"")) + 12;
  WriteFile(P("crashed.junit.xml"), full.substr(0, cut));
  WriteFile(P("empty.xml"), "");
  std::string garbage;
  for (int i = 0; i < 3000; ++i) garbage.push_back(static_cast<char>((i * 7919 + 13) & 0xFF));
  WriteFile(P("binary.xml"), garbage);
  WriteFile(P("laughs.xml"),
            "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;\">"
            "<!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;\">]><testsuites><testsuite name=\"&c;\"/></testsuites>");
  WriteFile(P("xxe.xml"), "<!DOCTYPE t [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><testsuite name=\"&x;\"/>");

  int rc = Merge({"--junit-out", P("merged.xml"), "--stage", P("crashed.junit.xml") + "=unit", P("good.junit.xml"),
                  P("crashed.junit.xml"), P("empty.xml"), P("binary.xml"), P("laughs.xml"), P("xxe.xml"),
                  P("missing.xml")});
  EXPECT_EQ(rc, 2);
  std::string log = ReadFile(log_);
  for (const char* name : {"crashed.junit.xml", "empty.xml", "binary.xml", "laughs.xml", "xxe.xml", "missing.xml"}) {
    EXPECT_THAT(log, HasSubstr(name));
  }
  EXPECT_THAT(log, HasSubstr("truncated"));
  EXPECT_THAT(log, HasSubstr("empty file"));
  EXPECT_THAT(log, HasSubstr("entity declaration"));

  JunitView v = ReadJunitView(P("merged.xml"));
  // Every test of the good shard keeps its outcome.
  JunitView good = ReadJunitView(P("good.junit.xml"));
  for (const auto& [name, outcome] : good.outcomes) EXPECT_EQ(v.outcomes[name], outcome) << name;
  // The crashed shard: complete cases kept, the cut one an error, and one error entry for the file.
  EXPECT_EQ(v.outcomes["tests.test_calc::test_add"], "passed");
  EXPECT_EQ(v.outcomes["tests.test_calc::test_fails"], "failure");
  EXPECT_EQ(v.outcomes["tests.test_calc::test_skipped"], "error");
  for (const char* name : {"crashed.junit.xml", "empty.xml", "binary.xml", "laughs.xml", "xxe.xml", "missing.xml"}) {
    EXPECT_EQ(v.outcomes["testshard.input::" + P(name)], "error") << name;
  }
  EXPECT_EQ(v.tests, static_cast<int>(v.outcomes.size()));
  EXPECT_EQ(v.errors, 1 /*test_errors*/ + 1 /*cut case*/ + 6 /*file entries*/);
  EXPECT_THAT(v.text, Not(HasSubstr("root:")));
}

// ---- GoogleTest

TEST_F(MergeE2eTest, GoogleTestShardsEqualOneSerialRun) {
  for (int i = 0; i < 2; ++i) {
    RunTool({GTEST_SAMPLE_BIN, "--gtest_output=xml:" + P("g" + std::to_string(i) + ".xml")}, dir_, log_,
        {"GTEST_TOTAL_SHARDS=2", "GTEST_SHARD_INDEX=" + std::to_string(i)});
  }
  RunTool({GTEST_SAMPLE_BIN, "--gtest_output=xml:" + P("serial.xml")}, dir_, log_);
  ASSERT_EQ(Merge({"--junit-out", P("merged.xml"), P("g0.xml"), P("g1.xml")}), 0);
  ASSERT_EQ(Merge({"--junit-out", P("serial-merged.xml"), P("serial.xml")}), 0);
  JunitView merged = ReadJunitView(P("merged.xml"));
  JunitView serial = ReadJunitView(P("serial-merged.xml"));
  EXPECT_EQ(merged.outcomes, serial.outcomes);
  EXPECT_EQ(merged.tests, 10);
  EXPECT_EQ(merged.failures, 3);  // TwoFailures (one test, two assertions), BadBytes, Nums/Parity.Even/1
  EXPECT_EQ(merged.skipped, 2);   // the skip and the disabled test
  EXPECT_EQ(std::make_tuple(merged.tests, merged.failures, merged.skipped),
            std::make_tuple(serial.tests, serial.failures, serial.skipped));
  EXPECT_EQ(merged.outcomes["Math::DISABLED_Off"], "skipped");
  EXPECT_THAT(merged.text, HasSubstr("first"));
  EXPECT_THAT(merged.text, HasSubstr("second"));
  EXPECT_THAT(merged.text, HasSubstr("bad bytes \xEF\xBF\xBD\xEF\xBF\xBD"));
}

// ---- ctest --output-junit

TEST_F(MergeE2eTest, CtestShardsEqualOneSerialRun) {
  WriteFile(P("proj/CMakeLists.txt"), R"(cmake_minimum_required(VERSION 3.21)
project(sample NONE)
enable_testing()
add_test(NAME ok1 COMMAND true)
add_test(NAME ok2 COMMAND true)
add_test(NAME bad COMMAND false)
add_test(NAME off COMMAND true)
set_tests_properties(off PROPERTIES DISABLED TRUE)
add_test(NAME ok3 COMMAND true)
)");
  ASSERT_EQ(RunTool({"cmake", "-S", P("proj"), "-B", P("proj/build")}, dir_, log_), 0);
  RunTool({"ctest", "--test-dir", P("proj/build"), "--output-junit", P("c1.xml"), "-I", "1,,2"}, dir_, log_);
  RunTool({"ctest", "--test-dir", P("proj/build"), "--output-junit", P("c2.xml"), "-I", "2,,2"}, dir_, log_);
  RunTool({"ctest", "--test-dir", P("proj/build"), "--output-junit", P("cs.xml")}, dir_, log_);
  ASSERT_EQ(Merge({"--junit-out", P("merged.xml"), "--stage", P("c1.xml") + "=ctest", "--stage",
                   P("c2.xml") + "=ctest", P("c1.xml"), P("c2.xml")}),
            0);
  ASSERT_EQ(Merge({"--junit-out", P("serial.xml"), "--stage", P("cs.xml") + "=ctest", P("cs.xml")}), 0);
  JunitView merged = ReadJunitView(P("merged.xml"));
  JunitView serial = ReadJunitView(P("serial.xml"));
  EXPECT_EQ(merged.outcomes, serial.outcomes);
  EXPECT_EQ(merged.outcomes.size(), 5u);
  EXPECT_EQ(merged.outcomes["bad::bad"], "failure");
  EXPECT_EQ(merged.outcomes["off::off"], "skipped");
  EXPECT_EQ(merged.failures, 1);
  // ctest writes whole-second suite times; ours always have a decimal point.
  EXPECT_THAT(merged.text, HasSubstr("time=\""));
  EXPECT_THAT(merged.text, Not(testing::ContainsRegex("time=\"[0-9]+\"")));
}

// ---- gcc --coverage with lcov/geninfo and gcovr

constexpr char kProg[] = R"(#include <stdlib.h>
int classify(int x) {
  if (x > 0) return 1;
  else if (x < 0) return -1;
  return 0;
}
int twice(int x) { return 2 * x; }
int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) classify(atoi(argv[i]));
  return 0;
}
)";

// Builds prog.c with --coverage in `dir`, runs it once per argument list, and captures lcov and gcovr reports.
void CoverageShard(const std::string& dir, const std::vector<std::vector<std::string>>& runs, const std::string& log,
                   const std::string& out_prefix) {
  WriteFile(fs::path(dir) / "prog.c", kProg);
  ASSERT_EQ(RunTool({"gcc", "--coverage", "-O0", "-o", "prog", "prog.c"}, dir, log), 0);
  for (std::vector<std::string> args : runs) {
    args.insert(args.begin(), "./prog");
    ASSERT_EQ(RunTool(args, dir, log), 0);
  }
  ASSERT_EQ(RunTool({"lcov", "--quiet", "--capture", "--rc", "lcov_branch_coverage=1", "--directory", ".",
                 "--output-file", out_prefix + ".info"},
                dir, log),
            0);
  ASSERT_EQ(RunTool({"gcovr", "--root", ".", "--xml", out_prefix + ".xml"}, dir, log), 0);
}

TEST_F(MergeE2eTest, GccCoverageShardsSumToOneSerialRun) {
  ASSERT_NO_FATAL_FAILURE(CoverageShard(P("agent1"), {{"5"}, {"7", "0"}}, log_, P("c1")));
  ASSERT_NO_FATAL_FAILURE(CoverageShard(P("agent2"), {{"-3"}}, log_, P("c2")));
  ASSERT_NO_FATAL_FAILURE(CoverageShard(P("serial"), {{"5"}, {"7", "0"}, {"-3"}}, log_, P("cs")));

  ASSERT_EQ(Merge({"--lcov-out", P("merged.info"), "--cobertura-out", P("merged-lcov.xml"), "--input-root",
                   P("c1.info") + "=" + P("agent1"), "--input-root", P("c2.info") + "=" + P("agent2"), P("c1.info"),
                   P("c2.info")}),
            0);
  ASSERT_EQ(Merge({"--cobertura-out", P("merged-gcovr.xml"), "--input-root", P("c1.xml") + "=" + P("agent1"),
                   "--input-root", P("c2.xml") + "=" + P("agent2"), P("c1.xml"), P("c2.xml")}),
            0);
  // Counted data: hits add up to exactly what one process running everything counted.
  CoverageView serial = ReadLcovView(P("cs.info"), P("serial"));
  CoverageView merged = ReadLcovView(P("merged.info"));
  ASSERT_EQ(merged.lines.count("prog.c"), 1u);
  EXPECT_EQ(merged.lines, serial.lines);
  EXPECT_EQ(merged.branches_valid, serial.branches_valid);
  EXPECT_EQ(merged.branches_covered, serial.branches_covered);
  std::string text = ReadFile(P("merged.info"));
  EXPECT_THAT(text, HasSubstr("FNDA:4,classify"));
  EXPECT_THAT(text, HasSubstr("FNDA:0,twice"));
  EXPECT_EQ(ReadCoberturaView(P("merged-lcov.xml")).lines["prog.c"], serial.lines["prog.c"]);
  // gcovr's Cobertura: line hits exact; its branches are bare counts, merged as a lower bound.
  CoverageView gcovr_serial = ReadCoberturaView(P("cs.xml"));
  CoverageView gcovr_merged = ReadCoberturaView(P("merged-gcovr.xml"));
  EXPECT_EQ(gcovr_merged.lines["prog.c"], gcovr_serial.lines["prog.c"]);
  EXPECT_LE(gcovr_merged.branches_covered, gcovr_serial.branches_covered);
  EXPECT_EQ(gcovr_merged.branches_valid, gcovr_serial.branches_valid);
}

TEST_F(MergeE2eTest, CoverageFromAnotherRevisionIsRefused) {
  ASSERT_NO_FATAL_FAILURE(CoverageShard(P("old"), {{"5"}}, log_, P("old")));
  ASSERT_EQ(RunPytest(P("a"), {"tests/test_calc.py"}, log_, P("a")), 1);
  // The same Python project one edit later: a statement added to calc.py.
  ASSERT_EQ(RunPytest(P("b"), {"tests/test_text.py"}, log_, P("b")), 1);
  std::string calc = kCalc;
  WriteFile(P("b/mypkg/calc.py"), "import os\n" + calc);
  std::vector<std::string> argv = {"/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   "--cov=mypkg", "--cov-report=lcov:" + P("b.info"), "tests/test_text.py"};
  RunTool(argv, P("b"), log_, {"PYTHONDONTWRITEBYTECODE=1"});
  int rc = Merge({"--lcov-out", P("merged.info"), P("a.info"), P("b.info")});
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(ReadFile(log_), HasSubstr("different source revisions"));
  // Explicit revisions are refused whatever the data says.
  rc = Merge({"--lcov-out", P("merged2.info"), "--revision", P("a.info") + "=1111", "--revision",
              P("old.info") + "=2222", P("a.info"), P("old.info")});
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(ReadFile(log_), HasSubstr("refusing to merge different revisions"));
  // What could be merged is still written.
  EXPECT_THAT(ReadFile(P("merged2.info")), HasSubstr("SF:mypkg/calc.py"));
}

// `testshard` merges on its own (a merge job needs nothing else) and hands every other subcommand to
// testshard-core beside it; without that file it says so instead of failing obscurely.
TEST_F(MergeE2eTest, FrontBinaryMergesAloneAndNamesAMissingCore) {
  fs::create_directories(P("bin"));
  fs::copy_file(TESTSHARD_BIN, P("bin/testshard"));
  fs::permissions(P("bin/testshard"), fs::perms::owner_exec, fs::perm_options::add);
  WriteFile(P("in.xml"),
            R"(<testsuites><testsuite name="s"><testcase classname="c" name="t"/></testsuite></testsuites>)");
  EXPECT_EQ(RunTool({P("bin/testshard"), "merge", "--junit-out", P("out.xml"), P("in.xml")}, dir_, log_), 0);
  EXPECT_EQ(ReadJunitView(P("out.xml")).tests, 1);
  EXPECT_EQ(RunTool({P("bin/testshard"), "version"}, dir_, log_), 127);
  EXPECT_THAT(ReadFile(log_), HasSubstr("cannot run " + P("bin/testshard-core")));
  // Beside the real core, the same command runs it.
  EXPECT_EQ(RunTool({TESTSHARD_BIN, "version"}, dir_, log_), 0);
  EXPECT_THAT(ReadFile(log_), HasSubstr("testshard 0.1.0"));
}

TEST_F(MergeE2eTest, UsageErrorsExitFour) {
  EXPECT_EQ(Merge({P("whatever.xml")}), 4);
  EXPECT_EQ(Merge({"--junit-out", P("o.xml"), "--suite-per", "planet", P("x.xml")}), 4);
}

}  // namespace

#include "common/report/junit_merger.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pugixml.hpp"

namespace testshard::report {
namespace {

using ::testing::HasSubstr;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

std::string Pytest(const std::string& cases) {
  return R"(<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="1">)" + cases +
         "</testsuite></testsuites>";
}
std::string Pass(const std::string& name, double t = 0.5) {
  return R"(<testcase classname="tests.test_a" name=")" + name + R"(" time=")" + std::to_string(t) + R"("/>)";
}
std::string Fail(const std::string& name, double t = 0.25) {
  return R"(<testcase classname="tests.test_a" name=")" + name + R"(" time=")" + std::to_string(t) +
         R"("><failure message="boom">trace of )" + name + "</failure></testcase>";
}

class JunitMergerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = JunitMerger::Create(options_);
    ASSERT_TRUE(m.ok()) << m.status();
    merger_ = std::move(*m);
  }
  void Recreate(JunitMergeOptions options) {
    options_ = std::move(options);
    SetUp();
  }
  absl::Status Add(const std::string& doc, const std::string& name, const std::string& stage = "") {
    std::istringstream in(doc);
    return merger_->AddStream(in, name, stage);
  }
  pugi::xml_node Merge() {
    std::ostringstream out;
    EXPECT_THAT(merger_->Write(out), IsOk());
    text_ = out.str();
    auto parsed = doc_.load_string(text_.c_str());
    EXPECT_TRUE(parsed) << parsed.description() << "\n" << text_;
    return doc_.child("testsuites");
  }
  pugi::xml_node FindCase(pugi::xml_node root, const std::string& name) {
    for (pugi::xml_node s : root.children("testsuite")) {
      for (pugi::xml_node c : s.children("testcase")) {
        if (name == c.attribute("name").value()) return c;
      }
    }
    return {};
  }
  int CaseCount(pugi::xml_node root) {
    int n = 0;
    for (pugi::xml_node s : root.children("testsuite")) n += std::distance(s.children("testcase").begin(), s.children("testcase").end());
    return n;
  }

  JunitMergeOptions options_;
  std::unique_ptr<JunitMerger> merger_;
  pugi::xml_document doc_;
  std::string text_;
};

TEST_F(JunitMergerTest, ShardsOfOneSuiteBecomeOneStageSuite) {
  ASSERT_THAT(Add(Pytest(Pass("t1") + Fail("t2")), "shard0.xml"), IsOk());
  ASSERT_THAT(Add(Pytest(Pass("t3", 1.0)), "shard1.xml"), IsOk());
  pugi::xml_node root = Merge();
  ASSERT_EQ(std::distance(root.children("testsuite").begin(), root.children("testsuite").end()), 1);
  pugi::xml_node suite = root.child("testsuite");
  EXPECT_STREQ(suite.attribute("name").value(), "pytest");
  EXPECT_EQ(suite.attribute("tests").as_int(), 3);
  EXPECT_EQ(suite.attribute("failures").as_int(), 1);
  EXPECT_STREQ(suite.attribute("time").value(), "1.750");
  EXPECT_EQ(root.attribute("tests").as_int(), 3);
  EXPECT_EQ(merger_->summary().counts.tests, 3);
}

TEST_F(JunitMergerTest, SuitePerInputKeepsOneSuitePerFile) {
  JunitMergeOptions o;
  o.suite_per = SuitePer::kInput;
  Recreate(o);
  ASSERT_THAT(Add(Pytest(Pass("t1")), "shard0.xml"), IsOk());
  ASSERT_THAT(Add(Pytest(Pass("t2")), "shard1.xml"), IsOk());
  pugi::xml_node root = Merge();
  pugi::xml_node first = root.child("testsuite");
  EXPECT_STREQ(first.attribute("name").value(), "shard0.xml");
  EXPECT_STREQ(first.next_sibling("testsuite").attribute("name").value(), "shard1.xml");
}

TEST_F(JunitMergerTest, ExplicitStageNamesTheSuite) {
  ASSERT_THAT(Add(Pytest(Pass("t1")), "a.xml", "unit"), IsOk());
  ASSERT_THAT(Add(Pytest(Pass("t1")), "b.xml", "security"), IsOk());  // same test, other stage: not a retry
  pugi::xml_node root = Merge();
  EXPECT_STREQ(root.child("testsuite").attribute("name").value(), "unit");
  EXPECT_EQ(root.attribute("tests").as_int(), 2);
  EXPECT_EQ(merger_->summary().retried_tests, 0);
}

TEST_F(JunitMergerTest, RetriedTestThatPassesIsReportedOnceAsFlaky) {
  ASSERT_THAT(Add(Pytest(Fail("t1", 0.25) + Pass("t2")), "shard0.xml"), IsOk());
  ASSERT_THAT(Add(Pytest(Pass("t1", 0.5)), "shard0-retry.xml"), IsOk());
  pugi::xml_node root = Merge();
  EXPECT_EQ(root.attribute("tests").as_int(), 2);
  EXPECT_EQ(root.attribute("failures").as_int(), 0);
  pugi::xml_node t1 = FindCase(root, "t1");
  EXPECT_FALSE(t1.child("failure"));
  EXPECT_STREQ(t1.child("flakyFailure").attribute("message").value(), "boom");
  EXPECT_STREQ(t1.child("flakyFailure").child("stackTrace").text().get(), "trace of t1");
  EXPECT_STREQ(t1.attribute("time").value(), "0.750");
  EXPECT_EQ(CaseCount(root), 2);
  EXPECT_EQ(merger_->summary().retried_tests, 1);
  EXPECT_EQ(merger_->summary().counts.flaky, 1);
}

TEST_F(JunitMergerTest, TestFailingEveryAttemptKeepsFailureWithRerun) {
  ASSERT_THAT(Add(Pytest(Fail("t1")), "a.xml"), IsOk());
  ASSERT_THAT(Add(Pytest(Fail("t1")), "b.xml"), IsOk());
  pugi::xml_node root = Merge();
  pugi::xml_node t1 = FindCase(root, "t1");
  EXPECT_TRUE(t1.child("failure"));
  EXPECT_TRUE(t1.child("rerunFailure"));
  EXPECT_EQ(root.attribute("failures").as_int(), 1);
}

TEST_F(JunitMergerTest, TeardownErrorRecordJoinsItsTestInOneInput) {
  // pytest writes a second <testcase> for the same node id when teardown errors after a failed call.
  std::string cases = Fail("t1") +
                      R"(<testcase classname="tests.test_a" name="t1" time="0.1"><error message="failed on teardown">td</error></testcase>)";
  ASSERT_THAT(Add(Pytest(cases), "a.xml"), IsOk());
  pugi::xml_node root = Merge();
  EXPECT_EQ(root.attribute("tests").as_int(), 1);
  EXPECT_EQ(root.attribute("errors").as_int(), 1);
  EXPECT_EQ(root.attribute("failures").as_int(), 0);
  pugi::xml_node t1 = FindCase(root, "t1");
  EXPECT_THAT(std::string(t1.child("error").text().get()), HasSubstr("trace of t1"));
  EXPECT_FALSE(t1.child("rerunFailure"));
}

TEST_F(JunitMergerTest, TruncatedInputGivesErrorsNeverPasses) {
  std::string doc = Pytest(Pass("t1") + Pass("t2") + Fail("t3"));
  std::string cut = doc.substr(0, doc.find("trace of t3") + 3);  // a shard killed while pytest wrote t3
  ASSERT_THAT(Add(Pytest(Pass("t0")), "ok.xml"), IsOk());
  EXPECT_THAT(Add(cut, "crashed.xml"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("crashed.xml")));
  pugi::xml_node root = Merge();
  EXPECT_STREQ(FindCase(root, "t3").child("error").attribute("message").value(),
               ("incomplete result: " + std::string(merger_->summary().problems.at(0).status.message())).c_str());
  pugi::xml_node file_entry = FindCase(root, "crashed.xml");
  ASSERT_TRUE(file_entry);
  EXPECT_THAT(std::string(file_entry.child("error").attribute("message").value()), HasSubstr("truncated"));
  EXPECT_THAT(std::string(file_entry.child("error").text().get()), HasSubstr("2 complete test results"));
  EXPECT_EQ(root.attribute("tests").as_int(), 5);  // t0, t1, t2, t3 (error), the file entry
  EXPECT_EQ(root.attribute("errors").as_int(), 2);
}

TEST_F(JunitMergerTest, EmptyFileIsOneErrorEntry) {
  EXPECT_THAT(Add("", "empty.xml", "unit"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty file")));
  pugi::xml_node root = Merge();
  EXPECT_EQ(root.attribute("tests").as_int(), 1);
  EXPECT_EQ(root.attribute("errors").as_int(), 1);
  EXPECT_STREQ(root.child("testsuite").attribute("name").value(), "unit");
  EXPECT_TRUE(FindCase(root, "empty.xml").child("error"));
}

TEST_F(JunitMergerTest, MissingFileIsOneErrorEntry) {
  EXPECT_THAT(merger_->AddFile("/nonexistent/testshard/shard.xml"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/testshard/shard.xml")));
  pugi::xml_node root = Merge();
  EXPECT_EQ(root.attribute("errors").as_int(), 1);
}

TEST_F(JunitMergerTest, HostileInputLosesNothingElse) {
  std::string bomb = "<!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;\">]><testsuite>&b;</testsuite>";
  ASSERT_THAT(Add(Pytest(Pass("t1") + Fail("t2")), "good.xml"), IsOk());
  EXPECT_THAT(Add(bomb, "bomb.xml"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bomb.xml")));
  std::string deep;
  for (int i = 0; i < 10000; ++i) deep += "<testsuite>";
  EXPECT_THAT(Add(deep, "deep.xml"), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("deep.xml")));
  pugi::xml_node root = Merge();
  EXPECT_TRUE(FindCase(root, "t1"));
  EXPECT_TRUE(FindCase(root, "t2").child("failure"));
  EXPECT_TRUE(FindCase(root, "bomb.xml").child("error"));
  EXPECT_TRUE(FindCase(root, "deep.xml").child("error"));
  EXPECT_EQ(merger_->summary().problems.size(), 2u);
}

TEST_F(JunitMergerTest, RetryOfCrashedShardSupersedesItsIncompleteResult) {
  std::string doc = Pytest(Pass("t1") + Fail("t2"));
  EXPECT_FALSE(Add(doc.substr(0, doc.find("trace of t2")), "shard.xml").ok());
  ASSERT_THAT(Add(Pytest(Pass("t2")), "shard-retry.xml"), IsOk());
  pugi::xml_node root = Merge();
  pugi::xml_node t2 = FindCase(root, "t2");
  EXPECT_FALSE(t2.child("error"));
  EXPECT_TRUE(t2.child("flakyError"));
  // The broken file itself still shows.
  EXPECT_TRUE(FindCase(root, "shard.xml").child("error"));
}

TEST_F(JunitMergerTest, StructuredCasesAndExpectedPlaceholders) {
  TestCase a;
  a.id = "tests/test_x.py::TestK::test_a[1]";
  a.result.outcome = Outcome::kPassed;
  a.result.time_s = 0.1;
  ASSERT_THAT(merger_->AddCase("unit", a), IsOk());
  TestCase missing;
  missing.id = "tests/test_x.py::test_lost";
  missing.result.outcome = Outcome::kError;
  missing.result.message = "no result: agent lost";
  ASSERT_THAT(merger_->AddExpected("unit", missing), IsOk());
  TestCase covered = a;
  covered.result.outcome = Outcome::kError;
  ASSERT_THAT(merger_->AddExpected("unit", covered), IsOk());  // has a result: placeholder ignored
  pugi::xml_node root = Merge();
  EXPECT_EQ(root.attribute("tests").as_int(), 2);
  EXPECT_EQ(root.attribute("errors").as_int(), 1);
  pugi::xml_node ta = FindCase(root, "test_a[1]");
  EXPECT_STREQ(ta.attribute("classname").value(), "tests.test_x.TestK");
  EXPECT_FALSE(ta.child("error"));
  EXPECT_STREQ(FindCase(root, "test_lost").child("error").attribute("message").value(), "no result: agent lost");
}

TEST_F(JunitMergerTest, StructuredCasePropertiesSurviveTheSpool) {
  TestCase a;
  a.id = "tests/test_x.py::test_p";
  a.result.outcome = Outcome::kPassed;
  a.properties = {{"agent", "local-1"}, {"database", "db_1"}};
  ASSERT_THAT(merger_->AddCase("unit", a), IsOk());
  pugi::xml_node props = FindCase(Merge(), "test_p").child("properties");
  ASSERT_TRUE(props) << text_;
  std::vector<std::string> got;
  for (pugi::xml_node p : props.children("property")) {
    got.push_back(std::string(p.attribute("name").value()) + "=" + p.attribute("value").value());
  }
  EXPECT_EQ(got, (std::vector<std::string>{"agent=local-1", "database=db_1"}));
}

TEST_F(JunitMergerTest, FilePropertiesReachTheReport) {
  ASSERT_THAT(Add(R"(<testsuites><testsuite name="pytest"><testcase classname="t" name="test_p" time="0.1">
    <properties><property name="database" value="ts_&lt;1&gt;"/></properties></testcase></testsuite></testsuites>)",
                  "shard-1.xml"),
              IsOk());
  pugi::xml_node p = FindCase(Merge(), "test_p").child("properties").child("property");
  ASSERT_TRUE(p) << text_;
  EXPECT_STREQ(p.attribute("name").value(), "database");
  EXPECT_STREQ(p.attribute("value").value(), "ts_<1>");
}

TEST_F(JunitMergerTest, SuiteLevelOutputIsKept) {
  ASSERT_THAT(Add(R"(<testsuites><testsuite name="t_shard_1/2"><testcase name="t_shard_1/2" time="3"><error
    message="exited with error code 1"/></testcase><system-out>segfault log</system-out></testsuite></testsuites>)",
                  "test.xml"),
              IsOk());
  pugi::xml_node root = Merge();
  EXPECT_THAT(std::string(root.child("testsuite").child("system-out").text().get()), HasSubstr("segfault log"));
  EXPECT_STREQ(root.child("testsuite").child("testcase").attribute("time").value(), "3.000");
}

TEST_F(JunitMergerTest, CountsAlwaysMatchTheWrittenCases) {
  ASSERT_THAT(Add(Pytest(Pass("a") + Fail("b") +
                         R"(<testcase classname="k" name="c"><skipped message="s"/></testcase>)"),
                  "x.xml", "s1"),
              IsOk());
  ASSERT_THAT(Add(Pytest(Fail("a") + Pass("b")), "y.xml", "s1"), IsOk());
  pugi::xml_node root = Merge();
  int tests = 0, failures = 0, skipped = 0;
  for (pugi::xml_node s : root.children("testsuite")) {
    for (pugi::xml_node c : s.children("testcase")) {
      ++tests;
      failures += c.child("failure") ? 1 : 0;
      skipped += c.child("skipped") ? 1 : 0;
    }
  }
  EXPECT_EQ(root.attribute("tests").as_int(), tests);
  EXPECT_EQ(root.attribute("failures").as_int(), failures);
  EXPECT_EQ(root.attribute("skipped").as_int(), skipped);
  EXPECT_EQ(tests, 3);
  EXPECT_EQ(failures, 1);  // a failed on retry after passing; b passed on retry
  EXPECT_THAT(std::string(FindCase(root, "a").child("failure").attribute("message").value()),
              HasSubstr("passed in an earlier attempt"));
}

TEST_F(JunitMergerTest, WriteTwiceIsRefused) {
  std::ostringstream out;
  ASSERT_THAT(merger_->Write(out), IsOk());
  EXPECT_THAT(merger_->Write(out), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("twice")));
}

// Threads read the inputs and format the report; the bytes must be those of one thread doing it all. Sized so
// that readers hand over many chunks (up to 1,024 cases each), one input holds more than the 1 MiB one input may
// have pending and all of them more than the 4 MiB all may (readers that run ahead wait, and the report must not
// change nor the merge stall), and writers format many blocks (1,024 cases each).
TEST(JunitMergerFilesTest, ReadingAndWritingConcurrentlyGivesTheSameReport) {
  std::string dir = ::testing::TempDir() + "/junit-addfiles-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::vector<JunitFileInput> inputs;
  for (int i = 0; i < 12; ++i) {
    std::string cases;
    int n = i == 0 ? 20000 : i < 6 ? 3000 : 6000;
    for (int k = 0; k < n; ++k) cases += (k + i) % 17 == 0 ? Fail("t" + std::to_string(k)) : Pass("t" + std::to_string(k));
    std::string doc = Pytest(cases);
    if (i == 4) doc = doc.substr(0, doc.size() / 2);  // one broken input among them
    std::string path = dir + "/in" + std::to_string(i) + ".xml";
    std::ofstream(path) << doc;
    inputs.push_back({path, i % 2 ? "odd" : ""});
  }
  inputs.push_back({dir + "/missing.xml", ""});
  auto render = [&](int threads) {
    JunitMergeOptions options;
    options.threads = threads;
    auto m = JunitMerger::Create(options);
    EXPECT_TRUE(m.ok());
    std::vector<absl::Status> results = (*m)->AddFiles(inputs, threads);
    EXPECT_EQ(results.size(), inputs.size());
    EXPECT_FALSE(results[4].ok());
    EXPECT_THAT(results[12], StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.xml")));
    std::ostringstream out;
    EXPECT_THAT((*m)->Write(out), IsOk());
    return out.str();
  };
  std::string sequential = render(1);
  EXPECT_EQ(render(3), sequential);
  EXPECT_EQ(render(2), sequential);
  EXPECT_THAT(sequential, HasSubstr("flakyFailure"));
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(sequential.c_str()));
  // Stage "pytest" (inputs 0, 2, ..., 10): t0..t19999, of which t0..t5999 were retried; stage "odd" (1, 3, ...,
  // 11): t0..t5999; and one error entry for each broken input.
  EXPECT_STREQ(doc.child("testsuites").attribute("tests").value(), "26002");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace testshard::report

#include "common/report/junit_reader.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::report {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

struct Collected : JunitCaseSink {
  void OnCase(std::string_view suite, TestCase&& c) override {
    suites.emplace_back(suite);
    cases.push_back(std::move(c));
  }
  void OnSuiteOutput(std::string_view suite, std::string&& out, std::string&& err) override {
    suite_out += out;
  }
  std::vector<std::string> suites;
  std::vector<TestCase> cases;
  std::string suite_out;
};

absl::Status Read(const std::string& doc, Collected* c, JunitReadStats* stats = nullptr,
                  JunitReadOptions options = {}) {
  std::istringstream in(doc);
  return ReadJunit(in, "in.xml", *c, options, stats);
}

TEST(JunitReaderTest, PytestXunit2OutcomesComeFromChildren) {
  // As pytest 7 writes it; the aggregate attributes are deliberately wrong and must be ignored.
  Collected c;
  ASSERT_THAT(Read(R"(<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0"
    failures="0" skipped="0" tests="99" time="0.055"><testcase classname="tests.test_a" name="test_add"
    time="0.002" /><testcase classname="tests.test_a" name="test_fail" time="0.001"><failure
    message="assert 2 == 3">trace</failure></testcase><testcase classname="tests.test_a" name="test_skip"
    time="0.001"><skipped type="pytest.skip" message="nope">a.py:13: nope</skipped></testcase><testcase
    classname="tests.test_a" name="test_setup" time="0.001"><error message="failed on setup">x</error>
    </testcase></testsuite></testsuites>)",
                   &c),
              IsOk());
  ASSERT_THAT(c.cases, SizeIs(4));
  EXPECT_EQ(c.suites[0], "pytest");
  EXPECT_EQ(c.cases[0].result.outcome, Outcome::kPassed);
  EXPECT_EQ(c.cases[1].result.outcome, Outcome::kFailed);
  EXPECT_EQ(c.cases[1].result.message, "assert 2 == 3");
  EXPECT_EQ(c.cases[1].result.details, "trace");
  EXPECT_EQ(c.cases[2].result.outcome, Outcome::kSkipped);
  EXPECT_EQ(c.cases[3].result.outcome, Outcome::kError);
  EXPECT_DOUBLE_EQ(c.cases[0].result.time_s, 0.002);
}

TEST(JunitReaderTest, PytestXunit1KeepsFileAttribute) {
  Collected c;
  ASSERT_THAT(Read(R"(<testsuites><testsuite name="pytest"><testcase classname="t.test_a" name="test_x"
    file="t/test_a.py" line="3" time="0.1"/></testsuite></testsuites>)",
                   &c),
              IsOk());
  EXPECT_EQ(c.cases.at(0).file, "t/test_a.py");
}

TEST(JunitReaderTest, GtestSeveralFailuresAreOneFailedCase) {
  Collected c;
  ASSERT_THAT(Read(R"(<testsuites tests="2" failures="1" disabled="1" errors="0" name="AllTests">
  <testsuite name="Math" tests="3" failures="1" disabled="1" skipped="0" errors="0" time="0.">
    <testcase name="Two" file="m.cc" line="5" status="run" result="completed" time="0." classname="Math">
      <failure message="m.cc:6&#x0A;Expected 1" type=""><![CDATA[m.cc:6
Expected 1]]></failure>
      <failure message="m.cc:7&#x0A;Expected 2" type=""><![CDATA[m.cc:7
Expected 2]]></failure>
    </testcase>
    <testcase name="DISABLED_Off" file="m.cc" line="9" status="notrun" result="suppressed" time="0." classname="Math" />
    <testcase name="Skip" status="run" result="skipped" time="0." classname="Math"><skipped message="why"/></testcase>
  </testsuite></testsuites>)",
                   &c),
              IsOk());
  ASSERT_THAT(c.cases, SizeIs(3));
  EXPECT_EQ(c.cases[0].result.outcome, Outcome::kFailed);
  EXPECT_THAT(c.cases[0].result.details, HasSubstr("Expected 1"));
  EXPECT_THAT(c.cases[0].result.details, HasSubstr("Expected 2"));
  EXPECT_EQ(c.cases[1].result.outcome, Outcome::kSkipped);
  EXPECT_EQ(c.cases[1].result.message, "disabled");
  EXPECT_EQ(c.cases[2].result.outcome, Outcome::kSkipped);
}

TEST(JunitReaderTest, GtestFailureWithSkippedCountsAsFailed) {
  Collected c;
  ASSERT_THAT(Read(R"(<testsuites><testsuite name="S"><testcase name="t" classname="S" status="run"
    result="completed" time="0.01"><failure message="boom" type=""/><skipped message="after"/></testcase>
    </testsuite></testsuites>)",
                   &c),
              IsOk());
  EXPECT_EQ(c.cases.at(0).result.outcome, Outcome::kFailed);
  EXPECT_EQ(c.cases.at(0).result.message, "boom");
}

TEST(JunitReaderTest, CtestBareSuiteRootWithDisabledAndNotRun) {
  Collected c;
  ASSERT_THAT(Read(R"(<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="Linux-c++" tests="4" failures="1" disabled="1" skipped="1" hostname="h" time="2" timestamp="2026-01-01T00:00:00">
  <testcase name="ok" classname="ok" time="0.5" status="run"><properties/><system-out>hello</system-out></testcase>
  <testcase name="bad" classname="bad" time="1.25" status="fail"><failure message="Failed"/><system-out>out</system-out></testcase>
  <testcase name="off" classname="off" time="0" status="disabled"></testcase>
  <testcase name="gone" classname="gone" time="0" status="notrun"><skipped message="Unable to find executable"/></testcase>
</testsuite>)",
                   &c),
              IsOk());
  ASSERT_THAT(c.cases, SizeIs(4));
  EXPECT_EQ(c.cases[0].result.outcome, Outcome::kPassed);
  EXPECT_EQ(c.cases[0].result.system_out, "hello");
  EXPECT_EQ(c.cases[1].result.outcome, Outcome::kFailed);
  EXPECT_EQ(c.cases[2].result.outcome, Outcome::kSkipped);
  EXPECT_EQ(c.cases[3].result.outcome, Outcome::kSkipped);
  EXPECT_EQ(c.suites[0], "Linux-c++");
}

TEST(JunitReaderTest, SurefireFlakyAndRerunElementsBecomeAttempts) {
  Collected c;
  ASSERT_THAT(Read(R"(<testsuite version="3.0" name="io.olamy.FlakyTest" time="1,234.5" tests="2" errors="0" skipped="0" failures="1">
  <testcase name="flaky" classname="io.olamy.FlakyTest" time="0.003">
    <flakyFailure message="expected: &lt;true&gt;" type="org.opentest4j.AssertionFailedError">
      <stackTrace>at FlakyTest.flaky(FlakyTest.java:12)</stackTrace>
      <system-out>first run output</system-out>
    </flakyFailure>
    <flakyFailure message="again" type="AssertionError">at line 13</flakyFailure>
  </testcase>
  <testcase name="always" classname="io.olamy.FlakyTest" time="1,001.5">
    <failure message="no" type="AssertionError">trace3</failure>
    <rerunFailure message="no" type="AssertionError"><stackTrace>trace1</stackTrace></rerunFailure>
    <rerunError message="npe" type="NullPointerException"><stackTrace>trace2</stackTrace></rerunError>
  </testcase>
</testsuite>)",
                   &c),
              IsOk());
  ASSERT_THAT(c.cases, SizeIs(2));
  const TestCase& flaky = c.cases[0];
  EXPECT_EQ(flaky.result.outcome, Outcome::kPassed);
  ASSERT_THAT(flaky.reruns, SizeIs(2));
  EXPECT_TRUE(flaky.flaky());
  EXPECT_EQ(flaky.reruns[0].message, "expected: <true>");
  EXPECT_EQ(flaky.reruns[0].details, "at FlakyTest.flaky(FlakyTest.java:12)");
  EXPECT_EQ(flaky.reruns[0].system_out, "first run output");
  EXPECT_EQ(flaky.reruns[1].details, "at line 13");
  const TestCase& always = c.cases[1];
  EXPECT_EQ(always.result.outcome, Outcome::kFailed);
  ASSERT_THAT(always.reruns, SizeIs(2));
  EXPECT_EQ(always.reruns[1].outcome, Outcome::kError);
  EXPECT_DOUBLE_EQ(always.result.time_s, 1001.5);
}

TEST(JunitReaderTest, BazelFallbackKeepsSuiteLevelLog) {
  Collected c;
  ASSERT_THAT(Read(R"(<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="dir/test_shard_1/2" tests="1" failures="0" errors="1">
  <testcase name="dir/test_shard_1/2" status="run" duration="3" time="3"><error message="exited with error code 1"></error></testcase>
  <system-out>Generated test.log (if the file is not UTF-8, then this may be unreadable):
<![CDATA[Segmentation fault]]></system-out>
</testsuite></testsuites>)",
                   &c),
              IsOk());
  ASSERT_THAT(c.cases, SizeIs(1));
  EXPECT_EQ(c.cases[0].result.outcome, Outcome::kError);
  EXPECT_EQ(c.cases[0].classname, "dir/test_shard_1/2");  // no classname: the suite's name
  EXPECT_DOUBLE_EQ(c.cases[0].result.time_s, 3.0);
  EXPECT_THAT(c.suite_out, HasSubstr("Segmentation fault"));
}

TEST(JunitReaderTest, NestedSuitesReportInnermostName) {
  Collected c;
  ASSERT_THAT(Read(R"(<testsuites><testsuite name="outer" tests="5"><testsuite name="inner"><testcase name="a"
    classname="k"/></testsuite><testcase name="b" classname="k"/></testsuite></testsuites>)",
                   &c),
              IsOk());
  ASSERT_THAT(c.suites, SizeIs(2));
  EXPECT_EQ(c.suites[0], "inner");
  EXPECT_EQ(c.suites[1], "outer");
}

// pytest's record_property (and Surefire's per-test properties) come through; suite-level properties (Surefire's
// system properties) and <property> outside <properties> do not belong to a test.
TEST(JunitReaderTest, TestCasePropertiesAreKept) {
  Collected c;
  ASSERT_THAT(Read(R"(<testsuites><testsuite name="pytest">
  <properties><property name="java.version" value="17"/></properties>
  <testcase classname="t" name="a">
    <properties><property name="database" value="ts_1"/><property name="lease" value="L1"/></properties>
    <failure message="boom">trace</failure>
  </testcase>
  <testcase classname="t" name="b"><property name="stray" value="x"/></testcase>
</testsuite></testsuites>)", &c), IsOk());
  ASSERT_THAT(c.cases, SizeIs(2));
  using Props = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(c.cases[0].properties, (Props{{"database", "ts_1"}, {"lease", "L1"}}));
  EXPECT_EQ(c.cases[0].result.outcome, Outcome::kFailed);
  EXPECT_TRUE(c.cases[1].properties.empty());
}

TEST(JunitReaderTest, TruncatedFileKeepsCompleteCasesAndErrsTheCutOne) {
  Collected c;
  JunitReadStats stats;
  absl::Status s = Read(R"(<testsuites><testsuite name="pytest" tests="3"><testcase classname="m" name="one"
    time="0.1"/><testcase classname="m" name="two" time="0.2"><system-out>partial out)",
                        &c, &stats);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("in.xml: line 2")));
  ASSERT_THAT(c.cases, SizeIs(2));
  EXPECT_EQ(c.cases[0].result.outcome, Outcome::kPassed);
  EXPECT_EQ(c.cases[1].name, "two");
  EXPECT_EQ(c.cases[1].result.outcome, Outcome::kError);
  EXPECT_THAT(c.cases[1].result.message, HasSubstr("incomplete result"));
  EXPECT_THAT(c.cases[1].result.message, HasSubstr("truncated"));
  EXPECT_EQ(c.cases[1].result.system_out, "partial out");
  EXPECT_EQ(stats.complete_cases, 1);
  EXPECT_EQ(stats.declared_tests, 3);
}

TEST(JunitReaderTest, TruncatedFailedCaseIsStillAnError) {
  Collected c;
  EXPECT_FALSE(Read(R"(<testsuite name="s"><testcase name="x" classname="k"><failure message="m">tra)", &c).ok());
  ASSERT_THAT(c.cases, SizeIs(1));
  EXPECT_EQ(c.cases[0].result.outcome, Outcome::kError);
  EXPECT_THAT(c.cases[0].result.details, HasSubstr("failed m"));
}

// Times take a fast path for plain decimals; every form must read as from_chars reads it (the reader's reference
// before the fast path), and what from_chars refuses or finds negative is 0.
TEST(JunitReaderTest, TimesReadAsFromCharsReadsThem) {
  std::vector<std::string> times = {"0", "0.0", "5.", ".5", "1.5e3", "1,234.5", "-1", "inf", "nan", "", ".",
                                    "00012.50", "0.1", "0.30000000000000004", "9007199254740993",
                                    "9007199254740992", "1234567890123456", "0.1234567890123456789", "12a"};
  std::mt19937_64 rng(3);
  for (int i = 0; i < 3000; ++i) {
    std::string t = std::to_string(rng() % 100000000);
    size_t point = rng() % (t.size() + 1);
    if (point < t.size()) t.insert(point, ".");
    times.push_back(t + std::string(rng() % 3, '0'));
  }
  std::string doc = "<testsuite name=\"s\">";
  for (size_t i = 0; i < times.size(); ++i) {
    doc += "<testcase classname=\"c\" name=\"t" + std::to_string(i) + "\" time=\"" + times[i] + "\"/>";
  }
  Collected c;
  ASSERT_THAT(Read(doc + "</testsuite>", &c), IsOk());
  ASSERT_THAT(c.cases, SizeIs(times.size()));
  for (size_t i = 0; i < times.size(); ++i) {
    std::string t = times[i];
    t.erase(std::remove(t.begin(), t.end(), ','), t.end());
    double want = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), want);
    if (ec != std::errc() || !std::isfinite(want) || want < 0) want = 0;
    EXPECT_EQ(c.cases[i].result.time_s, want) << '"' << times[i] << '"';
  }
}

TEST(JunitReaderTest, OtherRootElementIsRefused) {
  Collected c;
  EXPECT_THAT(Read("<coverage/>", &c), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a JUnit")));
}

TEST(JunitReaderTest, HugeOutputKeepsHeadAndTailOnly) {
  std::string doc = "<testsuite name=\"s\"><testcase name=\"x\" classname=\"k\"><system-out>HEAD" +
                    std::string(5 << 20, 'x') + "TAIL</system-out></testcase></testsuite>";
  Collected c;
  JunitReadOptions options;
  options.max_text_bytes = 1000;
  ASSERT_THAT(Read(doc, &c, nullptr, options), IsOk());
  const std::string& out = c.cases.at(0).result.system_out;
  EXPECT_LT(out.size(), 1100u);
  EXPECT_EQ(out.substr(0, 4), "HEAD");
  EXPECT_EQ(out.substr(out.size() - 4), "TAIL");
  EXPECT_THAT(out, HasSubstr("bytes trimmed"));
}

TEST(CappedTextTest, ShortTextIsKeptWhole) {
  CappedText t(100);
  t.Append("abc");
  t.Append(std::string(40, 'd'));
  t.Append("efg");
  EXPECT_EQ(t.Take(), "abc" + std::string(40, 'd') + "efg");
  EXPECT_TRUE(t.empty());
}

}  // namespace
}  // namespace testshard::report

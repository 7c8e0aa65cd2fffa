#include "common/history/importers.h"

#include "common/status.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::history {
namespace {

using ::testing::HasSubstr;
using ::testshard::testing::StatusIs;

const absl::Time kAt = absl::FromUnixSeconds(1'700'000'000);

TEST(ParseTestDurationsTest, FlatObjectOfSeconds) {
  TS_ASSERT_OK_AND_ASSIGN(auto samples,
                          ParseTestDurations(R"({"a.py::test_x": 1.5, "b.py::T::test_y[1]": 0.25})", kAt));
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].test_id, "a.py::test_x");
  EXPECT_DOUBLE_EQ(samples[0].duration_s, 1.5);
  EXPECT_EQ(samples[1].outcome, Outcome::kPassed);
}

TEST(ParseTestDurationsTest, RejectsOtherShapesNamingTheKey) {
  EXPECT_THAT(ParseTestDurations("[1, 2]", kAt), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(ParseTestDurations(R"({"a": "slow"})", kAt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'a'")));
  EXPECT_THAT(ParseTestDurations("{", kAt), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(NodeIdFromJunitTest, Xunit2WithoutFileGuessesClassesByName) {
  EXPECT_EQ(NodeIdFromJunit("tests.api.test_users.TestUsers", "test_create[a.b]", ""),
            "tests/api/test_users.py::TestUsers::test_create[a.b]");
  EXPECT_EQ(NodeIdFromJunit("tests.test_mod", "test_f", ""), "tests/test_mod.py::test_f");
}

TEST(NodeIdFromJunitTest, Xunit1FileAttributeIsExact) {
  EXPECT_EQ(NodeIdFromJunit("tests.checks.CheckThing", "test_f", "tests/checks.py"),
            "tests/checks.py::CheckThing::test_f");
}

TEST(NodeIdFromJunitTest, KnownIdsResolveWhatNamesCannot) {
  // A class not named Test* and no file attribute: only the collected ids can tell.
  std::unordered_set<std::string> known = {"tests/checks.py::CheckThing::test_f"};
  EXPECT_EQ(NodeIdFromJunit("tests.checks.CheckThing", "test_f", "", &known), "tests/checks.py::CheckThing::test_f");
}

TEST(NodeIdFromJunitTest, InvertsPytestMangling) {
  for (std::string id : {"tests/unit/test_a.py::test_x", "tests/test_a.py::TestK::test_x[a/b::c d]",
                         "t.py::TestOuter::TestInner::test_y"}) {
    std::string classname, name;
    PytestJunitNames(id, &classname, &name);
    EXPECT_EQ(NodeIdFromJunit(classname, name, ""), id);
  }
}

TEST(ParseJunitXmlTest, OutcomesTimesAndTimestamp) {
  const char* xml = R"(<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4" time="3.0"
    timestamp="2024-05-01T10:00:00.123456+02:00" hostname="ci">
  <testcase classname="tests.test_a" name="test_pass" time="1.250" />
  <testcase classname="tests.test_a.TestK" name="test_fail[x]" time="0.500"><failure message="boom">tb</failure></testcase>
  <testcase classname="tests.test_a" name="test_skip" time="0.001"><skipped type="pytest.skip" message="no" /></testcase>
  <testcase classname="tests.test_a" name="test_teardown" time="0.300" />
  <testcase classname="tests.test_a" name="test_teardown" time="0.400"><error message="failed on teardown" /></testcase>
</testsuite></testsuites>)";
  TS_ASSERT_OK_AND_ASSIGN(auto samples, ParseJunitXml(xml, kAt));
  ASSERT_EQ(samples.size(), 4u);
  EXPECT_EQ(samples[0].test_id, "tests/test_a.py::test_pass");
  EXPECT_DOUBLE_EQ(samples[0].duration_s, 1.25);
  EXPECT_EQ(samples[0].at, absl::FromUnixSeconds(1714550400) + absl::Microseconds(123456));
  EXPECT_EQ(samples[1].test_id, "tests/test_a.py::TestK::test_fail[x]");
  EXPECT_EQ(samples[1].outcome, Outcome::kFailed);
  EXPECT_EQ(samples[2].outcome, Outcome::kSkipped);
  EXPECT_EQ(samples[3].outcome, Outcome::kError);  // the teardown error wins over the pass
  EXPECT_DOUBLE_EQ(samples[3].duration_s, 0.4);
}

TEST(ParseJunitXmlTest, TruncatedFileIsInvalidArgument) {
  EXPECT_THAT(ParseJunitXml("<testsuite><testcase classname=\"a\" name=", kAt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed JUnit XML")));
}

TEST(ToTestDurationsTest, SmoothedDurationsSortedById) {
  TestHistory a{.test_id = "b", .ewma_s = 2, .recent_s = {2}};
  TestHistory b{.test_id = "a", .ewma_s = 1, .recent_s = {1}};
  TestHistory skipped_only{.test_id = "c", .outcomes = "S"};
  EXPECT_EQ(ToTestDurations({a, b, skipped_only}), "{\n    \"a\": 1.0,\n    \"b\": 2.0\n}\n");
}

}  // namespace
}  // namespace testshard::history

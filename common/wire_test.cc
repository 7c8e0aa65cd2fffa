#include "common/wire.h"

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard {
namespace {

using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

TEST(WireTest, ResultsRoundTrip) {
  TestCase tc;
  tc.id = "tests/a.py::t[x; $(y)]";
  tc.result.outcome = Outcome::kFailed;
  tc.result.time_s = 1.5;
  tc.result.message = "AssertionError";
  tc.result.details = "trace";
  TestCase back = FromWire(ToWire(tc));
  EXPECT_EQ(back.id, tc.id);
  EXPECT_EQ(back.result.outcome, Outcome::kFailed);
  EXPECT_EQ(back.result.time_s, 1.5);
  EXPECT_EQ(back.result.details, "trace");
}

TEST(WireTest, UnspecifiedOutcomeIsNeverAPass) {
  v1::TestResult r;
  r.set_test_id("a");
  EXPECT_EQ(FromWire(r).result.outcome, Outcome::kError);
}

TEST(WireTest, ArtifactNamesCannotEscapeTheirDirectory) {
  EXPECT_THAT(CheckArtifactName("report.xml"), IsOk());
  EXPECT_THAT(CheckArtifactName("coverage-1.lcov"), IsOk());
  for (const char* bad : {"../../etc/passwd", "..", ".", "", "a/b", "/etc/passwd", "a\\b", "é.xml", "a b"}) {
    EXPECT_THAT(CheckArtifactName(bad), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("refused")))
        << bad;
  }
  EXPECT_THAT(CheckArtifactName(std::string("x\0y", 3)), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(CheckArtifactName(std::string(129, 'a')), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(WireTest, TokensCompareExactly) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_EQ(RandomToken().size(), 64u);
  EXPECT_NE(RandomToken(), RandomToken());
}

}  // namespace
}  // namespace testshard

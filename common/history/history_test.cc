#include "common/history/history.h"

#include "common/status.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::history {
namespace {

using ::testing::ElementsAre;
using ::testshard::testing::StatusIs;

Sample S(double seconds, Outcome outcome = Outcome::kPassed, int64_t at = 1'700'000'000) {
  return Sample{"t.py::test_a", seconds, outcome, absl::FromUnixSeconds(at)};
}

TEST(ApplySampleTest, FirstSampleSetsTheSmoothedDuration) {
  TestHistory h;
  ApplySample(h, S(2.5));
  EXPECT_EQ(h.test_id, "t.py::test_a");
  EXPECT_DOUBLE_EQ(h.ewma_s, 2.5);
  EXPECT_DOUBLE_EQ(h.p90_s, 2.5);
  EXPECT_EQ(h.outcomes, "P");
  EXPECT_EQ(h.runs, 1);
}

TEST(ApplySampleTest, LaterSamplesMoveTheAverageByAlpha) {
  TestHistory h;
  ApplySample(h, S(1.0));
  ApplySample(h, S(2.0), HistoryOptions{.ewma_alpha = 0.25});
  EXPECT_DOUBLE_EQ(h.ewma_s, 1.25);
  EXPECT_THAT(h.recent_s, ElementsAre(1.0, 2.0));
}

TEST(ApplySampleTest, FailedRunsCountAsDurations) {
  TestHistory h;
  ApplySample(h, S(3.0, Outcome::kFailed));
  EXPECT_DOUBLE_EQ(h.ewma_s, 3.0);
  EXPECT_EQ(h.outcomes, "F");
}

TEST(ApplySampleTest, SkipsAndErrorsRecordTheOutcomeButNotTheDuration) {
  TestHistory h;
  ApplySample(h, S(4.0));
  ApplySample(h, S(0.001, Outcome::kSkipped));
  ApplySample(h, S(0.002, Outcome::kError));
  EXPECT_DOUBLE_EQ(h.ewma_s, 4.0);
  EXPECT_EQ(h.outcomes, "PSE");
  EXPECT_EQ(h.runs, 3);
  EXPECT_THAT(h.recent_s, ElementsAre(4.0));
}

TEST(ApplySampleTest, NotRunIsIgnored) {
  TestHistory h;
  ApplySample(h, S(1.0, Outcome::kNotRun));
  EXPECT_EQ(h.runs, 0);
  EXPECT_TRUE(h.outcomes.empty());
}

TEST(ApplySampleTest, NegativeOrNanDurationIsNotADuration) {
  TestHistory h;
  ApplySample(h, S(-1.0));
  ApplySample(h, S(std::nan("")));
  EXPECT_FALSE(h.has_duration());
  EXPECT_EQ(h.outcomes, "PP");
}

TEST(ApplySampleTest, WindowsKeepOnlyTheNewest) {
  TestHistory h;
  HistoryOptions o{.max_recent_samples = 3, .max_recent_outcomes = 4};
  for (int i = 1; i <= 6; ++i) ApplySample(h, S(i, i % 2 ? Outcome::kPassed : Outcome::kFailed), o);
  EXPECT_THAT(h.recent_s, ElementsAre(4.0, 5.0, 6.0));
  EXPECT_EQ(h.outcomes, "PFPF");
  EXPECT_EQ(h.runs, 6);
}

TEST(ApplySampleTest, LastSeenNeverGoesBackwards) {
  TestHistory h;
  ApplySample(h, S(1.0, Outcome::kPassed, 2000));
  ApplySample(h, S(1.0, Outcome::kPassed, 1000));
  EXPECT_EQ(h.last_seen, absl::FromUnixSeconds(2000));
}

TEST(SamplesFromResultsTest, EveryAttemptOldestFirstAndNothingForNotRun) {
  TestCase flaky;
  flaky.id = "a.py::t";
  flaky.reruns.push_back(TestAttempt{.outcome = Outcome::kFailed, .time_s = 2});
  flaky.result = TestAttempt{.outcome = Outcome::kPassed, .time_s = 1};
  TestCase cancelled;
  cancelled.id = "a.py::u";
  cancelled.result.outcome = Outcome::kNotRun;
  auto samples = SamplesFromResults({flaky, cancelled}, absl::FromUnixSeconds(5));
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].outcome, Outcome::kFailed);
  EXPECT_EQ(samples[1].outcome, Outcome::kPassed);
  TestHistory h;
  for (const Sample& s : samples) ApplySample(h, s);
  EXPECT_EQ(h.outcomes, "FP");
  EXPECT_TRUE(LooksFlaky(h));
  EXPECT_DOUBLE_EQ(FailureRate(h), 0.5);
}

TEST(LooksFlakyTest, SkipsAndSteadyFailuresAreNotFlaky) {
  TestHistory steady{.outcomes = "FFFE"};
  TestHistory skipped{.outcomes = "PSPS"};
  EXPECT_FALSE(LooksFlaky(steady));
  EXPECT_FALSE(LooksFlaky(skipped));
  EXPECT_DOUBLE_EQ(FailureRate(skipped), 0);
}

TEST(KnownDurationsTest, OnlyTestsWithADuration) {
  TestHistory timed{.test_id = "a", .ewma_s = 2, .recent_s = {2}};
  TestHistory skipped_only{.test_id = "b", .outcomes = "S"};
  EXPECT_THAT(KnownDurations({timed, skipped_only}), ElementsAre(std::pair<std::string, double>("a", 2)));
}

TEST(PercentileTest, NearestRank) {
  EXPECT_EQ(Percentile({}, 0.9), 0);
  EXPECT_EQ(Percentile({5, 1, 3, 2, 4, 6, 7, 8, 9, 10}, 0.9), 9);
  EXPECT_EQ(Percentile({5, 1, 3}, 0.5), 3);
  EXPECT_EQ(Percentile({5, 1, 3}, 1.0), 5);
}

TEST(JsonTest, RoundTripsEveryFieldExactly) {
  TestHistory h;
  h.test_id = "a.py::test[\"x\"\t\n ü]";
  h.ewma_s = 0.1;
  h.p90_s = 1e-9;
  h.recent_s = {0.1, 12345.678901234567, 1e-9};
  h.outcomes = "PFSE";
  h.last_seen = absl::FromUnixMicros(1'700'000'000'123'456);
  h.runs = 42;
  TS_ASSERT_OK_AND_ASSIGN(TestHistory back, DecodeJson(EncodeJson(h, true)));
  EXPECT_EQ(back, h);
  TS_ASSERT_OK_AND_ASSIGN(TestHistory without_id, DecodeJson(EncodeJson(h, false), "other"));
  EXPECT_EQ(without_id.test_id, "other");
}

TEST(JsonTest, MalformedRecordIsDataLoss) {
  EXPECT_THAT(DecodeJson("{\"ewma\": "), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
  EXPECT_THAT(DecodeJson("[1,2]"), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
  EXPECT_THAT(DecodeJson("{\"ewma\": \"slow\"}"), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
}

}  // namespace
}  // namespace testshard::history

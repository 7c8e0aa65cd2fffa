#include "common/report/coverage.h"

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::report {
namespace {

using ::testing::HasSubstr;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

FileCoverage Lines(std::vector<std::pair<uint32_t, uint64_t>> lines, bool boolean = false,
                   std::string origin = "a") {
  FileCoverage f;
  for (auto [line, hits] : lines) f.lines.push_back({line, hits, {}});
  f.boolean_hits = boolean;
  f.origin = std::move(origin);
  f.Normalize();
  return f;
}

TEST(CoverageMergeTest, CountedHitsAreSummed) {
  FileCoverage a = Lines({{1, 3}, {2, 0}});
  MergeInto(a, Lines({{2, 5}, {3, 0}}));
  ASSERT_EQ(a.lines.size(), 3u);
  EXPECT_EQ(a.lines[0].hits, 3u);
  EXPECT_EQ(a.lines[1].hits, 5u);
  EXPECT_EQ(a.lines[2].hits, 0u);
}

TEST(CoverageMergeTest, BooleanHitsAreOredLikeOneSerialRun) {
  FileCoverage a = Lines({{1, 1}, {2, 0}}, true);
  MergeInto(a, Lines({{1, 1}, {2, 1}}, true));
  EXPECT_EQ(a.lines[0].hits, 1u);
  EXPECT_EQ(a.lines[1].hits, 1u);
  EXPECT_TRUE(a.boolean_hits);
}

TEST(CoverageMergeTest, LcovBranchesAreUnitedByIdWithDashMeaningNotEvaluated) {
  FileCoverage a, b;
  a.branches.emplace_back().line = 5;
  a.branches[0].by_id = {{"0,0", -1}, {"0,1", 2}};
  b.branches.emplace_back().line = 5;
  b.branches[0].by_id = {{"0,0", 3}, {"0,1", -1}, {"1,0", 0}};
  MergeInto(a, std::move(b));
  ASSERT_EQ(a.branches.size(), 1u);
  EXPECT_EQ(a.branches[0].Total(), 3u);
  EXPECT_EQ(a.branches[0].Covered(), 2u);
  EXPECT_EQ(a.branches[0].by_id[0].second, 3);
  EXPECT_EQ(a.branches[0].by_id[1].second, 2);
}

TEST(CoverageMergeTest, CoveragePyMissingBranchesAreIntersected) {
  BranchLine x;
  x.line = 6;
  x.counted_total = 2;
  x.counted_covered = 1;
  x.has_missing = true;
  x.missing = {"8"};
  BranchLine y = x;
  y.missing = {"7"};
  FileCoverage a, b;
  a.branches.push_back(x);
  b.branches.push_back(y);
  MergeInto(a, std::move(b));
  EXPECT_EQ(a.branches[0].Total(), 2u);
  EXPECT_EQ(a.branches[0].Covered(), 2u);
  EXPECT_TRUE(a.branches[0].missing.empty());
}

TEST(CoverageMergeTest, CountOnlyBranchesTakeTheLargerCount) {
  BranchLine x;
  x.line = 3;
  x.counted_total = 4;
  x.counted_covered = 1;
  BranchLine y = x;
  y.counted_covered = 3;
  FileCoverage a, b;
  a.branches.push_back(x);
  b.branches.push_back(y);
  MergeInto(a, std::move(b));
  EXPECT_EQ(a.branches[0].Covered(), 3u);
}

TEST(CoverageMergeTest, FunctionsAreUnitedByName) {
  FileCoverage a, b;
  a.functions["f"] = {10, 0, 2};
  b.functions["f"] = {10, 0, 1};
  b.functions["g"] = {20, 0, 0};
  MergeInto(a, std::move(b));
  EXPECT_EQ(a.functions["f"].hits, 3u);
  EXPECT_EQ(a.functions.size(), 2u);
}

TEST(CoverageCompatibilityTest, ChecksumMismatchIsRefused) {
  FileCoverage a = Lines({{1, 1}}, false, "shard0.info");
  FileCoverage b = Lines({{1, 1}}, false, "shard1.info");
  a.lines[0].checksum.assign("abc");
  b.lines[0].checksum.assign("xyz");
  EXPECT_THAT(CheckCompatible("src/a.c", a, b),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("src/a.c"), HasSubstr("shard0.info"), HasSubstr("shard1.info"),
                             HasSubstr("line 1 checksum"))));
}

TEST(CoverageCompatibilityTest, CoveragePyStatementSetsMustMatch) {
  EXPECT_THAT(CheckCompatible("a.py", Lines({{1, 1}, {2, 0}}, true), Lines({{1, 1}, {2, 1}}, true)), IsOk());
  EXPECT_THAT(CheckCompatible("a.py", Lines({{1, 1}, {2, 0}}, true), Lines({{1, 1}, {3, 1}}, true)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("line 2 is a statement in only one")));
  // Counted (gcov) data may differ in line sets legitimately: a header seen from different binaries.
  EXPECT_THAT(CheckCompatible("a.h", Lines({{1, 1}}), Lines({{2, 1}})), IsOk());
}

TEST(CoverageCompatibilityTest, LcovVersionMismatchIsRefused) {
  FileCoverage a = Lines({{1, 1}}), b = Lines({{1, 1}});
  a.version = "v1";
  b.version = "v2";
  EXPECT_THAT(CheckCompatible("a.c", a, b), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("VER")));
}

TEST(CoverageTotalsTest, RatesFollowCoveragePy) {
  EXPECT_EQ(CoverageRate(5, 8), "0.625");
  EXPECT_EQ(CoverageRate(0, 0), "1");
  EXPECT_EQ(CoverageRate(1, 3), "0.3333");
  EXPECT_EQ(CoverageRate(3, 3), "1");
}

}  // namespace
}  // namespace testshard::report

#include "coordinator/estimator.h"

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

DurationEstimator Make(EstimatorOptions options = {}) {
  return DurationEstimator(
      {
          {"tests/api/test_users.py::TestUsers::test_create[a]", 2.0},
          {"tests/api/test_users.py::TestUsers::test_create[b]", 4.0},
          {"tests/api/test_users.py::TestUsers::test_list", 10.0},
          {"tests/api/test_users.py::test_module_level", 0.5},
          {"tests/api/test_orgs.py::test_a", 100.0},
          {"tests/api/test_orgs.py::test_b", 0.2},
          {"tests/api/test_orgs.py::test_c", 0.3},
          {"tests/db/test_rls.py::test_x", 7.0},
      },
      options);
}

TEST(RelativePrefixesTest, NearestFirst) {
  EXPECT_THAT(RelativePrefixes("tests/api/test_u.py::TestU::test_c[x::y]"),
              ElementsAre(Pair("tests/api/test_u.py::TestU::test_c[", EstimateSource::kParametrize),
                          Pair("tests/api/test_u.py::TestU::", EstimateSource::kClass),
                          Pair("tests/api/test_u.py::", EstimateSource::kModule),
                          Pair("tests/api/", EstimateSource::kDirectory), Pair("tests/", EstimateSource::kDirectory),
                          Pair("", EstimateSource::kSuite)));
}

TEST(DurationEstimatorTest, KnownTestUsesItsHistory) {
  Estimate e = Make().Get("tests/db/test_rls.py::test_x");
  EXPECT_EQ(e.source, EstimateSource::kHistory);
  EXPECT_DOUBLE_EQ(e.seconds, 7.0);
}

TEST(DurationEstimatorTest, NewParameterTakesItsSiblingParameters) {
  Estimate e = Make().Get("tests/api/test_users.py::TestUsers::test_create[c]");
  EXPECT_EQ(e.source, EstimateSource::kParametrize);
  EXPECT_DOUBLE_EQ(e.seconds, 3.0);  // median of 2 and 4
}

TEST(DurationEstimatorTest, NewMethodTakesItsClass) {
  Estimate e = Make().Get("tests/api/test_users.py::TestUsers::test_delete");
  EXPECT_EQ(e.source, EstimateSource::kClass);
  EXPECT_DOUBLE_EQ(e.seconds, 4.0);  // median of 2, 4, 10
}

TEST(DurationEstimatorTest, ModuleMedianIgnoresOneHugeOutlier) {
  Estimate e = Make().Get("tests/api/test_orgs.py::test_new");
  EXPECT_EQ(e.source, EstimateSource::kModule);
  EXPECT_DOUBLE_EQ(e.seconds, 0.3);  // not the mean, 33.5
}

TEST(DurationEstimatorTest, NewModuleTakesItsDirectory) {
  Estimate e = Make().Get("tests/db/test_new.py::test_y");
  EXPECT_EQ(e.source, EstimateSource::kDirectory);
  EXPECT_DOUBLE_EQ(e.seconds, 7.0);
}

TEST(DurationEstimatorTest, NewDirectoryTakesTheSuite) {
  Estimate e = Make().Get("other/test_z.py::test_z");
  EXPECT_EQ(e.source, EstimateSource::kSuite);
  EXPECT_DOUBLE_EQ(e.seconds, 3.0);  // median of all eight: (2 + 4) / 2
}

TEST(DurationEstimatorTest, PrefixMatchesWholeNamesOnly) {
  // "tests/api/test_users.py::TestUsers::test_create[" must not pick up "...::test_create_many".
  DurationEstimator e({{"a.py::test_create_many", 50.0}, {"a.py::test_other", 1.0}});
  Estimate got = e.Get("a.py::test_create[1]");
  EXPECT_EQ(got.source, EstimateSource::kModule);
}

TEST(DurationEstimatorTest, NoHistoryAtAllUsesTheConfiguredDefault) {
  DurationEstimator e({}, EstimatorOptions{.default_s = 2.5});
  Estimate got = e.Get("a.py::t");
  EXPECT_EQ(got.source, EstimateSource::kDefault);
  EXPECT_DOUBLE_EQ(got.seconds, 2.5);
}

TEST(DurationEstimatorTest, MinSiblingsSkipsThinGroups) {
  Estimate e = Make(EstimatorOptions{.min_siblings = 3}).Get("tests/api/test_users.py::TestUsers::test_create[c]");
  EXPECT_EQ(e.source, EstimateSource::kClass);  // two parameters are not enough
}

TEST(DurationEstimatorTest, SafeFromSeveralThreads) {
  DurationEstimator e = Make();
  std::vector<std::thread> threads;
  std::vector<double> got(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] { got[i] = e.Seconds("tests/api/test_orgs.py::test_" + std::to_string(i)); });
  }
  for (auto& t : threads) t.join();
  for (double g : got) EXPECT_DOUBLE_EQ(g, 0.3);
}

}  // namespace
}  // namespace testshard::coordinator

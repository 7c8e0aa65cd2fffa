#include "coordinator/work_units.h"

#include <algorithm>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::coordinator {
namespace {

using ::testing::ElementsAre;

TEST(GroupKeyTest, ClassModuleAndTestKeys) {
  EXPECT_EQ(GroupKey("tests/a.py::TestK::test_x[1]", Granularity::kClass), "tests/a.py::TestK");
  EXPECT_EQ(GroupKey("tests/a.py::TestK::test_x[1]", Granularity::kModule), "tests/a.py");
  EXPECT_EQ(GroupKey("tests/a.py::TestK::test_x[1]", Granularity::kTest), "tests/a.py::TestK::test_x[1]");
  EXPECT_EQ(GroupKey("a.py::Outer::Inner::test", Granularity::kClass), "a.py::Outer::Inner");
}

TEST(GroupKeyTest, ModuleLevelFunctionIsItsOwnClassUnit) {
  EXPECT_EQ(GroupKey("a.py::test_f", Granularity::kClass), "a.py::test_f");
}

TEST(GroupKeyTest, SeparatorsInsideParametersDoNotCount) {
  EXPECT_EQ(GroupKey("a.py::test_f[x::y]", Granularity::kClass), "a.py::test_f[x::y]");
  EXPECT_EQ(GroupKey("a.py::test_f[x::y/z.py]", Granularity::kModule), "a.py");
}

TEST(ParseGranularityTest, KnownNamesOnly) {
  EXPECT_EQ(ParseGranularity("module"), Granularity::kModule);
  EXPECT_EQ(ParseGranularity("class"), Granularity::kClass);
  EXPECT_EQ(ParseGranularity("test"), Granularity::kTest);
  EXPECT_EQ(ParseGranularity("file"), std::nullopt);
}

PlanRequest Request(std::vector<std::string> ids, std::map<std::string, double> est) {
  PlanRequest r;
  r.test_ids = std::move(ids);
  r.estimate = [est](const std::string& id) { return est.count(id) ? est.at(id) : 1.0; };
  return r;
}

TEST(BuildUnitsTest, ModuleGranularitySumsItsTests) {
  PlanRequest r = Request({"b.py::t2", "a.py::t1", "b.py::t1"}, {{"a.py::t1", 5}, {"b.py::t1", 2}, {"b.py::t2", 2}});
  r.granularity = Granularity::kModule;
  auto units = BuildUnits(r);
  ASSERT_EQ(units.size(), 2u);
  EXPECT_EQ(units[0].key, "a.py");
  EXPECT_DOUBLE_EQ(units[0].seconds, 5);
  EXPECT_EQ(units[1].key, "b.py");
  EXPECT_DOUBLE_EQ(units[1].seconds, 4);
  EXPECT_THAT(units[1].tests, ElementsAre(2, 0));  // sorted by id: b.py::t1, b.py::t2
}

TEST(BuildUnitsTest, ExplicitGroupsStayTogetherAcrossModules) {
  PlanRequest r = Request({"a.py::t1", "b.py::t1", "c.py::t1"}, {});
  r.groups = {"db", "db", ""};
  auto units = BuildUnits(r, /*min_units=*/3);
  ASSERT_EQ(units.size(), 2u);  // the group is a promise: not cut even though 3 units were wanted
  EXPECT_EQ(units[0].key, "group:db");
  EXPECT_TRUE(units[0].pinned);
  EXPECT_EQ(units[0].tests.size(), 2u);
}

TEST(BuildUnitsTest, SoftUnitsAreCutWhenThereAreFewerThanShards) {
  PlanRequest r = Request({"a.py::t1", "a.py::t2", "a.py::t3", "b.py::t1"}, {});
  r.granularity = Granularity::kModule;
  auto units = BuildUnits(r, /*min_units=*/3);
  EXPECT_EQ(units.size(), 4u);  // a.py (the largest) was cut into its three tests
}

TEST(BuildUnitsTest, ZeroEstimatesAreFloored) {
  PlanRequest r = Request({"a", "b"}, {{"a", 0}, {"b", -3}});
  for (const WorkUnit& u : BuildUnits(r)) EXPECT_DOUBLE_EQ(u.seconds, kMinTestSeconds);
}

TEST(BuildUnitsTest, IndependentOfCollectionOrder) {
  std::vector<std::string> ids = {"x.py::TestA::t1", "x.py::TestA::t2", "y.py::t", "x.py::t0", "z.py::TestB::t"};
  std::map<std::string, double> est = {{"x.py::TestA::t1", 0.1}, {"x.py::TestA::t2", 0.2}, {"y.py::t", 0.3}};
  PlanRequest a = Request(ids, est);
  std::reverse(ids.begin(), ids.end());
  PlanRequest b = Request(ids, est);
  a.granularity = b.granularity = Granularity::kClass;
  auto ua = BuildUnits(a), ub = BuildUnits(b);
  ASSERT_EQ(ua.size(), ub.size());
  for (size_t i = 0; i < ua.size(); ++i) {
    EXPECT_EQ(UnitKey(ua[i], a.test_ids), UnitKey(ub[i], b.test_ids));
    EXPECT_EQ(ua[i].seconds, ub[i].seconds);
  }
}

}  // namespace
}  // namespace testshard::coordinator

#include "coordinator/lpt_planner.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::coordinator {
namespace {

PlanRequest Request(const std::map<std::string, double>& est, int shards) {
  PlanRequest r;
  for (const auto& [id, s] : est) r.test_ids.push_back(id);
  r.agents = shards;
  r.estimate = [est](const std::string& id) { return est.at(id); };
  return r;
}

std::map<std::string, double> Lognormal(int n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> d(-1.0, 1.2);
  std::map<std::string, double> est;
  for (int i = 0; i < n; ++i) est["tests/m" + std::to_string(i % 40) + ".py::test_" + std::to_string(i)] = d(rng);
  return est;
}

TEST(PlanStaticTest, EveryTestExactlyOnce) {
  auto est = Lognormal(1000, 1);
  StaticPlan plan = PlanStatic(Request(est, 7));
  ASSERT_EQ(plan.shards.size(), 7u);
  std::multiset<std::string> seen;
  for (const Batch& b : plan.shards) seen.insert(b.test_ids.begin(), b.test_ids.end());
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 1000u);
}

TEST(PlanStaticTest, SameShardsWhateverTheCollectionOrder) {
  auto est = Lognormal(500, 2);
  PlanRequest a = Request(est, 6);
  PlanRequest b = a;
  std::shuffle(b.test_ids.begin(), b.test_ids.end(), std::mt19937(7));
  StaticPlan pa = PlanStatic(a), pb = PlanStatic(b);
  for (size_t s = 0; s < pa.shards.size(); ++s) EXPECT_EQ(pa.shards[s].test_ids, pb.shards[s].test_ids) << s;
}

TEST(PlanStaticTest, NeverAnEmptyShardWithAtLeastAsManyTestsAsShards) {
  std::map<std::string, double> zeros;
  for (int i = 0; i < 5; ++i) zeros["t" + std::to_string(i)] = 0;
  StaticPlan plan = PlanStatic(Request(zeros, 5));
  for (const Batch& b : plan.shards) EXPECT_EQ(b.test_ids.size(), 1u);
}

TEST(PlanStaticTest, SoftModulesAreCutRatherThanLeaveAShardEmpty) {
  PlanRequest r = Request({{"a.py::t1", 1}, {"a.py::t2", 1}, {"a.py::t3", 1}}, 3);
  r.granularity = Granularity::kModule;
  StaticPlan plan = PlanStatic(r);
  for (const Batch& b : plan.shards) EXPECT_EQ(b.test_ids.size(), 1u);
}

TEST(PlanStaticTest, FewerTestsThanShardsLeavesTheRestEmpty) {
  StaticPlan plan = PlanStatic(Request({{"a", 1}, {"b", 2}}, 4));
  ASSERT_EQ(plan.shards.size(), 4u);
  int non_empty = 0;
  for (const Batch& b : plan.shards) non_empty += !b.test_ids.empty();
  EXPECT_EQ(non_empty, 2);
}

TEST(PlanStaticTest, LocalSearchFixesWhatLptAloneMisses) {
  // LPT alone: {3,2,2} and {3,2} = 7 vs 5. The optimum is {3,3} and {2,2,2}.
  StaticPlan plan = PlanStatic(Request({{"a", 3}, {"b", 3}, {"c", 2}, {"d", 2}, {"e", 2}}, 2));
  EXPECT_DOUBLE_EQ(plan.makespan_s, 6);
  EXPECT_DOUBLE_EQ(plan.lower_bound_s, 6);
}

TEST(PlanStaticTest, CloseToTheLowerBoundOnManyTests) {
  StaticPlan plan = PlanStatic(Request(Lognormal(5000, 3), 32));
  EXPECT_LE(plan.makespan_s, 1.02 * plan.lower_bound_s);
}

TEST(PlanStaticTest, TheLongestUnitBoundsTheLowerBound) {
  StaticPlan plan = PlanStatic(Request({{"slow", 100}, {"a", 1}, {"b", 1}, {"c", 1}}, 2));
  EXPECT_DOUBLE_EQ(plan.lower_bound_s, 100);
  EXPECT_DOUBLE_EQ(plan.makespan_s, 100);
}

TEST(PlanStaticTest, StartupIsPaidOncePerShard) {
  PlanRequest r = Request({{"a", 1}, {"b", 1}}, 2);
  r.default_startup_s = 2.5;
  StaticPlan plan = PlanStatic(r);
  EXPECT_DOUBLE_EQ(plan.lower_bound_s, 3.5);
  EXPECT_DOUBLE_EQ(plan.makespan_s, 3.5);
  EXPECT_DOUBLE_EQ(plan.shards[0].predicted_s, 1);  // predicted_s is the tests alone
}

TEST(PlanStaticTest, ExplicitGroupsStayInOneShard) {
  PlanRequest r = Request({{"a.py::t1", 1}, {"b.py::t1", 1}, {"c.py::t1", 1}, {"d.py::t1", 1}}, 2);
  r.groups = {"g", "", "g", ""};  // a.py::t1 and c.py::t1
  StaticPlan plan = PlanStatic(r);
  for (const Batch& b : plan.shards) {
    bool has_a = std::count(b.test_ids.begin(), b.test_ids.end(), "a.py::t1");
    bool has_c = std::count(b.test_ids.begin(), b.test_ids.end(), "c.py::t1");
    EXPECT_EQ(has_a, has_c);
  }
}

TEST(PlanStaticTest, NoTests) {
  StaticPlan plan = PlanStatic(Request({}, 3));
  EXPECT_EQ(plan.shards.size(), 3u);
  EXPECT_DOUBLE_EQ(plan.makespan_s, 0);
}

TEST(LptPlannerTest, QueueHandsOutTheLargestShardFirst) {
  LptPlanner planner;
  auto queue = planner.Plan(Request({{"big", 9}, {"a", 1}, {"b", 1}}, 2));
  auto first = queue->Next("agent-1");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->test_ids, std::vector<std::string>{"big"});
  EXPECT_EQ(queue->remaining(), 2u);
}

}  // namespace
}  // namespace testshard::coordinator

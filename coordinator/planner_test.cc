#include "coordinator/planner.h"

#include <set>

#include "gtest/gtest.h"

namespace testshard::coordinator {
namespace {

std::vector<std::string> Ids(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back("t.py::test_" + std::to_string(i));
  return ids;
}

TEST(EqualCountPlannerTest, EveryTestExactlyOnceInNearEqualShards) {
  EqualCountPlanner planner;
  auto queue = planner.Plan({Ids(10), 3, nullptr});
  std::multiset<std::string> seen;
  std::vector<size_t> sizes;
  while (auto b = queue->Next("a")) {
    sizes.push_back(b->test_ids.size());
    seen.insert(b->test_ids.begin(), b->test_ids.end());
  }
  EXPECT_EQ(sizes, (std::vector<size_t>{4, 3, 3}));
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 10u);
}

TEST(EqualCountPlannerTest, NeverAnEmptyShard) {
  EqualCountPlanner planner;
  auto queue = planner.Plan({Ids(2), 5, nullptr});
  int shards = 0;
  while (auto b = queue->Next("a")) {
    EXPECT_FALSE(b->test_ids.empty());
    ++shards;
  }
  EXPECT_EQ(shards, 2);
  EXPECT_EQ(planner.Plan({{}, 3, nullptr})->Next("a"), std::nullopt);
}

TEST(FixedShardQueueTest, ReturnedTestsComeFirst) {
  EqualCountPlanner planner;
  auto queue = planner.Plan({Ids(4), 2, nullptr});
  auto first = queue->Next("a");
  ASSERT_TRUE(first);
  queue->Return(first->test_ids);
  EXPECT_EQ(queue->remaining(), 4u);
  auto again = queue->Next("b");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->test_ids, first->test_ids);
}

}  // namespace
}  // namespace testshard::coordinator

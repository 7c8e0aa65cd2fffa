#include "coordinator/planner.h"

#include <algorithm>
#include <utility>

namespace testshard::coordinator {

FixedShardQueue::FixedShardQueue(std::vector<Batch> shards) : shards_(std::move(shards)) {
  std::reverse(shards_.begin(), shards_.end());
}

std::optional<Batch> FixedShardQueue::Next(std::string_view) {
  if (shards_.empty()) return std::nullopt;
  Batch b = std::move(shards_.back());
  shards_.pop_back();
  return b;
}

void FixedShardQueue::Return(std::vector<std::string> test_ids) {
  if (test_ids.empty()) return;
  shards_.push_back(Batch{std::move(test_ids), 0});
}

size_t FixedShardQueue::remaining() const {
  size_t n = 0;
  for (const Batch& b : shards_) n += b.test_ids.size();
  return n;
}

std::unique_ptr<StageQueue> EqualCountPlanner::Plan(const PlanRequest& request) {
  const size_t n = request.test_ids.size();
  const size_t k = std::max<size_t>(1, std::min<size_t>(n, std::max(1, request.agents)));
  std::vector<Batch> shards;
  size_t begin = 0;
  for (size_t i = 0; i < k && begin < n; ++i) {
    // The first n % k shards take one extra test, so sizes differ by at most one.
    size_t size = n / k + (i < n % k ? 1 : 0);
    Batch b;
    b.test_ids.assign(request.test_ids.begin() + begin, request.test_ids.begin() + begin + size);
    for (const std::string& id : b.test_ids) b.predicted_s += request.estimate ? request.estimate(id) : 1.0;
    shards.push_back(std::move(b));
    begin += size;
  }
  return std::make_unique<FixedShardQueue>(std::move(shards));
}

}  // namespace testshard::coordinator

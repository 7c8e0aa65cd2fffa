#include "coordinator/lpt_planner.h"

#include <algorithm>
#include <queue>
#include <tuple>
#include <utility>

namespace testshard::coordinator {
namespace {

// Local search after LPT. LPT alone is within a few percent of the bound when every shard gets many units, but
// with few units per shard (1,000 tests on 256 agents) it can leave one shard a unit too full; moving or swapping
// units out of the fullest shard fixes most of that. Each accepted step strictly lowers the fuller of the two
// shards it touches, so the search terminates; the step cap bounds its time on huge inputs, where LPT is already
// at the bound and the first check ends it.
class Refiner {
 public:
  Refiner(const std::vector<WorkUnit>& units, std::vector<std::vector<size_t>>& bins, std::vector<double>& loads)
      : units_(units), bins_(bins), loads_(loads) {}

  void Run(double lower_bound) {
    const int shards = static_cast<int>(bins_.size());
    const int max_steps = 20 * shards + 1000;
    for (int step = 0; step < max_steps; ++step) {
      const int m = static_cast<int>(std::max_element(loads_.begin(), loads_.end()) - loads_.begin());
      const double top = loads_[m];
      if (top <= lower_bound * (1 + 1e-9)) return;
      if (!Improve(m, top)) return;
    }
  }

 private:
  double Size(size_t unit) const { return units_[unit].seconds; }

  // Finds the move or swap out of shard `m` that leaves the two shards it touches lowest, and applies it.
  bool Improve(int m, double top) {
    const double eps = top * 1e-9;
    double best = top - eps;  // a step must beat this
    int best_bin = -1;
    size_t best_u = 0, best_v = 0;  // positions in bins_[m] / bins_[best_bin]
    bool best_is_swap = false;
    // Bounded: the largest units of m are the ones worth moving.
    std::vector<size_t>& from = bins_[m];
    std::vector<size_t> order(from.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return std::tie(units_[from[b]].seconds, a) < std::tie(units_[from[a]].seconds, b);
    });
    if (order.size() > 64) order.resize(64);

    for (int b = 0; b < static_cast<int>(bins_.size()); ++b) {
      if (b == m) continue;
      const double gap = top - loads_[b];
      if (gap <= eps) continue;
      for (size_t pu : order) {
        const double u = Size(from[pu]);
        // Move u to b (never emptying m).
        if (from.size() > 1) {
          double worst = std::max(top - u, loads_[b] + u);
          if (worst < best) {
            best = worst, best_bin = b, best_u = pu, best_is_swap = false;
          }
        }
        // Swap u with a smaller v of b: the pair's new max is lowest when u - v is nearest gap / 2, so look on
        // either side of u - gap / 2 in b's sorted sizes.
        const std::vector<std::pair<double, size_t>>& sorted = Sorted(b);
        const double want = u - gap / 2;
        auto it = std::lower_bound(sorted.begin(), sorted.end(), std::make_pair(want, size_t{0}));
        for (auto c = it == sorted.begin() ? it : it - 1; c != sorted.end() && c <= it; ++c) {
          const double d = u - c->first;
          if (d <= 0 || d >= gap) continue;
          double worst = std::max(top - d, loads_[b] + d);
          if (worst < best) {
            best = worst, best_bin = b, best_u = pu, best_v = c->second, best_is_swap = true;
          }
        }
      }
    }
    if (best_bin < 0) return false;
    sorted_[m].clear();
    sorted_[best_bin].clear();
    std::vector<size_t>& to = bins_[best_bin];
    const size_t u = from[best_u];
    if (best_is_swap) {
      const size_t v = to[best_v];
      std::swap(from[best_u], to[best_v]);
      loads_[m] += Size(v) - Size(u);
      loads_[best_bin] += Size(u) - Size(v);
    } else {
      from.erase(from.begin() + static_cast<ptrdiff_t>(best_u));
      to.push_back(u);
      loads_[m] -= Size(u);
      loads_[best_bin] += Size(u);
    }
    return true;
  }

  // A shard's unit sizes with their positions, ascending; rebuilt after the shard changes.
  const std::vector<std::pair<double, size_t>>& Sorted(int b) {
    std::vector<std::pair<double, size_t>>& s = sorted_[b];
    if (s.empty()) {
      for (size_t i = 0; i < bins_[b].size(); ++i) s.emplace_back(Size(bins_[b][i]), i);
      std::sort(s.begin(), s.end());
    }
    return s;
  }

  const std::vector<WorkUnit>& units_;
  std::vector<std::vector<size_t>>& bins_;
  std::vector<double>& loads_;
  std::vector<std::vector<std::pair<double, size_t>>> sorted_ = std::vector<std::vector<std::pair<double, size_t>>>(
      bins_.size());
};

}  // namespace

std::vector<std::vector<size_t>> PartitionUnits(const std::vector<WorkUnit>& units, int shards) {
  const size_t p = static_cast<size_t>(std::max(1, shards));
  std::vector<std::vector<size_t>> bins(p);
  std::vector<double> loads(p, 0);
  // Least loaded first; among equals the one holding fewer units (so zero-cost units still spread out), then the
  // lower index (so the result is deterministic).
  using Entry = std::tuple<double, size_t, size_t>;  // load, units, shard
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  for (size_t i = 0; i < p; ++i) heap.emplace(0.0, 0, i);
  for (size_t u = 0; u < units.size(); ++u) {
    auto [load, count, shard] = heap.top();
    heap.pop();
    bins[shard].push_back(u);
    loads[shard] = load + units[u].seconds;
    heap.emplace(loads[shard], count + 1, shard);
  }
  double total = 0, longest = 0;
  for (const WorkUnit& u : units) {
    total += u.seconds;
    longest = std::max(longest, u.seconds);
  }
  if (units.size() > p) Refiner(units, bins, loads).Run(std::max(total / static_cast<double>(p), longest));
  return bins;
}

StaticPlan PlanStatic(const PlanRequest& request) {
  StaticPlan plan;
  const int shards = std::max(1, request.agents);
  plan.startup_s = std::max(0.0, request.default_startup_s);
  std::vector<WorkUnit> units = BuildUnits(request, static_cast<size_t>(shards));
  std::vector<std::vector<size_t>> bins = PartitionUnits(units, shards);
  plan.shards.resize(static_cast<size_t>(shards));
  double max_load = 0;
  for (size_t s = 0; s < bins.size(); ++s) {
    Batch& batch = plan.shards[s];
    // Units in the order they were placed (longest first), tests within a unit by id: never collection order, so
    // every matrix job prints the same shard, the same way.
    for (size_t u : bins[s]) {
      batch.predicted_s += units[u].seconds;
      for (uint32_t t : units[u].tests) batch.test_ids.push_back(request.test_ids[t]);
    }
    max_load = std::max(max_load, batch.predicted_s);
  }
  for (const WorkUnit& u : units) {
    plan.total_s += u.seconds;
    plan.longest_unit_s = std::max(plan.longest_unit_s, u.seconds);
  }
  plan.lower_bound_s = std::max(plan.total_s / shards, plan.longest_unit_s) + plan.startup_s;
  plan.makespan_s = (units.empty() ? 0 : max_load) + plan.startup_s;
  if (units.empty()) plan.lower_bound_s = plan.startup_s;
  return plan;
}

std::unique_ptr<StageQueue> LptPlanner::Plan(const PlanRequest& request) {
  StaticPlan plan = PlanStatic(request);
  std::vector<Batch> shards;
  for (Batch& b : plan.shards) {
    if (!b.test_ids.empty()) shards.push_back(std::move(b));
  }
  // Largest first, so that if there are fewer agents than shards the long ones start early.
  std::stable_sort(shards.begin(), shards.end(),
                   [](const Batch& a, const Batch& b) { return a.predicted_s > b.predicted_s; });
  return std::make_unique<FixedShardQueue>(std::move(shards));
}

}  // namespace testshard::coordinator

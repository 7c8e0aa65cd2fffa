// Static planning: a fixed partition of a stage into N shards, the same on every machine that computes it from
// the same tests and history. Used by `testshard split` (CI matrices, no coordinator) and `testshard plan`.
#ifndef TESTSHARD_COORDINATOR_LPT_PLANNER_H_
#define TESTSHARD_COORDINATOR_LPT_PLANNER_H_

#include <memory>
#include <vector>

#include "coordinator/planner.h"
#include "coordinator/work_units.h"

namespace testshard::coordinator {

struct StaticPlan {
  std::vector<Batch> shards;  // exactly `shards` entries, longest unit first; empty only if unavoidable
  double startup_s = 0;       // paid once by every shard
  double total_s = 0;         // sum of all estimates
  double longest_unit_s = 0;  // the largest indivisible unit
  // max(total / shards, longest unit) + start-up: no partition of these units can finish sooner.
  double lower_bound_s = 0;
  double makespan_s = 0;      // the slowest shard, start-up included
};

// Partitions `units` (as BuildUnits returns them: longest first, ties by key) into `shards` bins:
// longest-processing-time-first (each unit to the least loaded shard, ties to the one with fewer units, then the
// lower index), then a bounded local search that moves or swaps units out of the fullest shard while that
// lowers it. Pure and deterministic: the same units give the same shards, on every machine.
// Returns, per shard, the indices into `units`.
std::vector<std::vector<size_t>> PartitionUnits(const std::vector<WorkUnit>& units, int shards);

// The whole static plan for a request (request.agents = number of shards). Never leaves a shard empty while
// there are at least as many tests as shards, unless explicit groups make it impossible.
StaticPlan PlanStatic(const PlanRequest& request);

// The Planner for the coordinator's static mode: PlanStatic's shards in a FixedShardQueue, largest first.
class LptPlanner final : public Planner {
 public:
  std::unique_ptr<StageQueue> Plan(const PlanRequest& request) override;
};

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_LPT_PLANNER_H_

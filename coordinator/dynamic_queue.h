// Dynamic planning: the coordinator's queue that agents pull batches from as they free up.
#ifndef TESTSHARD_COORDINATOR_DYNAMIC_QUEUE_H_
#define TESTSHARD_COORDINATOR_DYNAMIC_QUEUE_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "coordinator/planner.h"
#include "coordinator/work_units.h"

namespace testshard::coordinator {

struct DynamicOptions {
  // The fraction of an agent's fair share of the remaining time that one batch takes (guided self-scheduling with
  // k = 1 / fraction). 0.5 makes the batches halve towards the end, and means that an agent of unknown pace that
  // turns out to be twice as slow as the rest still finishes its first batch by the time the others finish
  // everything.
  double fraction = 0.5;
  // The same once the agent's pace has been measured (Completed, or AgentProfile::speed): there is less to fear,
  // so fewer, larger batches and fewer start-ups.
  double measured_fraction = 0.9;
  // How wrong a single test's estimate is, relative (0.3: ±50% uniform noise has 0.29), and how many standard
  // deviations of a batch's predicted error it keeps in reserve (see Next). estimate_cv = 0 turns the reserve off.
  double estimate_cv = 0.3;
  double margin_sigmas = 2;
  // How much of the work other agents are running still counts as left when sizing a batch. The queue has no
  // clock, so it cannot know how far along they are; on average they are half-way.
  double inflight_weight = 0.25;
  // How much agents' paces differ before anything is measured (relative standard deviation): the weight of the
  // pool's pace against an agent's own record (see Completed).
  double speed_spread = 0.25;
  // No batch is planned shorter than this many of the agent's start-ups, nor than min_batch_s. Smaller batches
  // balance the end better but each pays the start-up again. 1/ln 2 ≈ 1.44 start-ups minimises log2(share / m)
  // start-ups plus an m-long tail in theory; 2 did best in bench/planner, where estimates are also wrong.
  double min_batch_startups = 2;
  double min_batch_s = 0.05;
  // A unit is "long" when it would take at least this share of an agent's fair share of the time left. Long units
  // go only to agents whose pace is known and close to the best (within trusted_rate_margin): one on an agent
  // that turns out slow sets the finish time, and no later batch can make up for it.
  double long_unit_share = 0.5;
  double trusted_rate_margin = 1.25;
  // When a stage's span (its work per agent, or its longest unit) is below this many start-ups, splitting it costs
  // more start-ups than it can save: the queue serves the static plan, one shard per agent.
  double whole_share_below_startups = 40;
};

// Hands out the stage's work units longest first, in batches whose size follows the time left (guided
// self-scheduling): large while there is much to do (few start-ups), shrinking towards the end, so that a wrong
// estimate or a slow agent costs at most a small last batch.
//
//  - Each batch is sized for the agent that asks. Its start-up (AgentProfile::startup_s, else
//    PlanRequest::default_startup_s) sets the smallest batch worth starting; its pace (AgentProfile::speed, then
//    what Completed reports, weighed by how much each batch could tell) turns wall time into predicted seconds.
//  - An agent of unknown pace gets at most half its share: even if it turns out twice as slow, that batch ends in
//    time. Once its pace is known it takes most of its share, less a reserve for the batch's own predicted error
//    (a batch of a few large tests keeps more back than one of many small ones).
//  - Long units (half an agent's share or more) go only to agents measured close to the fastest: one on a slow
//    agent would set the finish time. While there are any, an unmeasured agent's first batch is a probe of the
//    smallest units, so it is measured within seconds.
//  - A stage whose span is only a few start-ups is served as the static plan (PartitionUnits), one shard per agent:
//    there, every extra batch costs more than any rebalancing can win.
//  - An agent id it has not seen joins the pool (late-joining agents shrink everybody's later batches).
//
// Not thread-safe: the coordinator calls it under its own lock. All calls are O(size of the batch) amortised.
class DynamicStageQueue final : public StageQueue {
 public:
  DynamicStageQueue(const PlanRequest& request, DynamicOptions options = {});

  std::optional<Batch> Next(std::string_view agent_id) override;
  void Return(std::vector<std::string> test_ids) override;
  size_t remaining() const override { return pending_tests_; }
  void Completed(std::string_view agent_id, double predicted_s, double wall_s) override;

  // Predicted seconds of work not yet handed out.
  double remaining_seconds() const { return pending_s_; }

 private:
  // A batch handed out and not yet reported through Completed.
  struct Running {
    double predicted_s = 0;
    double sum_sq = 0;     // sum of squared unit estimates (how predictable the batch is)
    bool counted = true;   // still part of inflight_s_ (until the agent asks again or reports it)
  };
  struct Agent {
    double startup_s = 0;
    double rate = 1;        // wall seconds per predicted second
    bool measured = false;  // rate comes from a measurement, not a default
    // Oldest first. Usually one; two when the agent asks for its next batch before reporting the last (a warm
    // worker asks while it still runs the last test of a batch, so that module fixtures carry over).
    std::deque<Running> running;
    double evidence = 0;         // sum of 1 / variance of the pace each completed batch showed
    double weighted_rates = 0;   // sum of pace / variance
    double rate_variance = 0;    // how uncertain `rate` still is
  };
  Agent& AgentFor(std::string_view agent_id);
  // Predicted seconds the pool gets through per wall second.
  double Capacity() const;
  double DefaultRate() const;
  double BestRate() const;
  void PushFront(std::vector<WorkUnit> units);
  // A short first batch of the smallest units, to measure an agent before it may take a long one.
  Batch Probe(Agent& agent, double budget);
  // Records `batch` as running on `agent`.
  void Hand(Agent& agent, const Batch& batch, double sum_sq);

  const DynamicOptions options_;
  const int planned_agents_;
  const double default_startup_s_;
  const std::map<std::string, AgentProfile, std::less<>> profiles_;
  const Granularity granularity_;
  std::function<double(const std::string&)> estimate_;
  std::unordered_map<std::string, std::string> explicit_groups_;  // for Return()

  std::vector<std::string> ids_;   // every test ever queued; WorkUnit::tests index it
  std::deque<WorkUnit> pending_;   // front is handed out next: returned work, then longest first
  std::deque<Batch> shards_;       // a small stage's static shards, handed out after pending_
  bool small_stage_ = false;
  double pending_s_ = 0;
  size_t pending_tests_ = 0;
  std::map<std::string, Agent, std::less<>> agents_;
  double inflight_s_ = 0;           // sum of the agents' inflight_s
  double observed_wall_s_ = 0;       // work time reported by Completed (start-ups taken out)
  double observed_predicted_s_ = 0;  // what those batches were predicted to take
};

// Builds a DynamicStageQueue per stage.
class DynamicPlanner final : public Planner {
 public:
  explicit DynamicPlanner(DynamicOptions options = {}) : options_(options) {}
  std::unique_ptr<StageQueue> Plan(const PlanRequest& request) override {
    return std::make_unique<DynamicStageQueue>(request, options_);
  }

 private:
  DynamicOptions options_;
};

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_DYNAMIC_QUEUE_H_

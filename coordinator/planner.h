// The seam between the coordinator and shard planning. The coordinator asks a Planner for a StageQueue once a
// stage's tests are collected, then pulls batches from it as agents free up. A static plan is a queue of fixed
// shards; a dynamic plan sizes each batch when it is asked for.
#ifndef TESTSHARD_COORDINATOR_PLANNER_H_
#define TESTSHARD_COORDINATOR_PLANNER_H_

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace testshard::coordinator {

struct Batch {
  std::vector<std::string> test_ids;
  double predicted_s = 0;  // estimated run time of the tests themselves, without the per-batch start-up
};

// Not thread-safe: the coordinator calls it under its own lock.
class StageQueue {
 public:
  virtual ~StageQueue() = default;
  // The next batch for `agent_id`, which has just freed up; nullopt when nothing is left to hand out.
  virtual std::optional<Batch> Next(std::string_view agent_id) = 0;
  // Gives back tests whose lease was lost; they are handed out again before anything else.
  virtual void Return(std::vector<std::string> test_ids) = 0;
  // Tests not yet handed out.
  virtual size_t remaining() const = 0;
  // Feedback: `agent_id` finished a batch predicted at `predicted_s` (Batch::predicted_s) in `wall_s` seconds,
  // start-up included. Queues that size batches as they go use it to learn each agent's pace and how far off the
  // estimates are; fixed queues ignore it.
  virtual void Completed(std::string_view agent_id, double predicted_s, double wall_s) {}
};

// How finely a stage may be cut. Coarser units pay their class- or module-scoped fixtures once, but balance worse.
enum class Granularity { kTest, kClass, kModule };

// What the coordinator has measured about one agent.
struct AgentProfile {
  // Seconds each batch costs before its first test runs (interpreter start, imports, collection, connecting to
  // the database). Negative: unknown, use PlanRequest::default_startup_s.
  double startup_s = -1;
  // Relative pace: 2 runs tests twice as fast as the history says, 0.5 half as fast. 0: unknown.
  double speed = 0;
  // Seconds each test costs beyond its own duration (handing it to the runner, streaming its result back,
  // pytest's per-test hooks): what a batch of many tiny tests pays on top of its start-up. Negative: unknown
  // (the batches so far did not vary enough in size to tell it from the start-up).
  double per_test_s = -1;
};

struct PlanRequest {
  std::vector<std::string> test_ids;  // in collection order
  int agents = 1;
  // Predicted seconds for a test; may be null when there is no history (every test then counts the same).
  std::function<double(const std::string&)> estimate;
  Granularity granularity = Granularity::kTest;
  // Empty, or one key per entry of test_ids: tests that share a non-empty key are never split between batches
  // (an explicit group marker), whatever the granularity.
  std::vector<std::string> groups;
  // Per-batch start-up for agents without a measured one.
  double default_startup_s = 0;
  // Measured per agent id; agents not listed get the defaults.
  std::map<std::string, AgentProfile, std::less<>> agent_profiles;
};

class Planner {
 public:
  virtual ~Planner() = default;
  virtual std::unique_ptr<StageQueue> Plan(const PlanRequest& request) = 0;
};

// Splits the tests, in collection order, into `agents` contiguous shards of equal count (so a module's tests stay
// mostly together and pay for their module fixtures once). The first stand-in for the duration-based planner.
class EqualCountPlanner final : public Planner {
 public:
  std::unique_ptr<StageQueue> Plan(const PlanRequest& request) override;
};

// A queue of fixed shards handed out in order; returned tests come back as one shard at the front.
class FixedShardQueue final : public StageQueue {
 public:
  explicit FixedShardQueue(std::vector<Batch> shards);
  std::optional<Batch> Next(std::string_view agent_id) override;
  void Return(std::vector<std::string> test_ids) override;
  size_t remaining() const override;

 private:
  std::vector<Batch> shards_;  // back() is handed out next
};

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_PLANNER_H_

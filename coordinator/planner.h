// The seam between the coordinator and shard planning. The coordinator asks a Planner for a StageQueue once a
// stage's tests are collected, then pulls batches from it as agents free up. A static plan is a queue of fixed
// shards; a dynamic plan sizes each batch when it is asked for.
#ifndef TESTSHARD_COORDINATOR_PLANNER_H_
#define TESTSHARD_COORDINATOR_PLANNER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace testshard::coordinator {

struct Batch {
  std::vector<std::string> test_ids;
  double predicted_s = 0;
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
};

struct PlanRequest {
  std::vector<std::string> test_ids;  // in collection order
  int agents = 1;
  // Predicted seconds for a test; may be null when there is no history (every test then counts the same).
  std::function<double(const std::string&)> estimate;
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

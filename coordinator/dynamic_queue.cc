#include "coordinator/dynamic_queue.h"

#include <algorithm>
#include <utility>

namespace testshard::coordinator {

DynamicStageQueue::DynamicStageQueue(const PlanRequest& request, DynamicOptions options)
    : options_(options),
      planned_agents_(std::max(1, request.agents)),
      default_startup_s_(std::max(0.0, request.default_startup_s)),
      profiles_(request.agent_profiles),
      granularity_(request.granularity),
      estimate_(request.estimate),
      ids_(request.test_ids) {
  if (request.groups.size() == request.test_ids.size()) {
    for (size_t i = 0; i < request.groups.size(); ++i) {
      if (!request.groups[i].empty()) explicit_groups_.emplace(request.test_ids[i], request.groups[i]);
    }
  }
  std::vector<WorkUnit> units = BuildUnits(request, static_cast<size_t>(planned_agents_));
  for (WorkUnit& u : units) {
    pending_s_ += u.seconds;
    pending_tests_ += u.tests.size();
    pending_.push_back(std::move(u));
  }
}

DynamicStageQueue::Agent& DynamicStageQueue::AgentFor(std::string_view agent_id) {
  auto it = agents_.find(agent_id);
  if (it != agents_.end()) return it->second;
  Agent a;
  a.startup_s = default_startup_s_;
  a.rate = DefaultRate();
  if (auto p = profiles_.find(agent_id); p != profiles_.end()) {
    if (p->second.startup_s >= 0) a.startup_s = p->second.startup_s;
    if (p->second.speed > 0) {
      a.rate = 1 / p->second.speed;
      a.measured = true;
    }
  }
  return agents_.emplace(std::string(agent_id), a).first->second;
}

double DynamicStageQueue::DefaultRate() const {
  // Until an agent has reported, assume it runs at the pool's measured pace (which also absorbs a history that
  // is uniformly too optimistic or pessimistic).
  if (observed_predicted_s_ > 0 && observed_wall_s_ > 0) return observed_wall_s_ / observed_predicted_s_;
  return 1;
}

double DynamicStageQueue::Capacity() const {
  const double default_rate = DefaultRate();
  const size_t pool = std::max<size_t>(static_cast<size_t>(planned_agents_), agents_.size());
  double capacity = 0;
  for (const auto& [id, a] : agents_) capacity += 1 / a.rate;
  capacity += static_cast<double>(pool - agents_.size()) / default_rate;
  return capacity;
}

std::optional<Batch> DynamicStageQueue::Next(std::string_view agent_id) {
  if (pending_.empty()) return std::nullopt;
  Agent& agent = AgentFor(agent_id);
  // Wall seconds the pool needs for what is left, were it shared perfectly; this agent takes a fraction of its
  // share, but never so little that the start-up dominates.
  const double time_left = pending_s_ / Capacity();
  const double fraction = agent.measured ? options_.measured_fraction : options_.fraction;
  const double floor_s = std::max(options_.min_batch_s, options_.min_batch_startups * agent.startup_s);
  const double budget = std::max(fraction * time_left, floor_s) / agent.rate;  // in predicted seconds

  Batch batch;
  std::vector<uint32_t> tests;
  // Longest first; a unit goes in while at least half of it fits, so batches land near the budget on average
  // instead of always under it.
  while (!pending_.empty()) {
    WorkUnit& u = pending_.front();
    if (!tests.empty() && batch.predicted_s + u.seconds / 2 > budget) break;
    batch.predicted_s += u.seconds;
    pending_s_ -= u.seconds;
    pending_tests_ -= u.tests.size();
    tests.insert(tests.end(), u.tests.begin(), u.tests.end());
    pending_.pop_front();
  }
  if (pending_.empty()) pending_s_ = 0;  // no drift from float subtraction
  batch.test_ids.reserve(tests.size());
  for (uint32_t t : tests) batch.test_ids.push_back(ids_[t]);
  return batch;
}

void DynamicStageQueue::PushFront(std::vector<WorkUnit> units) {
  std::sort(units.begin(), units.end(), [](const WorkUnit& a, const WorkUnit& b) {
    return a.seconds != b.seconds ? a.seconds > b.seconds : a.key < b.key;
  });
  for (auto it = units.rbegin(); it != units.rend(); ++it) {
    pending_s_ += it->seconds;
    pending_tests_ += it->tests.size();
    pending_.push_front(std::move(*it));
  }
}

void DynamicStageQueue::Return(std::vector<std::string> test_ids) {
  if (test_ids.empty()) return;
  // Regrouped as they were planned, so a returned module or explicit group still goes out whole.
  std::map<std::string, size_t> by_key;
  std::vector<WorkUnit> units;
  for (std::string& id : test_ids) {
    auto g = explicit_groups_.find(id);
    std::string key = g != explicit_groups_.end() ? "group:" + g->second : std::string(GroupKey(id, granularity_));
    const double s = std::max(kMinTestSeconds, estimate_ ? estimate_(id) : 1.0);
    auto [it, inserted] = by_key.emplace(key, units.size());
    if (inserted) units.push_back(WorkUnit{key, {}, 0, g != explicit_groups_.end()});
    WorkUnit& u = units[it->second];
    u.tests.push_back(static_cast<uint32_t>(ids_.size()));
    u.seconds += s;
    ids_.push_back(std::move(id));
  }
  PushFront(std::move(units));
}

void DynamicStageQueue::Completed(std::string_view agent_id, double predicted_s, double wall_s) {
  Agent& agent = AgentFor(agent_id);
  const double work_s = wall_s - agent.startup_s;
  if (!(predicted_s > 0) || !(work_s > 0)) return;
  const double rate = work_s / predicted_s;
  // The newest batch weighs half: an agent that slows down (a noisy neighbour) is noticed within a batch or two.
  agent.rate = agent.measured ? 0.5 * agent.rate + 0.5 * rate : rate;
  agent.measured = true;
  observed_wall_s_ += work_s;
  observed_predicted_s_ += predicted_s;
}

}  // namespace testshard::coordinator

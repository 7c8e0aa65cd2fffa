#include "coordinator/dynamic_queue.h"

#include "coordinator/lpt_planner.h"

#include <algorithm>
#include <cmath>
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
  double total = 0;
  for (const WorkUnit& u : units) total += u.seconds;
  const double span = units.empty() ? 0 : std::max(total / planned_agents_, units.front().seconds);
  small_stage_ = span < options_.whole_share_below_startups * default_startup_s_;
  if (small_stage_) {
    // Each agent's share costs only a few start-ups: splitting it would cost more than it saves, so this is the
    // static plan, one shard per agent, handed out as agents ask.
    std::vector<std::vector<size_t>> bins = PartitionUnits(units, planned_agents_);
    std::vector<Batch> shards;
    for (const std::vector<size_t>& bin : bins) {
      if (bin.empty()) continue;
      Batch b;
      for (size_t u : bin) {
        b.predicted_s += units[u].seconds;
        for (uint32_t t : units[u].tests) b.test_ids.push_back(ids_[t]);
      }
      pending_tests_ += b.test_ids.size();
      shards.push_back(std::move(b));
    }
    std::stable_sort(shards.begin(), shards.end(),
                     [](const Batch& a, const Batch& b) { return a.predicted_s > b.predicted_s; });
    shards_.assign(std::make_move_iterator(shards.begin()), std::make_move_iterator(shards.end()));
    return;
  }
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

double DynamicStageQueue::BestRate() const {
  double best = 0;
  for (const auto& [id, a] : agents_) {
    if (a.measured && (best == 0 || a.rate < best)) best = a.rate;
  }
  // Agents the coordinator has measured before count even before they first ask.
  for (const auto& [id, p] : profiles_) {
    if (p.speed > 0 && (best == 0 || 1 / p.speed < best)) best = 1 / p.speed;
  }
  return best > 0 ? best : DefaultRate();
}

std::optional<Batch> DynamicStageQueue::Next(std::string_view agent_id) {
  if (pending_.empty()) {
    if (shards_.empty()) return std::nullopt;
    Batch batch = std::move(shards_.front());
    shards_.pop_front();
    pending_tests_ -= batch.test_ids.size();
    return batch;
  }
  Agent& agent = AgentFor(agent_id);
  // An agent asks when it is (nearly) free: whatever it had no longer counts as work in flight. Its records stay
  // until Completed reports them, which may come after this call.
  for (Running& r : agent.running) {
    if (r.counted) inflight_s_ = std::max(0.0, inflight_s_ - r.predicted_s);
    r.counted = false;
  }
  // Wall seconds the pool needs for what is left, were it shared perfectly: what is pending, plus (on average)
  // half of what the other agents are still running. This agent takes a fraction of its share, but never so little
  // that the start-up dominates.
  const double time_left = (pending_s_ + options_.inflight_weight * inflight_s_) / Capacity();
  const double floor_s = std::max(options_.min_batch_s, options_.min_batch_startups * agent.startup_s);
  const bool small_stage = small_stage_;
  double fraction = agent.measured ? options_.measured_fraction : options_.fraction;
  if (small_stage) fraction = 1;
  double batch_s = std::max(fraction * time_left, floor_s);

  // Skip the long units unless this agent is trusted with them; the pending list is longest first, so they are a
  // prefix (returned work, put in front, is the exception and is not skipped past twice).
  size_t start = 0;
  const bool trusted = agent.measured && agent.rate <= options_.trusted_rate_margin * BestRate();
  if (!trusted && !small_stage) {
    const double long_s = options_.long_unit_share * time_left / DefaultRate();  // in predicted seconds
    while (start < pending_.size() && pending_[start].seconds >= long_s) ++start;
    if (start == pending_.size()) {
      start = 0;  // only long work is left: somebody has to run it
    } else if (start > 0 && !agent.measured) {
      return Probe(agent, floor_s / agent.rate);
    }
  }
  const double budget = batch_s / agent.rate;  // in predicted seconds
  const double floor_budget = floor_s / agent.rate;
  // Once the agent's pace is known, what is left to fear is the estimates themselves: a batch of many small tests
  // is predictable (their errors average out), one of a few large tests is not. So the batch keeps a reserve of
  // margin_sigmas standard deviations of its own predicted error, sqrt(sum of squares) * estimate_cv, for the
  // rest of the pool to absorb.
  const bool reserve = agent.measured && !small_stage && options_.estimate_cv > 0;
  const double cv2 = options_.estimate_cv * options_.estimate_cv;

  Batch batch;
  std::vector<uint32_t> tests;
  double sum_sq = 0;
  // A unit goes in while at least half of it fits, so batches land near the budget on average instead of always
  // under it.
  size_t end = start;
  while (end < pending_.size()) {
    const WorkUnit& u = pending_[end];
    if (end > start) {
      // The batch's predicted error: its tests' own, plus what is still unknown about this agent's pace.
      const double total = batch.predicted_s + u.seconds;
      const double margin =
          reserve ? options_.margin_sigmas *
                        std::sqrt(cv2 * (sum_sq + u.seconds * u.seconds) + agent.rate_variance * total * total)
                  : 0;
      // An agent of unknown pace gets no overshoot: its first batch must end in time even if it is slow.
      const double overshoot = agent.measured ? u.seconds / 2 : u.seconds;
      if (batch.predicted_s + overshoot > std::max(budget - margin, floor_budget)) break;
    }
    sum_sq += u.seconds * u.seconds;
    batch.predicted_s += u.seconds;
    pending_s_ -= u.seconds;
    pending_tests_ -= u.tests.size();
    tests.insert(tests.end(), u.tests.begin(), u.tests.end());
    ++end;
  }
  pending_.erase(pending_.begin() + static_cast<ptrdiff_t>(start), pending_.begin() + static_cast<ptrdiff_t>(end));
  if (pending_.empty()) pending_s_ = 0;  // no drift from float subtraction
  batch.test_ids.reserve(tests.size());
  for (uint32_t t : tests) batch.test_ids.push_back(ids_[t]);
  Hand(agent, batch, sum_sq);
  return batch;
}

void DynamicStageQueue::Hand(Agent& agent, const Batch& batch, double sum_sq) {
  // Batches whose report never comes (their lease was lost) must not pile up.
  constexpr size_t kMaxRunning = 4;
  while (agent.running.size() >= kMaxRunning) {
    if (agent.running.front().counted) inflight_s_ = std::max(0.0, inflight_s_ - agent.running.front().predicted_s);
    agent.running.pop_front();
  }
  agent.running.push_back(Running{batch.predicted_s, sum_sq, true});
  inflight_s_ += batch.predicted_s;
}

Batch DynamicStageQueue::Probe(Agent& agent, double budget) {
  // The smallest units: many of them, so the pace they show is trustworthy, and none that the end of the stage
  // will miss (there are plenty of small ones, and the long units are not delayed by more than the probe).
  Batch batch;
  double sum_sq = 0;
  std::vector<uint32_t> tests;
  while (!pending_.empty() && (tests.empty() || batch.predicted_s + pending_.back().seconds <= budget)) {
    WorkUnit& u = pending_.back();
    batch.predicted_s += u.seconds;
    sum_sq += u.seconds * u.seconds;
    pending_s_ -= u.seconds;
    pending_tests_ -= u.tests.size();
    tests.insert(tests.end(), u.tests.begin(), u.tests.end());
    pending_.pop_back();
  }
  if (pending_.empty()) pending_s_ = 0;
  batch.test_ids.reserve(tests.size());
  for (uint32_t t : tests) batch.test_ids.push_back(ids_[t]);
  Hand(agent, batch, sum_sq);
  return batch;
}

void DynamicStageQueue::PushFront(std::vector<WorkUnit> units) {
  std::sort(units.begin(), units.end(),
            [this](const WorkUnit& a, const WorkUnit& b) { return LongerFirst(a, b, ids_); });
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
    if (inserted) {
      units.emplace_back();
      if (key != id) units.back().key = key;
      units.back().pinned = g != explicit_groups_.end();
    }
    WorkUnit& u = units[it->second];
    u.tests.push_back(static_cast<uint32_t>(ids_.size()));
    u.seconds += s;
    ids_.push_back(std::move(id));
  }
  // Work that was lost with its lease is pending again, not running: it must not count twice. Which agent lost it
  // is not known here; that agent's own account is settled (never below zero) when it asks or reports again.
  double returned_s = 0;
  for (const WorkUnit& u : units) returned_s += u.seconds;
  inflight_s_ = std::max(0.0, inflight_s_ - returned_s);
  PushFront(std::move(units));
}

void DynamicStageQueue::Completed(std::string_view agent_id, double predicted_s, double wall_s) {
  Agent& agent = AgentFor(agent_id);
  // The batch reported: the one handed out with this prediction (the caller passes Batch::predicted_s back), else
  // the oldest.
  double sum_sq = 0;
  if (!agent.running.empty()) {
    auto it = std::find_if(agent.running.begin(), agent.running.end(),
                           [&](const Running& r) { return r.predicted_s == predicted_s; });
    if (it == agent.running.end()) it = agent.running.begin();
    if (it->counted) inflight_s_ = std::max(0.0, inflight_s_ - it->predicted_s);
    sum_sq = it->sum_sq;
    agent.running.erase(it);
  }
  const double work_s = wall_s - agent.startup_s;
  if (!(predicted_s > 0) || !(work_s > 0)) return;
  observed_wall_s_ += work_s;
  observed_predicted_s_ += predicted_s;
  // The agent's pace: the pool's, updated by each batch in proportion to how much that batch can tell. A batch of
  // a few large tests says little (each estimate is off by tens of percent, and a few do not average out), so one
  // lucky batch must not make an agent look fast and earn it a batch it cannot finish in time; a batch of many
  // tests says a lot, so a slow agent is recognised after one.
  if (!(sum_sq > 0)) sum_sq = predicted_s * predicted_s;
  const double cv = std::max(options_.estimate_cv, 0.05);
  const double variance = std::max(cv * cv * sum_sq / (predicted_s * predicted_s), 1e-4);
  agent.evidence += 1 / variance;
  agent.weighted_rates += (work_s / predicted_s) / variance;
  const double prior = 1 / (options_.speed_spread * options_.speed_spread);
  agent.rate = (prior * DefaultRate() + agent.weighted_rates) / (prior + agent.evidence);
  agent.rate_variance = 1 / (prior + agent.evidence);
  agent.measured = true;
}

}  // namespace testshard::coordinator

#include "coordinator/run_state.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "coordinator/work_units.h"

namespace testshard::coordinator {
namespace {

bool Terminal(StageStatus s) {
  return s == StageStatus::kPassed || s == StageStatus::kFailed || s == StageStatus::kSkipped ||
         s == StageStatus::kCancelled;
}

bool IsFailure(Outcome o) { return o == Outcome::kFailed || o == Outcome::kError; }

TestCase Synthetic(const std::string& id, Outcome outcome, const std::string& message, const std::string& details) {
  TestCase tc;
  tc.id = id;
  tc.result.outcome = outcome;
  tc.result.message = message;
  tc.result.details = details;
  if (outcome == Outcome::kError) tc.result.type = "testshard.NoResult";
  return tc;
}

}  // namespace

std::string_view StageStatusName(StageStatus s) {
  switch (s) {
    case StageStatus::kPending: return "pending";
    case StageStatus::kDiscovering: return "collecting";
    case StageStatus::kRunning: return "running";
    case StageStatus::kPassed: return "passed";
    case StageStatus::kFailed: return "failed";
    case StageStatus::kSkipped: return "skipped";
    case StageStatus::kCancelled: return "cancelled";
  }
  return "unknown";
}

RunState::RunState(RunOptions options, std::unique_ptr<Planner> planner, Clock* clock)
    : options_(std::move(options)), clock_(clock), planner_(std::move(planner)) {
  for (const StageConfig& c : options_.stages) {
    Stage s;
    s.config = c;
    stages_.push_back(std::move(s));
  }
}

absl::Status RunState::Restore(const std::vector<JournalEvent>& events) {
  absl::MutexLock l(&mu_);
  restoring_ = true;
  for (const JournalEvent& e : events) {
    Stage* s = StageByName(e.stage);
    if (!s) {
      restoring_ = false;
      return absl::FailedPreconditionError(
          absl::StrCat("the journal has stage '", e.stage, "', which the config does not: is this the same run?"));
    }
    switch (e.kind) {
      case JournalEvent::kCollected:
        for (size_t i = 0; i < e.ids.size(); ++i) {
          const std::string& id = e.ids[i];
          if (s->collected.insert(id).second) s->order.push_back(id);
          if (e.groups.size() == e.ids.size() && !e.groups[i].empty()) s->groups[id] = e.groups[i];
        }
        s->status = StageStatus::kRunning;
        break;
      case JournalEvent::kAttempt:
        if (e.final) {
          Finalize(*s, e.result);
        } else {
          Record(*s, e.agent, e.result);
        }
        break;
      case JournalEvent::kStageEnd:
        s->status = static_cast<StageStatus>(e.status);
        s->note = e.note;
        break;
    }
  }
  // Stages that were running get a fresh plan of what has no result yet (pending retries included: their earlier
  // attempts are kept, so the retry count carries on).
  for (Stage& s : stages_) {
    if (s.status != StageStatus::kRunning) continue;
    s.started = clock_->Now();
    s.retries.clear();
    std::vector<std::string> ids;
    for (const std::string& id : s.order) {
      if (!s.results.count(id)) ids.push_back(id);
    }
    PlanStage(s, std::move(ids));
  }
  restoring_ = false;
  return absl::OkStatus();
}

std::string RunState::RegisterAgent(const std::string& name) {
  absl::MutexLock l(&mu_);
  // Ids never repeat across a restart: an agent still holding an id from before must not pass for a new one.
  std::string id = options_.generation ? absl::StrCat("agent-", options_.generation, "-", ++next_agent_)
                                       : absl::StrCat("agent-", ++next_agent_);
  agents_[id].name = name;
  Seen(id);
  return id;
}

bool RunState::KnownAgent(const std::string& agent_id) const {
  absl::MutexLock l(&mu_);
  return agents_.count(agent_id) > 0;
}

RunState::Stage* RunState::CurrentStage() {
  std::string blocked_by;
  for (Stage& s : stages_) {
    if (Terminal(s.status)) {
      if (s.status == StageStatus::kFailed && !s.config.continue_on_failure && blocked_by.empty()) {
        blocked_by = s.config.name;
      }
      continue;
    }
    if (s.status == StageStatus::kPending) {
      if (cancelled_) {
        s.status = StageStatus::kCancelled;
        continue;
      }
      if (!blocked_by.empty()) {
        s.status = StageStatus::kSkipped;
        s.note = absl::StrCat("stage '", blocked_by, "' failed");
        continue;
      }
      const auto& b = s.config.branches;
      if (!b.empty() && std::find(b.begin(), b.end(), options_.branch) == b.end()) {
        s.status = StageStatus::kSkipped;
        s.note = absl::StrCat("runs only on branch ", absl::StrJoin(b, ", "), "; this is '", options_.branch, "'");
        continue;
      }
    }
    return &s;
  }
  return nullptr;
}

RunState::Stage* RunState::StageByName(const std::string& name) {
  for (Stage& s : stages_) {
    if (s.config.name == name) return &s;
  }
  return nullptr;
}

LeaseInfo RunState::NewLease(const std::string& agent_id, Stage& stage, LeaseKind kind) {
  LeaseInfo info;
  info.id = options_.generation ? absl::StrCat("lease-", options_.generation, "-", ++next_lease_)
                                 : absl::StrCat("lease-", ++next_lease_);
  info.kind = kind;
  info.agent_id = agent_id;
  info.stage = stage.config.name;
  info.markers = stage.config.markers;
  info.deadline = clock_->Now() + options_.lease_ttl;
  info.timeout = stage.config.timeout;
  info.test_timeout = stage.config.test_timeout;
  info.maxfail = stage.config.maxfail;
  if (kind == LeaseKind::kDiscover) info.group_marker = stage.config.group_marker;
  return info;
}

double RunState::EstimateOf(const std::string& id) const {
  return options_.estimator ? options_.estimator->Seconds(id) : 1.0;
}

void RunState::PlanStage(Stage& stage, std::vector<std::string> ids) {
  stage.granularity = ParseGranularity(stage.config.granularity).value_or(Granularity::kTest);
  PlanRequest req;
  // Agents that registered count even before they ask; so does the number the run was started for.
  req.agents = std::max<int>(std::max(1, options_.expected_agents), static_cast<int>(agents_.size()));
  std::shared_ptr<const DurationEstimator> estimator = options_.estimator;
  if (estimator) req.estimate = [estimator](const std::string& id) { return estimator->Seconds(id); };
  req.granularity = stage.granularity;
  if (!stage.groups.empty()) {
    req.groups.reserve(ids.size());
    for (const std::string& id : ids) {
      auto g = stage.groups.find(id);
      req.groups.push_back(g != stage.groups.end() ? g->second : std::string());
    }
  }
  const bool warm = Warm(stage);
  req.default_startup_s = warm ? options_.warm_startup_s : options_.process_startup_s;
  req.agent_profiles = ProfilesLocked(warm);
  // Each test also costs its dispatch and bookkeeping, which its recorded duration leaves out: with the pool's
  // measured per-test cost in every estimate, a module of 500 tiny tests weighs what it will take.
  double per_test_s = 0;
  int measured = 0;
  for (const auto& [id, p] : req.agent_profiles) {
    if (p.per_test_s >= 0) {
      per_test_s += p.per_test_s;
      ++measured;
    }
  }
  if (measured > 0) per_test_s /= measured;
  if (estimator && per_test_s > 0) {
    req.estimate = [estimator, per_test_s](const std::string& id) { return estimator->Seconds(id) + per_test_s; };
  }
  stage.planned = static_cast<int>(ids.size());
  stage.known = 0;
  stage.remaining_s = 0;
  for (const std::string& id : ids) {
    if (estimator) {
      Estimate e = estimator->Get(id);
      stage.remaining_s += e.seconds;
      stage.known += e.source == EstimateSource::kHistory;
    } else {
      stage.remaining_s += 1.0;
    }
  }
  req.test_ids = std::move(ids);
  stage.queue = planner_->Plan(req);
}

bool RunState::ActiveLeases(const Stage& stage) const {
  for (const auto& [id, lease] : leases_) {
    if (lease.info.stage == stage.config.name && (lease.state == Lease::kActive || lease.state == Lease::kCancelled)) {
      return true;
    }
  }
  return false;
}

Work RunState::NextWork(const std::string& agent_id) {
  absl::MutexLock l(&mu_);
  Seen(agent_id);
  ExpireLocked();
  Work w;
  w.retry_after = options_.wait_hint;
  if (auto a = agents_.find(agent_id); a != agents_.end() && !a->second.drained.empty()) {
    w.kind = Work::kDone;
    w.reason = "drained: " + a->second.drained;
    dismissed_.insert(agent_id);
    return w;
  }
  while (true) {
    Stage* s = CurrentStage();
    if (!s) {
      w.kind = Work::kDone;
      w.reason = cancelled_ ? "run cancelled" : "all stages finished";
      dismissed_.insert(agent_id);
      return w;
    }
    switch (s->status) {
      case StageStatus::kPending:
        s->status = StageStatus::kDiscovering;
        s->started = clock_->Now();
        [[fallthrough]];
      case StageStatus::kDiscovering: {
        // One agent collects; the others wait for the plan.
        for (const auto& [id, lease] : leases_) {
          if (lease.info.stage == s->config.name && lease.info.kind == LeaseKind::kDiscover &&
              lease.state == Lease::kActive) {
            w.kind = Work::kWait;
            return w;
          }
        }
        w.kind = Work::kLease;
        w.lease = NewLease(agent_id, *s, LeaseKind::kDiscover);
        leases_[w.lease.id].info = w.lease;
        return w;
      }
      case StageStatus::kRunning: {
        std::optional<Batch> batch;
        bool from_queue = false;
        if (!s->cancelling) batch = NextRetries(*s, agent_id);
        if (!s->cancelling && !batch) {
          batch = s->queue->Next(agent_id);
          from_queue = batch.has_value();
        }
        if (batch) {
          w.kind = Work::kLease;
          w.lease = NewLease(agent_id, *s, LeaseKind::kRun);
          w.lease.test_ids = std::move(batch->test_ids);
          w.lease.predicted_s = batch->predicted_s;
          Lease& lease = leases_[w.lease.id];
          lease.info = w.lease;
          lease.from_queue = from_queue;
          return w;
        }
        MaybeFinishStage(*s);
        if (!Terminal(s->status)) {
          w.kind = Work::kWait;
          return w;
        }
        continue;  // the stage just ended; look at the next one
      }
      default:
        continue;
    }
  }
}

std::vector<LeaseUpdate> RunState::Heartbeat(const std::string& agent_id, const std::vector<std::string>& lease_ids) {
  absl::MutexLock l(&mu_);
  Seen(agent_id);
  ExpireLocked();
  std::vector<LeaseUpdate> out;
  for (const std::string& id : lease_ids) {
    LeaseUpdate u;
    u.lease_id = id;
    auto it = leases_.find(id);
    if (it == leases_.end() || it->second.info.agent_id != agent_id) {
      u.cancelled = true;
      u.reason = "unknown lease";
    } else if (it->second.state == Lease::kActive || it->second.state == Lease::kCancelled) {
      it->second.info.deadline = clock_->Now() + options_.lease_ttl;
      u.deadline = it->second.info.deadline;
      u.cancelled = it->second.state == Lease::kCancelled;
      u.reason = it->second.cancel_reason;
    } else {
      u.cancelled = true;
      u.reason = it->second.state == Lease::kExpired ? "lease expired and was handed to another agent"
                                                     : "lease already completed";
    }
    out.push_back(std::move(u));
  }
  return out;
}

RunState::Lease* RunState::FindLease(const std::string& agent_id, const std::string& lease_id, absl::Status* why) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    *why = absl::FailedPreconditionError(absl::StrCat("unknown lease ", lease_id));
    return nullptr;
  }
  Lease& lease = it->second;
  if (lease.info.agent_id != agent_id) {
    *why = absl::FailedPreconditionError(absl::StrCat("lease ", lease_id, " is not held by ", agent_id));
    return nullptr;
  }
  if (lease.state == Lease::kExpired) {
    *why = absl::FailedPreconditionError(
        absl::StrCat("lease ", lease_id, " expired; its tests were handed to another agent"));
    return nullptr;
  }
  if (lease.state == Lease::kCompleted) {
    *why = absl::FailedPreconditionError(absl::StrCat("lease ", lease_id, " is already completed"));
    return nullptr;
  }
  return &lease;
}

absl::Status RunState::CheckLease(const std::string& agent_id, const std::string& lease_id) {
  absl::MutexLock l(&mu_);
  absl::Status why;
  ExpireLocked();
  if (!FindLease(agent_id, lease_id, &why)) return why;
  return absl::OkStatus();
}

std::optional<Batch> RunState::NextRetries(Stage& stage, const std::string& agent_id) {
  // A retry goes to another agent, so a flaky test is told apart from a broken agent or database; it comes back
  // to the same agent only when no other one is there to take it.
  const absl::Time now = clock_->Now();
  int live_agents = 0;
  for (const auto& [id, a] : agents_) live_agents += a.drained.empty() && !dismissed_.count(id);
  Batch b;
  std::vector<Stage::Retry> keep;
  for (Stage::Retry& r : stage.retries) {
    bool elsewhere = r.failed_on != agent_id;
    bool nobody_else = live_agents <= 1 || now - r.since > absl::Seconds(5);
    if (elsewhere || nobody_else) {
      b.test_ids.push_back(r.id);
    } else {
      keep.push_back(std::move(r));
    }
  }
  stage.retries = std::move(keep);
  if (b.test_ids.empty()) return std::nullopt;
  return b;
}

void RunState::MaybeDrain(const std::string& agent_id) {
  // An agent whose tests fail far more often than everyone else's is more likely broken than the tests are.
  auto it = agents_.find(agent_id);
  if (it == agents_.end() || !it->second.drained.empty() || it->second.results < 20) return;
  int other_results = 0, other_failures = 0;
  for (const auto& [id, a] : agents_) {
    if (id == agent_id) continue;
    other_results += a.results;
    other_failures += a.failures;
  }
  if (other_results < 20) return;
  double mine = static_cast<double>(it->second.failures) / it->second.results;
  double theirs = static_cast<double>(other_failures) / other_results;
  if (mine >= 0.5 && mine > 5 * theirs) {
    it->second.drained = absl::StrFormat("%d of its %d tests failed, against %.0f%% on the other agents",
                                         it->second.failures, it->second.results, 100 * theirs);
  }
}

void RunState::Journal(JournalEvent e) {
  if (options_.journal && !restoring_) options_.journal->Append(e);
}

void RunState::Finalize(Stage& stage, TestCase tc) {
  if (stage.results.count(tc.id)) return;
  JournalEvent e;
  e.kind = JournalEvent::kAttempt;
  e.stage = stage.config.name;
  e.result = tc;
  e.final = true;
  Journal(std::move(e));
  stage.remaining_s = std::max(0.0, stage.remaining_s - EstimateOf(tc.id));
  stage.results.emplace(tc.id, std::move(tc));
}

void RunState::EndStage(Stage& stage, StageStatus status) {
  stage.status = status;
  stage.finished = clock_->Now();
  JournalEvent e;
  e.kind = JournalEvent::kStageEnd;
  e.stage = stage.config.name;
  e.status = static_cast<int>(status);
  e.note = stage.note;
  Journal(std::move(e));
  CurrentStage();  // marks the stages this one's end rules out (skipped) at once, so done() is current
}

void RunState::Record(Stage& stage, const std::string& agent_id, TestCase tc) {
  if (stage.results.count(tc.id)) return;  // already known; never counted twice
  JournalEvent e;
  e.kind = JournalEvent::kAttempt;
  e.stage = stage.config.name;
  e.result = tc;
  e.agent = agent_id;
  Journal(std::move(e));
  if (!agent_id.empty() && agents_.count(agent_id)) {
    AgentStats& agent = agents_[agent_id];
    ++agent.results;
    if (IsFailure(tc.result.outcome)) {
      ++agent.failures;
      MaybeDrain(agent_id);
    }
  }
  std::vector<TestAttempt>& earlier = stage.attempts[tc.id];
  if (IsFailure(tc.result.outcome) && static_cast<int>(earlier.size()) < stage.config.retries && !stage.cancelling) {
    earlier.push_back(tc.result);
    stage.retries.push_back({tc.id, agent_id, clock_->Now()});
    return;
  }
  tc.reruns = std::move(earlier);
  stage.attempts.erase(tc.id);
  stage.remaining_s = std::max(0.0, stage.remaining_s - EstimateOf(tc.id));
  auto [it, inserted] = stage.results.emplace(tc.id, std::move(tc));
  if (IsFailure(it->second.result.outcome)) {
    ++stage.failures;
    if (stage.config.maxfail > 0 && stage.failures >= stage.config.maxfail && !stage.cancelling) {
      CancelStage(stage, absl::StrCat("maxfail (", stage.config.maxfail, ") reached in stage ", stage.config.name));
    }
  }
}

absl::Status RunState::ReportResults(const std::string& agent_id, const std::string& lease_id,
                                     const std::vector<TestCase>& results, std::string* cancel_reason) {
  absl::MutexLock l(&mu_);
  ExpireLocked();
  absl::Status why;
  Lease* lease = FindLease(agent_id, lease_id, &why);
  if (!lease) return why;
  Stage* stage = StageByName(lease->info.stage);
  if (lease->info.kind != LeaseKind::kRun || !stage) {
    return absl::InvalidArgumentError(absl::StrCat("lease ", lease_id, " does not run tests"));
  }
  const auto& ids = lease->info.test_ids;
  for (const TestCase& tc : results) {
    if (std::find(ids.begin(), ids.end(), tc.id) == ids.end()) {
      return absl::InvalidArgumentError(absl::StrCat("test '", tc.id, "' is not part of lease ", lease_id));
    }
  }
  for (const TestCase& tc : results) {
    if (!lease->reported.insert(tc.id).second) continue;
    if (tc.result.outcome != Outcome::kNotRun && tc.result.time_s >= 0) {
      // What the test took against its prediction: the stage's pace (for its ETA) and the agent's (for plans).
      const double actual = tc.result.time_s;
      lease->actual_s += actual;
      if (options_.estimator) {
        Estimate e = options_.estimator->Get(tc.id);
        stage->reported_predicted_s += e.seconds;
        if (e.source == EstimateSource::kHistory) {
          lease->known_predicted_s += e.seconds;
          lease->known_actual_s += actual;
        }
      } else {
        stage->reported_predicted_s += 1.0;
      }
      stage->reported_actual_s += actual;
    }
    Record(*stage, lease->info.agent_id, tc);
  }
  if (cancel_reason && lease->state == Lease::kCancelled) {
    *cancel_reason = lease->cancel_reason.empty() ? "cancelled" : lease->cancel_reason;
  }
  return absl::OkStatus();
}

absl::Status RunState::CompleteLease(const std::string& agent_id, const std::string& lease_id,
                                     const Completion& c) {
  absl::MutexLock l(&mu_);
  ExpireLocked();
  absl::Status why;
  Lease* lease = FindLease(agent_id, lease_id, &why);
  if (!lease) return why;
  Stage* stage = StageByName(lease->info.stage);
  if (!stage) return absl::InternalError("lease for an unknown stage");
  const bool was_cancelled = lease->state == Lease::kCancelled;
  lease->state = Lease::kCompleted;

  if (lease->info.kind == LeaseKind::kDiscover) {
    if (stage->status != StageStatus::kDiscovering) return absl::OkStatus();
    if (was_cancelled || cancelled_) {
      stage->note = lease->cancel_reason;
      EndStage(*stage, StageStatus::kCancelled);
    } else if (c.status != Completion::kOk) {
      stage->note = c.status == Completion::kCollectionError ? "collection failed" : "could not collect";
      std::string details = c.error.empty() ? c.stderr_tail : c.error;
      TestCase tc = Synthetic(stage->config.name + "::collection", Outcome::kError, stage->note, details);
      stage->order.push_back(tc.id);
      JournalEvent collected;
      collected.kind = JournalEvent::kCollected;
      collected.stage = stage->config.name;
      collected.ids = {tc.id};
      Journal(std::move(collected));
      Finalize(*stage, std::move(tc));
      EndStage(*stage, StageStatus::kFailed);
    } else {
      // Group keys only count for the stage's own marker, and only when the agent could tell every test's.
      const bool grouped = !stage->config.group_marker.empty() && c.groups.size() == c.collected.size();
      for (size_t i = 0; i < c.collected.size(); ++i) {
        const std::string& id = c.collected[i];
        if (!stage->collected.insert(id).second) continue;
        stage->order.push_back(id);
        if (grouped && !c.groups[i].empty()) stage->groups[id] = c.groups[i];
      }
      JournalEvent collected;
      collected.kind = JournalEvent::kCollected;
      collected.stage = stage->config.name;
      collected.ids = stage->order;
      if (!stage->groups.empty()) {
        for (const std::string& id : stage->order) {
          auto g = stage->groups.find(id);
          collected.groups.push_back(g != stage->groups.end() ? g->second : std::string());
        }
      }
      Journal(std::move(collected));
      PlanStage(*stage, stage->order);
      stage->status = StageStatus::kRunning;
      MaybeFinishStage(*stage);  // an empty selection passes at once
    }
    return absl::OkStatus();
  }

  if (c.status == Completion::kOk && !was_cancelled) LearnFromLease(*stage, *lease, c);
  // Tests the agent never started go back to the queue, unless the stage is being cancelled.
  std::set<std::string> requeue;
  if (!was_cancelled && !stage->cancelling && c.status != Completion::kCancelled) {
    for (const std::string& id : c.unattempted) {
      if (!lease->reported.count(id) && !stage->results.count(id)) requeue.insert(id);
    }
    std::vector<std::string> back;
    for (const std::string& id : lease->info.test_ids) {
      if (requeue.count(id)) back.push_back(id);
    }
    if (!back.empty() && stage->queue) stage->queue->Return(std::move(back));
  }
  // Whatever else the lease holds without a result: the agent's reason for stopping becomes theirs.
  std::string reason = c.error.empty() ? "the agent reported no result" : c.error;
  for (const std::string& id : lease->info.test_ids) {
    if (lease->reported.count(id) || stage->results.count(id) || requeue.count(id)) continue;
    lease->reported.insert(id);
    if (was_cancelled || c.status == Completion::kCancelled) {
      Finalize(*stage, Synthetic(id, Outcome::kNotRun, lease->cancel_reason.empty() ? "cancelled" : lease->cancel_reason, ""));
    } else {
      Record(*stage, lease->info.agent_id, Synthetic(id, Outcome::kError, reason, c.stderr_tail));
    }
  }
  MaybeFinishStage(*stage);
  return absl::OkStatus();
}

void RunState::LearnFromLease(Stage& stage, const Lease& lease, const Completion& c) {
  if (lease.info.kind != LeaseKind::kRun || !(c.wall_s > 0)) return;
  // A worker started for this lease is paid once, not by every batch: it is neither the batch's start-up nor its
  // pace.
  const double batch_wall_s = c.wall_s - std::clamp(c.worker_start_s, 0.0, c.wall_s);
  if (lease.from_queue && stage.queue) {
    stage.queue->Completed(lease.info.agent_id, lease.info.predicted_s, batch_wall_s);
  }
  auto agent = agents_.find(lease.info.agent_id);
  if (agent == agents_.end() || lease.reported.empty()) return;
  Pace& pace = Warm(stage) ? agent->second.warm : agent->second.process;
  pace.Add(static_cast<double>(lease.reported.size()), std::max(0.0, batch_wall_s - lease.actual_s));
  agent->second.known_predicted_s += lease.known_predicted_s;
  agent->second.known_actual_s += lease.known_actual_s;
}

void RunState::Pace::Add(double n, double y) {
  ++batches;
  sum_n += n;
  sum_nn += n * n;
  sum_y += y;
  sum_ny += n * y;
}

AgentProfile RunState::Pace::Fit() const {
  AgentProfile p;
  if (batches == 0) return p;
  const double k = batches;
  const double mean_n = sum_n / k, mean_y = sum_y / k;
  const double var_n = sum_nn / k - mean_n * mean_n;
  // Batches of (nearly) one size cannot tell start-up from per-test cost: all of it counts as start-up. Their
  // sizes must spread by a quarter of the mean, or timer noise would decide the slope.
  if (batches < 3 || var_n < 0.0625 * mean_n * mean_n) {
    p.startup_s = mean_y;
    return p;
  }
  // Least squares for y = startup + n * per_test, with neither negative (timer noise on tiny batches can
  // suggest a negative start-up; then the line goes through the origin).
  double slope = (sum_ny / k - mean_n * mean_y) / var_n;
  double intercept = mean_y - slope * mean_n;
  if (slope < 0) {
    slope = 0;
    intercept = mean_y;
  } else if (intercept < 0) {
    intercept = 0;
    slope = sum_nn > 0 ? sum_ny / sum_nn : 0;
  }
  p.startup_s = intercept;
  p.per_test_s = slope;
  return p;
}

std::map<std::string, AgentProfile, std::less<>> RunState::ProfilesLocked(bool warm) const {
  std::map<std::string, AgentProfile, std::less<>> out;
  for (const auto& [id, a] : agents_) {
    const Pace& pace = warm ? a.warm : a.process;
    AgentProfile p = pace.Fit();
    // The pace against the history counts only tests the history knew, and only once there is enough of it that
    // timer noise does not decide it.
    if (a.known_predicted_s > 0.5 && a.known_actual_s > 0.5) p.speed = a.known_predicted_s / a.known_actual_s;
    if (p.startup_s >= 0 || p.speed > 0) out.emplace(id, p);
  }
  return out;
}

std::map<std::string, AgentProfile, std::less<>> RunState::AgentProfiles(bool warm) const {
  absl::MutexLock l(&mu_);
  return ProfilesLocked(warm);
}

void RunState::CancelStage(Stage& stage, const std::string& reason) {
  stage.cancelling = true;
  if (stage.note.empty()) stage.note = reason;
  // Tests waiting for a retry keep the failure they had.
  for (const Stage::Retry& r : stage.retries) {
    std::vector<TestAttempt>& earlier = stage.attempts[r.id];
    if (earlier.empty() || stage.results.count(r.id)) continue;
    TestCase tc;
    tc.id = r.id;
    tc.result = earlier.back();
    earlier.pop_back();
    tc.reruns = std::move(earlier);
    Finalize(stage, std::move(tc));
  }
  stage.retries.clear();
  if (stage.queue) {
    while (std::optional<Batch> b = stage.queue->Next("")) {
      for (const std::string& id : b->test_ids) {
        if (!stage.results.count(id)) Finalize(stage, Synthetic(id, Outcome::kNotRun, reason, ""));
      }
    }
  }
  for (auto& [id, lease] : leases_) {
    if (lease.info.stage == stage.config.name && lease.state == Lease::kActive) {
      lease.state = Lease::kCancelled;
      lease.cancel_reason = reason;
    }
  }
}

void RunState::MaybeFinishStage(Stage& stage) {
  if (stage.status != StageStatus::kRunning) return;
  if (stage.queue && stage.queue->remaining() > 0 && !stage.cancelling) return;
  if (!stage.retries.empty() && !stage.cancelling) return;
  if (ActiveLeases(stage)) return;
  bool failed = false;
  for (const auto& [id, tc] : stage.results) failed |= IsFailure(tc.result.outcome);
  if (failed) {
    EndStage(stage, StageStatus::kFailed);
  } else if (cancelled_ || stage.cancelling) {
    EndStage(stage, StageStatus::kCancelled);
  } else {
    EndStage(stage, StageStatus::kPassed);
  }
}

void RunState::ExpireLocked() {
  absl::Time now = clock_->Now();
  for (auto& [id, lease] : leases_) {
    if ((lease.state != Lease::kActive && lease.state != Lease::kCancelled) || lease.info.deadline > now) continue;
    const bool was_cancelled = lease.state == Lease::kCancelled;
    lease.state = Lease::kExpired;
    Stage* stage = StageByName(lease.info.stage);
    if (!stage) continue;
    if (lease.info.kind == LeaseKind::kDiscover) {
      if (stage->status == StageStatus::kDiscovering) stage->status = StageStatus::kPending;
      continue;
    }
    std::vector<std::string> unfinished;
    for (const std::string& t : lease.info.test_ids) {
      if (!lease.reported.count(t) && !stage->results.count(t)) unfinished.push_back(t);
    }
    if (was_cancelled || stage->cancelling) {
      std::string reason = lease.cancel_reason.empty() ? stage->note : lease.cancel_reason;
      for (const std::string& t : unfinished) Finalize(*stage, Synthetic(t, Outcome::kNotRun, reason, ""));
    } else {
      // The agent is gone or cut off: its unfinished tests run elsewhere.
      stage->queue->Return(std::move(unfinished));
    }
    MaybeFinishStage(*stage);
  }
}

void RunState::AgentGone(const std::string& name) {
  absl::MutexLock l(&mu_);
  const absl::Time now = clock_->Now();
  for (auto& [id, lease] : leases_) {
    auto agent = agents_.find(lease.info.agent_id);
    if (agent == agents_.end() || agent->second.name != name) continue;
    if (lease.state == Lease::kActive || lease.state == Lease::kCancelled) lease.info.deadline = now;
  }
  for (auto& [id, a] : agents_) {
    if (a.name == name) dismissed_.insert(id);
  }
  ExpireLocked();
}

void RunState::ExpireLeases() {
  absl::MutexLock l(&mu_);
  ExpireLocked();
}

void RunState::Cancel(const std::string& reason) {
  absl::MutexLock l(&mu_);
  if (cancelled_) return;
  cancelled_ = true;
  for (Stage& s : stages_) {
    if (Terminal(s.status)) continue;
    if (s.status == StageStatus::kRunning) {
      CancelStage(s, reason);
      MaybeFinishStage(s);
    } else {
      for (auto& [id, lease] : leases_) {
        if (lease.info.stage == s.config.name && lease.state == Lease::kActive) {
          lease.state = Lease::kCancelled;
          lease.cancel_reason = reason;
        }
      }
      s.status = StageStatus::kCancelled;
      s.note = reason;
    }
  }
}

bool RunState::done() const {
  absl::MutexLock l(&mu_);
  for (const Stage& s : stages_) {
    if (!Terminal(s.status)) return false;
  }
  return true;
}

bool RunState::AgentsDismissed() const {
  absl::MutexLock l(&mu_);
  const absl::Time now = clock_->Now();
  for (const auto& [id, a] : agents_) {
    if (!dismissed_.count(id) && now - a.last_seen <= options_.lease_ttl) return false;
  }
  return true;
}

void RunState::Seen(const std::string& agent_id) {
  if (auto a = agents_.find(agent_id); a != agents_.end()) a->second.last_seen = clock_->Now();
}

std::map<std::string, std::string> RunState::DrainedAgents() const {
  absl::MutexLock l(&mu_);
  std::map<std::string, std::string> out;
  for (const auto& [id, a] : agents_) {
    if (!a.drained.empty()) out[a.name] = a.drained;
  }
  return out;
}

bool RunState::WaitDone(absl::Time deadline) const {
  absl::MutexLock l(&mu_);
  auto all_terminal = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const Stage& s : stages_) {
      if (!Terminal(s.status)) return false;
    }
    return true;
  };
  while (!all_terminal()) {
    absl::Time now = clock_->Now();
    if (now >= deadline) return false;
    // Stage changes come from other threads' calls; re-check often (the fake clock does not advance by itself).
    mu_.AwaitWithTimeout(absl::Condition(&all_terminal), absl::Milliseconds(50));
  }
  return true;
}

int RunState::exit_code() const {
  absl::MutexLock l(&mu_);
  if (internal_error_) return kExitInternalError;
  if (cancelled_) return kExitInterrupted;
  bool any_tests = false, failed = false;
  for (const Stage& s : stages_) {
    any_tests |= !s.order.empty();
    failed |= s.status == StageStatus::kFailed;
  }
  if (failed) return kExitTestsFailed;
  return any_tests ? kExitOk : kExitNoTests;
}

std::vector<StageProgress> RunState::Progress() const {
  absl::MutexLock l(&mu_);
  std::vector<StageProgress> out;
  absl::Time now = clock_->Now();
  for (const Stage& s : stages_) {
    StageProgress p;
    p.name = s.config.name;
    p.status = s.status;
    p.note = s.note;
    p.total = static_cast<int>(s.order.size());
    for (const auto& [id, tc] : s.results) {
      ++p.done;
      p.flaky += tc.flaky();
      switch (tc.result.outcome) {
        case Outcome::kPassed: ++p.passed; break;
        case Outcome::kFailed: ++p.failed; break;
        case Outcome::kError: ++p.errors; break;
        case Outcome::kSkipped: ++p.skipped; break;
        case Outcome::kNotRun: ++p.not_run; break;
      }
    }
    if (s.started != absl::Time()) p.elapsed = (Terminal(s.status) ? s.finished : now) - s.started;
    p.planned = s.planned;
    p.known = s.known;
    if (s.status == StageStatus::kRunning && s.queue && (s.known > 0 || s.reported_actual_s > 0)) {
      // The work left, at the pace the stage's results have shown against their predictions so far, shared by
      // the agents still taking work. Known once there is something to go by: a history, or the first results.
      const double pace = s.reported_predicted_s > 0 && s.reported_actual_s > 0
                              ? s.reported_actual_s / s.reported_predicted_s
                              : 1.0;
      int live = 0;
      for (const auto& [id, a] : agents_) live += a.drained.empty() && !dismissed_.count(id);
      p.eta_s = s.remaining_s * pace / std::max(1, live);
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<TestSuite> RunState::Report() const {
  absl::MutexLock l(&mu_);
  std::vector<TestSuite> suites;
  for (const Stage& s : stages_) {
    if (s.order.empty()) continue;
    TestSuite suite;
    suite.name = s.config.name;
    for (const std::string& id : s.order) {
      auto it = s.results.find(id);
      if (it != s.results.end()) {
        suite.cases.push_back(it->second);
      } else {
        suite.cases.push_back(Synthetic(id, Outcome::kNotRun, s.note.empty() ? "the run ended first" : s.note, ""));
      }
    }
    suites.push_back(std::move(suite));
  }
  return suites;
}

}  // namespace testshard::coordinator

#include "agent/agent.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/postgres_provisioner.h"
#include "agent/handoff.h"
#include "common/status.h"
#include "common/wire.h"
#include "spdlog/spdlog.h"

namespace testshard::agent {
namespace {

namespace fs = std::filesystem;

constexpr size_t kTailBytes = 8 * 1024;
constexpr int kResultsPerCall = 500;
constexpr size_t kChunkBytes = 1 << 20;

// Errors a restarting or briefly unreachable coordinator produces; anything else is a refusal.
bool Retryable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         s.error_code() == grpc::StatusCode::CANCELLED;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

Agent::Agent(AgentOptions options, ProcessRunner* runner)
    : options_(std::move(options)), runner_(runner), adapter_(std::make_unique<PytestAdapter>()) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Reconnect quickly after a coordinator restart rather than gRPC's default of up to two minutes.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  channel_ = grpc::CreateCustomChannel(
      options_.coordinator, options_.credentials ? options_.credentials : grpc::InsecureChannelCredentials(), args);
  stub_ = v1::Coordinator::NewStub(channel_);
}

Agent::~Agent() {
  handoff_.reset();
  databases_.reset();    // gives every database back
  provisioner_.reset();  // drops them and ends the agent's presence on the server
}

std::unique_ptr<grpc::ClientContext> Agent::Context(absl::Duration timeout) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  ctx->AddMetadata(kAuthHeader, "Bearer " + options_.token);
  return ctx;
}

void Agent::Stop() {
  absl::MutexLock l(&mu_);
  stopping_ = true;
  for (auto& [id, a] : active_) {
    a->cancel_reason = "the agent was stopped";
    a->cancel.Cancel();
  }
}

absl::Status Agent::Register() {
  v1::RegisterRequest req;
  req.set_name(options_.name);
  req.set_capacity(1);
  req.set_version("0.1.0");
  absl::Time give_up = absl::Now() + options_.connect_timeout;
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    v1::RegisterResponse resp;
    auto ctx = Context(std::min(absl::Seconds(10), options_.connect_timeout));
    ctx->set_wait_for_ready(true);
    grpc::Status s = stub_->Register(ctx.get(), req, &resp);
    if (s.ok()) {
      agent_id_ = resp.agent_id();
      {
        absl::MutexLock l(&mu_);
        heartbeat_id_ = agent_id_;
      }
      run_id_ = resp.run_id();
      spec_ = resp.run();
      // Kept across a re-registration: the data measured so far belongs to the same run.
      if (spec_.coverage().enabled() && !coverage_) {
        coverage_ = std::make_unique<CoverageRecorder>(spec_.coverage(), options_.work_dir + "/coverage",
                                                       DefaultPluginDir());
      }
      if (resp.heartbeat_interval_ms() > 0) heartbeat_interval_ = absl::Milliseconds(resp.heartbeat_interval_ms());
      return absl::OkStatus();
    }
    if (!Retryable(s) || absl::Now() > give_up) {
      return Annotate(FromGrpc(s), absl::StrCat("registering with the coordinator at ", options_.coordinator));
    }
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(backoff));
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

absl::Status Agent::PrepareDatabase() {
  const v1::DatabaseSpec& db = spec_.database();
  if (!db.enabled()) return absl::OkStatus();
  pg::Connection admin;
  if (options_.database_admin) {
    admin = *options_.database_admin;
  } else if (!db.server_url().empty()) {
    TS_ASSIGN_OR_RETURN(admin, pg::ParseConnection(db.server_url()));
  } else if (options_.start_embedded_server) {
    pg::EmbeddedOptions eo;
    // Relative paths are the checkout's.
    auto in_root = [&](const std::string& p) {
      return p.empty() ? p : (fs::path(options_.root) / p).lexically_normal().string();
    };
    eo.bin_dir = in_root(db.embedded().bin_dir());
    eo.base_dir = in_root(db.embedded().data_dir());
    eo.tcp = db.embedded().tcp() || db.transport() == "tcp";
    if (db.embedded().max_connections() > 0) eo.max_connections = db.embedded().max_connections();
    // A fleet agent runs once per run in the same checkout: like `testshard run`, it keeps its templates.
    if (db.embedded().reuse_templates()) eo.snapshot = options_.root;
    TS_ASSIGN_OR_RETURN(admin, options_.start_embedded_server(eo));
  } else {
    return absl::FailedPreconditionError("the run needs a database and this agent was given no server");
  }
  TS_RETURN_IF_ERROR(CheckTransport(db, admin));
  PostgresProvisionerOptions po;
  po.admin = admin;
  TemplateRecipe& recipe = po.recipe;
  for (const v1::Command& c : db.setup()) recipe.setup.emplace_back(c.argv().begin(), c.argv().end());
  recipe.env_templates.insert(db.env().begin(), db.env().end());
  recipe.env.insert(spec_.env().begin(), spec_.env().end());
  recipe.workdir = Workdir();
  recipe.inputs.assign(db.template_inputs().begin(), db.template_inputs().end());
  recipe.role = db.role();
  recipe.log_dir = options_.work_dir;
  if (db.setup_timeout_ms() > 0) recipe.setup_timeout = absl::Milliseconds(db.setup_timeout_ms());
  po.project = db.project();
  po.run_id = run_id_;
  po.agent_id = agent_id_;
  // Clones kept ready only help stages that want fresh databases; the agent's own is made once.
  bool fresh = db.reset() == "stage" || db.reset() == "shard";
  for (const auto& [stage, reset] : db.stage_reset()) fresh |= reset != "agent";
  po.pool_size = fresh ? db.pool_size() : 0;
  if (db.keep_templates() > 0) po.keep_templates = db.keep_templates();
  if (db.clone_strategy() == "file_copy") po.strategy = CloneStrategy::kFileCopy;
  if (db.clone_strategy() == "wal_log") po.strategy = CloneStrategy::kWalLog;
  po.settings.insert(db.settings().begin(), db.settings().end());
  po.grants.insert(db.grants().begin(), db.grants().end());
  auto provisioner = std::make_unique<PostgresProvisioner>(std::move(po), runner_);
  TS_ASSIGN_OR_RETURN(PrepareReport report, provisioner->Prepare());
  spdlog::info("{}: template {} {} ({} clones)", options_.name, report.template_name,
               report.built ? absl::StrCat("built in ", absl::FormatDuration(absl::Trunc(report.build_time,
                                                                                         absl::Milliseconds(1))))
                            : std::string("found ready"),
               report.strategy);
  for (const std::string& w : report.warnings) {
    spdlog::warn("{}: database: {}", options_.name, w);
    warnings_.push_back("database: " + w);
  }
  provisioner_ = std::move(provisioner);
  databases_ = std::make_unique<DatabaseScopes>(provisioner_.get());
  // The agent's own database: discovery and the warm worker use it, and every stage that does not reset.
  TS_ASSIGN_OR_RETURN(database_, databases_->ForLease("agent", "", ResetPolicy::kAgent));
  spdlog::info("{}: database {} ready", options_.name, database_->name);
  auto handoff = StartHandoffCheck(db, admin, database_->name, options_.name, TestApplicationName(run_id_, agent_id_),
                                   options_.work_dir + "/handoff-sessions.jsonl");
  if (handoff.ok()) {
    handoff_ = std::move(*handoff);
  } else {
    spdlog::warn("{}: {}", options_.name, ToStd(handoff.status().message()));  // the tests can run without it
  }
  return absl::OkStatus();
}

ResetPolicy Agent::ResetFor(const v1::Lease& lease) const {
  // Collection reads no rows worth isolating: it uses the agent's database whatever the stage says.
  if (lease.kind() == v1::Lease::DISCOVER) return ResetPolicy::kAgent;
  const v1::DatabaseSpec& db = spec_.database();
  auto it = db.stage_reset().find(lease.stage());
  auto policy = ParseResetPolicy(it != db.stage_reset().end() ? it->second : db.reset());
  return policy.ok() ? *policy : ResetPolicy::kAgent;
}

absl::Status Agent::AcquireForLease(const v1::Lease& lease) {
  if (!databases_) return absl::OkStatus();
  ResetPolicy reset = ResetFor(lease);
  TS_ASSIGN_OR_RETURN(Database db, databases_->ForLease(lease.lease_id(), lease.stage(), reset));
  if (reset != ResetPolicy::kAgent) lease_databases_[lease.lease_id()] = std::move(db);
  return absl::OkStatus();
}

void Agent::ReleaseForLease(const std::string& lease_id) {
  if (lease_databases_.erase(lease_id) && databases_) databases_->Done(lease_id);
}

std::string Agent::Workdir() const { return (fs::path(options_.root) / spec_.workdir()).lexically_normal().string(); }

std::map<std::string, std::string> Agent::ChildEnv(const v1::Lease* lease) const {
  std::map<std::string, std::string> env(spec_.env().begin(), spec_.env().end());
  const Database* database = database_ ? &*database_ : nullptr;
  if (lease) {
    auto own = lease_databases_.find(lease->lease_id());
    if (own != lease_databases_.end()) database = &own->second;
  }
  if (database) {
    auto db_env = RenderEnv({spec_.database().env().begin(), spec_.database().env().end()}, database->test);
    // Templates were validated when the config was read; a failure here would be a bug, so it cannot be silent.
    if (db_env.ok()) {
      for (auto& [k, v] : *db_env) env[k] = v;
    } else {
      spdlog::error("{}: {}", options_.name, ToStd(db_env.status().message()));
    }
    env["TESTSHARD_DATABASE"] = database->name;
    AddHandoffEnv(spec_.database(), database->name, TestApplicationName(run_id_, agent_id_), DefaultPluginDir(), &env);
    // Whatever database is handed over here is the tests' own, for the hand-off check (one per lease with reset).
    if (handoff_) handoff_->SetDatabase(database->name);
  }
  env["TESTSHARD_AGENT"] = options_.name;
  if (lease) {
    env["TESTSHARD_STAGE"] = lease->stage();
    env["TESTSHARD_LEASE"] = lease->lease_id();
  }
  return env;
}

std::shared_ptr<Agent::Active> Agent::Hold(const std::string& lease_id) {
  // Held once from the moment the lease arrives; later holds share that record, so a cancel received in between
  // is not lost.
  absl::MutexLock l(&mu_);
  std::shared_ptr<Active>& active = active_[lease_id];
  if (!active) {
    active = std::make_shared<Active>();
    active->lease_id = lease_id;
  }
  return active;
}

void Agent::Release(const std::string& lease_id) {
  absl::MutexLock l(&mu_);
  active_.erase(lease_id);
}

absl::Status Agent::Run() {
  std::error_code ec;
  fs::create_directories(options_.work_dir, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot create ", options_.work_dir, ": ", ec.message()));
  TS_RETURN_IF_ERROR(Register());
  spdlog::info("{}: registered as {} in run {} (pid {})", options_.name, agent_id_, run_id_, getpid());
  // A database that cannot be made is reported through the first lease, so the run shows why, and the agent then
  // stops taking work.
  database_error_ = PrepareDatabase();
  if (!database_error_.ok()) spdlog::error("{}: {}", options_.name, ToStd(database_error_.message()));
  // Start the worker now, so its start-up overlaps with another agent's collection.
  if (database_error_.ok() && UseWorker()) {
    absl::Status s = EnsureWorker();
    if (!s.ok()) spdlog::warn("{}: {}", options_.name, ToStd(s.message()));
  }

  std::thread heartbeat([this] { HeartbeatLoop(); });
  absl::Status result;
  absl::Time last_contact = absl::Now();
  bool done = false;
  while (!done) {
    {
      absl::MutexLock l(&mu_);
      if (stopping_) break;
    }
    // Ask for more work when idle, or when the worker holds back only its last test: the next batch tells it what
    // follows that test, so module fixtures live on across batches exactly as in one serial run.
    if (inflight_.empty() || HoldingLastTest()) {
      v1::LeaseRequest req;
      req.set_agent_id(agent_id_);
      v1::LeaseResponse resp;
      auto ctx = Context();
      ctx->set_wait_for_ready(true);
      grpc::Status s = stub_->Lease(ctx.get(), req, &resp);
      if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
          s.error_message().find("unknown agent") != std::string::npos) {
        // The coordinator restarted and lost track of us: whatever we hold was re-queued there. Drop it, join
        // again under a new id, and carry on.
        spdlog::info("{}: the coordinator no longer knows this agent; registering again", options_.name);
        if (!inflight_.empty()) AbortWorker("the coordinator restarted", v1::CompleteLeaseRequest::CANCELLED);
        absl::Status again = Register();
        if (!again.ok()) {
          result = again;
          break;
        }
        last_contact = absl::Now();
        continue;
      }
      if (!s.ok()) {
        if (Retryable(s) && absl::Now() - last_contact < options_.connect_timeout) {
          if (inflight_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(500));
          Pump(absl::Milliseconds(inflight_.empty() ? 0 : 200));
          continue;
        }
        result = Annotate(FromGrpc(s), "asking for work");
        break;
      }
      last_contact = absl::Now();
      if (resp.has_done()) {
        spdlog::info("{}: done ({})", options_.name, resp.done().reason());
        Drain();
        done = true;
        continue;
      }
      if (resp.has_wait()) {
        if (!inflight_.empty()) {
          // Nothing follows yet: let the held-back test run now rather than idle.
          if (worker_ && worker_->Flush().ok()) flushed_ = true;
        } else {
          std::this_thread::sleep_for(
              std::chrono::milliseconds(std::clamp<int64_t>(resp.wait().retry_after_ms(), 5, 5000)));
          continue;
        }
      } else {
        const v1::Lease& lease = resp.lease();
        // Heartbeat the lease from now on: getting its database or (re)starting the worker can take longer than
        // the lease's TTL, and an expired lease would cancel the work it was waiting for.
        Hold(lease.lease_id());
        // A database that cannot be had (the server died, the disk is full) fails the lease as an infrastructure
        // error, and the agent takes no more work.
        if (database_error_.ok()) {
          database_error_ = AcquireForLease(lease);
          if (!database_error_.ok()) spdlog::error("{}: {}", options_.name, ToStd(database_error_.message()));
        }
        if (!database_error_.ok()) {
          Drain();
          v1::CompleteLeaseRequest req;
          req.set_lease_id(lease.lease_id());
          req.set_status(v1::CompleteLeaseRequest::INFRA_ERROR);
          req.set_error(absl::StrCat("agent ", options_.name, " has no database: ", database_error_.message()));
          absl::Status c = Complete(std::move(req));
          Release(lease.lease_id());
          if (!c.ok()) spdlog::warn("{}: {}", options_.name, ToStd(c.message()));
          result = database_error_;
          break;
        }
        // A lease with a database of its own runs in a process of its own: the warm worker keeps the agent's.
        bool own_database = lease_databases_.count(lease.lease_id()) > 0;
        // A worker started here (the last one died) is part of this lease's wall time, but no later lease pays for
        // it again: the coordinator is told, so it does not take it for a per-batch start-up.
        const absl::Time taken = absl::Now();
        const bool had_worker = worker_ != nullptr;
        if (lease.kind() == v1::Lease::RUN && !own_database && UseWorker() && EnsureWorker().ok()) {
          StartWarm(lease, taken, had_worker ? absl::ZeroDuration() : absl::Now() - taken);
        } else {
          Drain();
          absl::Status r = lease.kind() == v1::Lease::DISCOVER && UseWorker() ? DiscoverWarm(lease)
                                                                              : RunOneShot(lease);
          if (!r.ok()) spdlog::warn("{}: lease {}: {}", options_.name, lease.lease_id(), ToStd(r.message()));
          ReleaseForLease(lease.lease_id());
        }
      }
    }
    if (!inflight_.empty()) Pump(absl::Milliseconds(50));
  }
  bool stopped;
  {
    absl::MutexLock l(&mu_);
    stopped = stopping_;
    stopping_ = true;
  }
  if (stopped && !inflight_.empty()) AbortWorker("the agent was stopped", v1::CompleteLeaseRequest::CANCELLED);
  if (worker_) worker_->Stop();
  // After the worker's session has ended and written its data. A stopped agent leaves at once.
  if (coverage_ && !stopped && !agent_id_.empty()) SendCoverage();
  heartbeat.join();
  return result;
}

void Agent::HeartbeatLoop() {
  while (true) {
    std::vector<std::shared_ptr<Active>> active;
    std::string agent_id;
    {
      absl::MutexLock l(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&stop), heartbeat_interval_);
      if (stopping_) return;
      for (const auto& [id, a] : active_) active.push_back(a);
      agent_id = heartbeat_id_;
    }
    v1::HeartbeatRequest req;
    req.set_agent_id(agent_id);
    for (const auto& a : active) req.add_lease_ids(a->lease_id);
    v1::HeartbeatResponse resp;
    auto ctx = Context(heartbeat_interval_ * 3);
    grpc::Status s = stub_->Heartbeat(ctx.get(), req, &resp);
    if (!s.ok()) {
      spdlog::debug("{}: heartbeat failed: {}", options_.name, s.error_message());
      continue;
    }
    for (const v1::LeaseState& st : resp.leases()) {
      if (!st.cancelled()) continue;
      for (const auto& a : active) {
        if (a->lease_id != st.lease_id() || a->cancel.cancelled()) continue;
        spdlog::info("{}: lease {} cancelled: {}", options_.name, st.lease_id(), st.reason());
        absl::MutexLock l(&mu_);
        a->cancel_reason = st.reason();
        a->cancel.Cancel();
      }
    }
  }
}

bool Agent::UseWorker() const { return spec_.warm() && spec_.runner() == "pytest" && !worker_disabled_; }

absl::Status Agent::EnsureWorker() {
  if (worker_) return absl::OkStatus();
  WorkerOptions wo;
  wo.command.assign(spec_.command().begin(), spec_.command().end());
  wo.cwd = Workdir();
  wo.env = ChildEnv(nullptr);
  wo.plugin_dir = DefaultPluginDir();
  wo.scratch_dir = absl::StrCat(options_.work_dir, "/worker-", ++worker_generation_);
  if (coverage_) coverage_->Apply("worker", &wo.command, &wo.env);
  auto w = PytestWorker::Start(wo);
  if (!w.ok()) {
    // A collection error is the suite's problem and is reported through discovery; anything else means this
    // pytest cannot host the worker, so the agent falls back to one process per shard.
    if (w.status().code() != absl::StatusCode::kFailedPrecondition ||
        w.status().message().find("collection failed") == absl::string_view::npos) {
      worker_disabled_ = true;
      spdlog::warn("{}: no warm pytest worker, running one process per shard: {}", options_.name,
                   ToStd(w.status().message()));
    }
    return w.status();
  }
  worker_ = std::move(*w);
  flushed_ = false;
  running_.clear();
  spdlog::info("{}: pytest worker ready, {} tests collected", options_.name, worker_->collected());
  return absl::OkStatus();
}

absl::Status Agent::DiscoverWarm(const v1::Lease& lease) {
  auto active = Hold(lease.lease_id());
  v1::CompleteLeaseRequest req;
  req.set_lease_id(lease.lease_id());
  absl::Status started = EnsureWorker();
  std::vector<std::string> groups;
  absl::StatusOr<std::vector<std::string>> ids =
      started.ok() ? worker_->Select(lease.marker_expression(), lease.group_marker(), &groups)
                   : absl::StatusOr<std::vector<std::string>>(started);
  Release(lease.lease_id());
  if (!started.ok() && worker_disabled_) return RunOneShot(lease);
  if (!ids.ok()) {
    req.set_status(v1::CompleteLeaseRequest::COLLECTION_ERROR);
    req.set_error(std::string(ids.status().message()));
  } else {
    req.set_status(v1::CompleteLeaseRequest::OK);
    for (std::string& id : *ids) req.add_collected_test_ids(std::move(id));
    if (!lease.group_marker().empty() && groups.size() == static_cast<size_t>(req.collected_test_ids_size())) {
      for (std::string& g : groups) req.add_collected_groups(std::move(g));
    }
  }
  return Complete(std::move(req));
}

void Agent::StartWarm(const v1::Lease& lease, absl::Time taken, absl::Duration worker_start) {
  if (handoff_) {
    handoff_->SetStage(lease.stage());
    if (database_) handoff_->SetDatabase(database_->name);  // the warm worker's, whatever a one-shot lease had
  }
  InFlight f;
  f.lease = lease;
  f.active = Hold(lease.lease_id());
  f.pending.insert(lease.test_ids().begin(), lease.test_ids().end());
  f.started = taken;
  f.worker_start = worker_start;
  inflight_.push_back(std::move(f));
  std::vector<std::string> ids(lease.test_ids().begin(), lease.test_ids().end());
  flushed_ = false;
  if (!worker_->Run(ids).ok()) AbortWorker("the pytest worker was gone before the batch was sent", v1::CompleteLeaseRequest::CRASHED);
}

bool Agent::HoldingLastTest() const {
  if (!worker_ || flushed_ || !running_.empty()) return false;
  size_t pending = 0;
  for (const InFlight& f : inflight_) pending += f.pending.size();
  return pending == 1;
}

void Agent::Pump(absl::Duration timeout) {
  if (!worker_) return;
  std::optional<WorkerEvent> e = worker_->Next(timeout);
  if (e) {
    switch (e->kind) {
      case WorkerEvent::kStart:
        running_ = e->id;
        running_since_ = absl::Now();
        if (handoff_) handoff_->TestStarted(e->id);
        break;
      case WorkerEvent::kResult:
      case WorkerEvent::kUnknown: {
        if (running_ == e->id) running_.clear();
        TestCase tc = e->result;
        if (e->kind == WorkerEvent::kUnknown) {
          tc = TestCase();
          tc.id = e->id;
          tc.result.outcome = Outcome::kError;
          tc.result.type = "testshard.NotCollected";
          tc.result.message = absl::StrCat("not collected by the pytest session of agent ", options_.name);
        }
        for (InFlight& f : inflight_) {
          if (!f.pending.erase(e->id)) continue;
          bool failure = tc.result.outcome == Outcome::kFailed || tc.result.outcome == Outcome::kError;
          f.unsent.push_back(std::move(tc));
          crashes_without_progress_ = 0;
          // The stage's maxfail, applied here too (as pytest --maxfail would in a one-shot shard), so this agent
          // stops at once instead of waiting to hear the coordinator's count.
          if (failure && f.lease.maxfail() > 0 && ++f.failures >= f.lease.maxfail() && !f.active->cancel.cancelled()) {
            SendResults(f, true);
            absl::MutexLock l(&mu_);
            f.active->cancel_reason = absl::StrCat("maxfail (", f.lease.maxfail(), ") reached in stage ", f.lease.stage());
            f.active->cancel.Cancel();
          }
          break;
        }
        break;
      }
      case WorkerEvent::kExited: {
        std::string why = absl::StrCat("the pytest worker died (", e->exit.Describe(), ")");
        AbortWorker(why, v1::CompleteLeaseRequest::CRASHED);
        return;
      }
    }
  }
  // Hangs and cancels: checked between events, so a test that never returns is caught.
  absl::Time now = absl::Now();
  for (InFlight& f : inflight_) {
    if (f.active->cancel.cancelled()) {
      AbortWorker(f.active->cancel_reason.empty() ? "cancelled" : f.active->cancel_reason,
                  v1::CompleteLeaseRequest::CANCELLED);
      return;
    }
    if (f.lease.timeout_ms() > 0 && now - f.started > absl::Milliseconds(f.lease.timeout_ms())) {
      AbortWorker(absl::StrCat("the shard timed out after ", absl::FormatDuration(absl::Milliseconds(f.lease.timeout_ms()))),
                  v1::CompleteLeaseRequest::TIMED_OUT);
      return;
    }
    if (!running_.empty() && f.pending.count(running_) && f.lease.test_timeout_ms() > 0 &&
        now - running_since_ > absl::Milliseconds(f.lease.test_timeout_ms())) {
      AbortWorker(absl::StrCat("timed out after ", absl::FormatDuration(absl::Milliseconds(f.lease.test_timeout_ms())),
                               " (test_timeout)"),
                  v1::CompleteLeaseRequest::TIMED_OUT);
      return;
    }
  }
  for (InFlight& f : inflight_) SendResults(f, false);
  CompleteFinished();
}

void Agent::SendResults(InFlight& f, bool force) {
  if (f.unsent.empty()) return;
  // Live results, batched: often enough for progress and maxfail, rarely enough not to flood the coordinator.
  if (!force && f.unsent.size() < 100 && absl::Now() - last_send_ < absl::Milliseconds(100)) return;
  last_send_ = absl::Now();
  if (handoff_) {
    for (const TestCase& tc : f.unsent) {
      bool failed = tc.result.outcome == Outcome::kFailed || tc.result.outcome == Outcome::kError;
      handoff_->Result(tc.id, failed, tc.result.message);
    }
  }
  if (f.lost) {
    f.unsent.clear();
    return;
  }
  for (size_t i = 0; i < f.unsent.size(); i += kResultsPerCall) {
    v1::ReportResultsRequest rr;
    rr.set_agent_id(agent_id_);
    rr.set_lease_id(f.lease.lease_id());
    for (size_t j = i; j < std::min(f.unsent.size(), i + kResultsPerCall); ++j) *rr.add_results() = ToWire(f.unsent[j]);
    v1::ReportResultsResponse resp;
    auto ctx = Context();
    grpc::Status s = stub_->ReportResults(ctx.get(), rr, &resp);
    if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      spdlog::warn("{}: lease {} refused: {}", options_.name, f.lease.lease_id(), s.error_message());
      f.lost = true;
      break;
    }
    if (!s.ok()) spdlog::warn("{}: reporting results: {}", options_.name, s.error_message());
    if (resp.cancelled() && !f.active->cancel.cancelled()) {
      absl::MutexLock l(&mu_);
      f.active->cancel_reason = resp.reason();
      f.active->cancel.Cancel();
    }
  }
  f.unsent.clear();
}

void Agent::CompleteFinished() {
  while (!inflight_.empty() && inflight_.front().pending.empty()) {
    InFlight& f = inflight_.front();
    SendResults(f, true);
    if (!f.lost) {
      v1::CompleteLeaseRequest req;
      req.set_lease_id(f.lease.lease_id());
      req.set_status(v1::CompleteLeaseRequest::OK);
      req.set_wall_s(absl::ToDoubleSeconds(absl::Now() - f.started));
      req.set_worker_start_s(absl::ToDoubleSeconds(f.worker_start));
      absl::Status s = Complete(std::move(req));
      if (!s.ok()) spdlog::warn("{}: completing {}: {}", options_.name, f.lease.lease_id(), ToStd(s.message()));
    }
    Release(f.lease.lease_id());
    inflight_.pop_front();
  }
}

void Agent::Drain() {
  if (inflight_.empty()) return;
  if (worker_ && !flushed_ && worker_->Flush().ok()) flushed_ = true;
  while (!inflight_.empty()) Pump(absl::Milliseconds(50));
}

void Agent::AbortWorker(const std::string& why, v1::CompleteLeaseRequest::Status status) {
  std::string tail = worker_ ? ReadTail(worker_->log_path(), kTailBytes) : "";
  if (worker_) worker_->Kill();
  worker_.reset();
  flushed_ = false;
  bool progress_lost = running_.empty();
  if (status == v1::CompleteLeaseRequest::CRASHED && progress_lost) ++crashes_without_progress_;
  for (InFlight& f : inflight_) {
    v1::CompleteLeaseRequest req;
    req.set_lease_id(f.lease.lease_id());
    bool cancelled = f.active->cancel.cancelled() || status == v1::CompleteLeaseRequest::CANCELLED;
    req.set_status(cancelled ? v1::CompleteLeaseRequest::CANCELLED : status);
    req.set_error(cancelled ? (f.active->cancel_reason.empty() ? why : f.active->cancel_reason) : why);
    req.set_stderr_tail(tail);
    for (const std::string& id : f.pending) {
      if (id == running_) {
        // The test that was running when the worker died or hung carries the reason.
        TestCase tc;
        tc.id = id;
        tc.result.outcome = cancelled ? Outcome::kNotRun : Outcome::kError;
        tc.result.type = status == v1::CompleteLeaseRequest::TIMED_OUT ? "testshard.Timeout" : "testshard.WorkerDied";
        tc.result.message = cancelled ? req.error() : why;
        tc.result.details = tail;
        tc.result.time_s = absl::ToDoubleSeconds(absl::Now() - running_since_);
        f.unsent.push_back(std::move(tc));
      } else if (!cancelled && crashes_without_progress_ < 2) {
        // Never started: run again (here, on a fresh worker, or elsewhere).
        req.add_unattempted_test_ids(id);
      }
    }
    SendResults(f, true);
    if (!f.lost) {
      absl::Status s = Complete(std::move(req));
      if (!s.ok()) spdlog::warn("{}: completing {}: {}", options_.name, f.lease.lease_id(), ToStd(s.message()));
    }
    Release(f.lease.lease_id());
  }
  inflight_.clear();
  running_.clear();
  // What the dead worker's fixtures created and never dropped is still in the database.
  if (handoff_) handoff_->ProcessEnded(why);
}

absl::Status Agent::RunOneShot(const v1::Lease& lease) {
  Hold(lease.lease_id());
  absl::Status status = lease.kind() == v1::Lease::DISCOVER ? Discover(lease) : RunTests(lease);
  Release(lease.lease_id());
  return status;
}

absl::Status Agent::Discover(const v1::Lease& lease) {
  std::shared_ptr<Active> active;
  {
    absl::MutexLock l(&mu_);
    active = active_[lease.lease_id()];
  }
  std::string dir = (fs::path(options_.work_dir) / lease.lease_id()).string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  ProcessSpec spec;
  spec.argv = adapter_->CollectArgv({spec_.command().begin(), spec_.command().end()}, lease.marker_expression());
  spec.cwd = Workdir();
  spec.env = ChildEnv(&lease);
  spec.stdout_path = dir + "/collect.out";
  spec.stderr_path = dir + "/collect.err";
  if (lease.timeout_ms() > 0) spec.timeout = absl::Milliseconds(lease.timeout_ms());
  v1::CompleteLeaseRequest req;
  req.set_lease_id(lease.lease_id());
  auto r = runner_->Run(spec, &active->cancel);
  if (!r.ok()) {
    req.set_status(v1::CompleteLeaseRequest::INFRA_ERROR);
    req.set_error(std::string(r.status().message()));
    return Complete(std::move(req));
  }
  req.set_exit_code(r->exit_code);
  auto ids = adapter_->ParseCollection(ReadAll(spec.stdout_path), *r);
  if (r->cancelled) {
    req.set_status(v1::CompleteLeaseRequest::CANCELLED);
  } else if (!ids.ok()) {
    req.set_status(v1::CompleteLeaseRequest::COLLECTION_ERROR);
    req.set_error(absl::StrCat(ids.status().message(), "\n", ReadTail(spec.stderr_path, kTailBytes)));
  } else {
    req.set_status(v1::CompleteLeaseRequest::OK);
    for (std::string& id : *ids) req.add_collected_test_ids(std::move(id));
  }
  return Complete(std::move(req));
}

absl::Status Agent::RunTests(const v1::Lease& lease) {
  std::shared_ptr<Active> active;
  {
    absl::MutexLock l(&mu_);
    active = active_[lease.lease_id()];
  }
  std::string dir = (fs::path(options_.work_dir) / lease.lease_id()).string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  std::vector<std::string> ids(lease.test_ids().begin(), lease.test_ids().end());
  ShardFiles files{dir + "/report.xml", dir + "/output.log"};
  ProcessSpec spec;
  std::vector<std::string> command(spec_.command().begin(), spec_.command().end());
  spec.env = ChildEnv(&lease);
  if (coverage_) coverage_->Apply("batch", &command, &spec.env);
  spec.argv = adapter_->RunArgv(command, ids, files, lease.maxfail());
  spec.cwd = Workdir();
  spec.stdout_path = spec.stderr_path = files.output_path;
  spec.parent_death_signal = SIGKILL;
  if (lease.timeout_ms() > 0) spec.timeout = absl::Milliseconds(lease.timeout_ms());

  v1::CompleteLeaseRequest req;
  req.set_lease_id(lease.lease_id());
  if (handoff_) handoff_->SetStage(lease.stage());
  auto r = runner_->Run(spec, &active->cancel);
  if (!r.ok()) {
    req.set_status(v1::CompleteLeaseRequest::INFRA_ERROR);
    req.set_error(absl::StrCat("cannot start the test runner: ", r.status().message()));
    return Complete(std::move(req));
  }
  std::vector<TestCase> cases = adapter_->ParseResults(ids, files, *r, lease.maxfail());
  if (r->cancelled && !active->cancel_reason.empty()) {
    for (TestCase& tc : cases) {
      if (tc.result.outcome == Outcome::kNotRun) tc.result.message = active->cancel_reason;
    }
  }
  InFlight f;
  f.lease = lease;
  f.unsent = std::move(cases);
  SendResults(f, true);
  if (handoff_) {
    handoff_->ProcessEnded(absl::StrCat("the pytest of lease ", lease.lease_id(), " ended (", r->Describe(), ")"));
  }
  if (f.lost) return absl::FailedPreconditionError("the coordinator refused the results");
  if (fs::exists(files.report_path)) {
    absl::Status up = Upload(lease.lease_id(), files.report_path, "junit");
    if (!up.ok()) spdlog::warn("{}: uploading the JUnit report: {}", options_.name, ToStd(up.message()));
  }
  req.set_exit_code(r->exit_code);
  req.set_wall_s(absl::ToDoubleSeconds(r->wall));
  if (r->cancelled) {
    req.set_status(v1::CompleteLeaseRequest::CANCELLED);
  } else if (r->timed_out) {
    req.set_status(v1::CompleteLeaseRequest::TIMED_OUT);
    req.set_error(absl::StrCat("the shard ", r->Describe()));
  } else if (r->term_signal != 0 || r->exit_code > 1) {
    req.set_status(v1::CompleteLeaseRequest::CRASHED);
    req.set_error(absl::StrCat("the test runner ended with ", r->Describe()));
  } else {
    req.set_status(v1::CompleteLeaseRequest::OK);
  }
  req.set_stderr_tail(ReadTail(files.output_path, kTailBytes));
  return Complete(std::move(req));
}

absl::Status Agent::Complete(v1::CompleteLeaseRequest req) {
  req.set_agent_id(agent_id_);
  for (std::string& w : warnings_) req.add_warnings(std::move(w));
  warnings_.clear();
  if (handoff_) {
    for (const HandoffFinding& f : handoff_->Flush()) *req.add_handoff_findings() = ToWire(f);
  }
  v1::CompleteLeaseResponse resp;
  auto ctx = Context();
  return FromGrpc(stub_->CompleteLease(ctx.get(), req, &resp));
}

absl::Status Agent::Upload(const std::string& lease_id, const std::string& path, const std::string& kind) {
  v1::ArtifactChunk header;
  header.set_lease_id(lease_id);
  header.set_name(fs::path(path).filename().string());
  header.set_kind(kind);
  return Upload(std::move(header), path);
}

absl::Status Agent::Upload(v1::ArtifactChunk header, const std::string& path) {
  std::ifstream in;
  if (!path.empty()) {
    in.open(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  v1::UploadArtifactResponse resp;
  auto ctx = Context(absl::Minutes(5));
  auto writer = stub_->UploadArtifact(ctx.get(), &resp);
  v1::ArtifactChunk chunk = std::move(header);
  chunk.set_agent_id(agent_id_);
  std::string buf(kChunkBytes, '\0');
  bool first = true;
  while (in || first) {
    if (in.is_open()) in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    size_t n = in.is_open() ? static_cast<size_t>(in.gcount()) : 0;
    chunk.set_data(buf.data(), n);
    if (!writer->Write(chunk)) break;
    chunk.clear_name();
    chunk.clear_kind();
    chunk.clear_root();
    chunk.clear_error();
    first = false;
    if (n == 0) break;
  }
  writer->WritesDone();
  return FromGrpc(writer->Finish());
}

void Agent::SendCoverage() {
  v1::ArtifactChunk header;
  header.set_kind("coverage");
  header.set_name("coverage.xml");
  std::string root = fs::absolute(options_.root).lexically_normal().string();
  if (root.size() > 1 && root.back() == '/') root.pop_back();
  header.set_root(root);
  absl::StatusOr<std::string> report = coverage_->Report(runner_, Workdir(), ChildEnv(nullptr));
  std::string path;
  if (report.ok()) {
    path = *report;
  } else {
    spdlog::warn("{}: coverage: {}", options_.name, ToStd(report.status().message()));
    header.set_error(std::string(report.status().message()));
  }
  absl::Status s = Upload(std::move(header), path);
  if (!s.ok()) spdlog::warn("{}: uploading coverage: {}", options_.name, ToStd(s.message()));
}

}  // namespace testshard::agent

#include "agent/agent.h"

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/postgres_provisioner.h"
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
  channel_ = grpc::CreateCustomChannel(options_.coordinator, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::Coordinator::NewStub(channel_);
}

Agent::~Agent() {
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
  if (active_) {
    active_->cancel_reason = "the agent was stopped";
    active_->cancel.Cancel();
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
    auto ctx = Context(absl::Seconds(10));
    ctx->set_wait_for_ready(true);
    grpc::Status s = stub_->Register(ctx.get(), req, &resp);
    if (s.ok()) {
      agent_id_ = resp.agent_id();
      run_id_ = resp.run_id();
      spec_ = resp.run();
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
    eo.bin_dir = db.embedded().bin_dir();
    eo.base_dir = db.embedded().data_dir();
    eo.tcp = db.embedded().tcp();
    if (db.embedded().max_connections() > 0) eo.max_connections = db.embedded().max_connections();
    TS_ASSIGN_OR_RETURN(admin, options_.start_embedded_server(eo));
  } else {
    return absl::FailedPreconditionError("the run needs a database and this agent was given no server");
  }
  PostgresProvisionerOptions po;
  po.admin = admin;
  TemplateRecipe& recipe = po.recipe;
  for (const v1::Command& c : db.setup()) recipe.setup.emplace_back(c.argv().begin(), c.argv().end());
  recipe.env_templates.insert(db.env().begin(), db.env().end());
  recipe.env.insert(spec_.env().begin(), spec_.env().end());
  recipe.workdir = (fs::path(options_.root) / spec_.workdir()).lexically_normal().string();
  recipe.inputs.assign(db.template_inputs().begin(), db.template_inputs().end());
  recipe.role = db.role();
  recipe.log_dir = options_.work_dir;
  if (db.setup_timeout_ms() > 0) recipe.setup_timeout = absl::Milliseconds(db.setup_timeout_ms());
  po.project = db.project();
  po.run_id = run_id_;
  po.agent_id = agent_id_;
  // Clones kept ready only help stages that want fresh databases; the agent's own is made once.
  bool fresh = ResetFor("") != ResetPolicy::kAgent;
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
               report.built ? absl::StrCat("built in ", absl::FormatDuration(absl::Trunc(report.build_time, absl::Milliseconds(1))))
                            : std::string("found ready"),
               report.strategy);
  for (const std::string& w : report.warnings) spdlog::warn("{}: database: {}", options_.name, w);
  warnings_ = std::move(report.warnings);
  provisioner_ = std::move(provisioner);
  databases_ = std::make_unique<DatabaseScopes>(provisioner_.get());
  return absl::OkStatus();
}

ResetPolicy Agent::ResetFor(const std::string& stage) const {
  const v1::DatabaseSpec& db = spec_.database();
  auto it = db.stage_reset().find(stage);
  auto policy = ParseResetPolicy(it != db.stage_reset().end() ? it->second : db.reset());
  return policy.ok() ? *policy : ResetPolicy::kAgent;
}

absl::Status Agent::Run() {
  std::error_code ec;
  fs::create_directories(options_.work_dir, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot create ", options_.work_dir, ": ", ec.message()));
  TS_RETURN_IF_ERROR(Register());
  spdlog::info("{}: registered as {} in run {}", options_.name, agent_id_, run_id_);
  // A database that cannot be made is reported through the first lease, so the run shows why, and the agent then
  // stops taking work.
  database_error_ = PrepareDatabase();
  if (!database_error_.ok()) spdlog::error("{}: {}", options_.name, ToStd(database_error_.message()));

  std::thread heartbeat([this] { HeartbeatLoop(); });
  absl::Status result;
  absl::Time last_contact = absl::Now();
  while (true) {
    {
      absl::MutexLock l(&mu_);
      if (stopping_) break;
    }
    v1::LeaseRequest req;
    req.set_agent_id(agent_id_);
    v1::LeaseResponse resp;
    auto ctx = Context();
    ctx->set_wait_for_ready(true);
    grpc::Status s = stub_->Lease(ctx.get(), req, &resp);
    if (!s.ok()) {
      if (Retryable(s) && absl::Now() - last_contact < options_.connect_timeout) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        continue;
      }
      result = Annotate(FromGrpc(s), "asking for work");
      break;
    }
    last_contact = absl::Now();
    if (resp.has_done()) {
      spdlog::info("{}: done ({})", options_.name, resp.done().reason());
      break;
    }
    if (resp.has_wait()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::clamp<int64_t>(resp.wait().retry_after_ms(), 5, 5000)));
      continue;
    }
    absl::Status s2 = RunLease(resp.lease());
    if (!s2.ok()) spdlog::warn("{}: lease {}: {}", options_.name, resp.lease().lease_id(), ToStd(s2.message()));
    if (!database_error_.ok()) {
      result = database_error_;
      break;
    }
  }
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  heartbeat.join();
  return result;
}

void Agent::HeartbeatLoop() {
  while (true) {
    std::shared_ptr<Active> active;
    {
      absl::MutexLock l(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&stop), heartbeat_interval_);
      if (stopping_) return;
      active = active_;
    }
    v1::HeartbeatRequest req;
    req.set_agent_id(agent_id_);
    if (active) req.add_lease_ids(active->lease_id);
    v1::HeartbeatResponse resp;
    auto ctx = Context(heartbeat_interval_ * 3);
    grpc::Status s = stub_->Heartbeat(ctx.get(), req, &resp);
    if (!s.ok()) {
      spdlog::debug("{}: heartbeat failed: {}", options_.name, s.error_message());
      continue;
    }
    for (const v1::LeaseState& st : resp.leases()) {
      if (active && st.lease_id() == active->lease_id && st.cancelled()) {
        absl::MutexLock l(&mu_);
        if (!active->cancel.cancelled()) {
          spdlog::info("{}: lease {} cancelled: {}", options_.name, st.lease_id(), st.reason());
          active->cancel_reason = st.reason();
          active->cancel.Cancel();
        }
      }
    }
  }
}

absl::Status Agent::RunLease(const v1::Lease& lease) {
  auto active = std::make_shared<Active>();
  active->lease_id = lease.lease_id();
  {
    absl::MutexLock l(&mu_);
    active_ = active;
  }
  std::string dir = (fs::path(options_.work_dir) / lease.lease_id()).string();
  std::error_code ec;
  fs::create_directories(dir, ec);

  absl::Status status;
  std::optional<Database> database;
  if (database_error_.ok() && databases_) {
    // A database that cannot be had (the server died, the disk is full) fails this lease as an infrastructure
    // error, and the agent takes no more work.
    auto db = databases_->ForLease(lease.lease_id(), lease.stage(), ResetFor(lease.stage()));
    if (db.ok()) {
      database = std::move(*db);
    } else {
      database_error_ = db.status();
      spdlog::error("{}: {}", options_.name, ToStd(database_error_.message()));
    }
  }
  if (!database_error_.ok()) {
    v1::CompleteLeaseRequest req;
    req.set_lease_id(lease.lease_id());
    req.set_status(v1::CompleteLeaseRequest::INFRA_ERROR);
    req.set_error(absl::StrCat("agent ", options_.name, " has no database: ", database_error_.message()));
    status = Complete(std::move(req));
  } else {
    std::map<std::string, std::string> env(spec_.env().begin(), spec_.env().end());
    if (database) {
      auto db_env = RenderEnv({spec_.database().env().begin(), spec_.database().env().end()}, database->test);
      if (!db_env.ok()) return db_env.status();
      for (auto& [k, v] : *db_env) env[k] = v;
      env["TESTSHARD_DATABASE"] = database->name;
    }
    env["TESTSHARD_AGENT"] = options_.name;
    env["TESTSHARD_STAGE"] = lease.stage();
    env["TESTSHARD_LEASE"] = lease.lease_id();
    status = lease.kind() == v1::Lease::DISCOVER ? Discover(lease, dir, env) : RunTests(lease, dir, env);
  }
  if (databases_) databases_->Done(lease.lease_id());
  {
    absl::MutexLock l(&mu_);
    active_.reset();
  }
  return status;
}

absl::Status Agent::Discover(const v1::Lease& lease, const std::string& dir,
                             const std::map<std::string, std::string>& env) {
  std::shared_ptr<Active> active;
  {
    absl::MutexLock l(&mu_);
    active = active_;
  }
  ProcessSpec spec;
  spec.argv = adapter_->CollectArgv({spec_.command().begin(), spec_.command().end()}, lease.marker_expression());
  spec.cwd = (fs::path(options_.root) / spec_.workdir()).lexically_normal().string();
  spec.env = env;
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

absl::Status Agent::RunTests(const v1::Lease& lease, const std::string& dir,
                             const std::map<std::string, std::string>& env) {
  std::shared_ptr<Active> active;
  {
    absl::MutexLock l(&mu_);
    active = active_;
  }
  std::vector<std::string> ids(lease.test_ids().begin(), lease.test_ids().end());
  ShardFiles files{dir + "/report.xml", dir + "/output.log"};
  ProcessSpec spec;
  spec.argv = adapter_->RunArgv({spec_.command().begin(), spec_.command().end()}, ids, files, lease.maxfail());
  spec.cwd = (fs::path(options_.root) / spec_.workdir()).lexically_normal().string();
  spec.env = env;
  spec.stdout_path = spec.stderr_path = files.output_path;
  if (lease.timeout_ms() > 0) spec.timeout = absl::Milliseconds(lease.timeout_ms());

  v1::CompleteLeaseRequest req;
  req.set_lease_id(lease.lease_id());
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
  for (size_t i = 0; i < cases.size(); i += kResultsPerCall) {
    v1::ReportResultsRequest rr;
    rr.set_agent_id(agent_id_);
    rr.set_lease_id(lease.lease_id());
    for (size_t j = i; j < std::min(cases.size(), i + kResultsPerCall); ++j) *rr.add_results() = ToWire(cases[j]);
    v1::ReportResultsResponse resp;
    auto ctx = Context();
    grpc::Status s = stub_->ReportResults(ctx.get(), rr, &resp);
    if (!s.ok()) return Annotate(FromGrpc(s), "reporting results");
  }
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
  v1::CompleteLeaseResponse resp;
  auto ctx = Context();
  return FromGrpc(stub_->CompleteLease(ctx.get(), req, &resp));
}

absl::Status Agent::Upload(const std::string& lease_id, const std::string& path, const std::string& kind) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  v1::UploadArtifactResponse resp;
  auto ctx = Context(absl::Minutes(5));
  auto writer = stub_->UploadArtifact(ctx.get(), &resp);
  v1::ArtifactChunk chunk;
  chunk.set_agent_id(agent_id_);
  chunk.set_lease_id(lease_id);
  chunk.set_name(fs::path(path).filename().string());
  chunk.set_kind(kind);
  std::string buf(kChunkBytes, '\0');
  bool first = true;
  while (in || first) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    chunk.set_data(buf.data(), static_cast<size_t>(in.gcount()));
    if (!writer->Write(chunk)) break;
    chunk.clear_name();
    chunk.clear_kind();
    first = false;
    if (in.gcount() == 0) break;
  }
  writer->WritesDone();
  return FromGrpc(writer->Finish());
}

}  // namespace testshard::agent

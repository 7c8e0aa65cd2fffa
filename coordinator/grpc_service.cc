#include "coordinator/grpc_service.h"

#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/wire.h"
#include "spdlog/spdlog.h"

namespace testshard::coordinator {
namespace {

namespace fs = std::filesystem;

int64_t ToUnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpc(s));
  return r;
}

Completion FromWire(const v1::CompleteLeaseRequest& req) {
  Completion c;
  switch (req.status()) {
    case v1::CompleteLeaseRequest::OK: c.status = Completion::kOk; break;
    case v1::CompleteLeaseRequest::COLLECTION_ERROR: c.status = Completion::kCollectionError; break;
    case v1::CompleteLeaseRequest::TIMED_OUT: c.status = Completion::kTimedOut; break;
    case v1::CompleteLeaseRequest::CANCELLED: c.status = Completion::kCancelled; break;
    case v1::CompleteLeaseRequest::INFRA_ERROR: c.status = Completion::kInfraError; break;
    default: c.status = Completion::kCrashed; break;
  }
  c.exit_code = req.exit_code();
  c.error = req.error();
  c.stderr_tail = req.stderr_tail();
  c.collected.assign(req.collected_test_ids().begin(), req.collected_test_ids().end());
  c.groups.assign(req.collected_groups().begin(), req.collected_groups().end());
  c.unattempted.assign(req.unattempted_test_ids().begin(), req.unattempted_test_ids().end());
  c.wall_s = req.wall_s();
  c.worker_start_s = req.worker_start_s();
  return c;
}

}  // namespace

bool IsLocalAddress(const std::string& address) {
  return absl::StartsWith(address, "unix:") || absl::StartsWith(address, "127.") ||
         absl::StartsWith(address, "localhost:") || absl::StartsWith(address, "[::1]:") ||
         absl::StartsWith(address, "ipv4:127.");
}

CoordinatorService::CoordinatorService(RunState* run, ServiceOptions options)
    : run_(run), options_(std::move(options)) {}

absl::Status CoordinatorService::Authenticate(const grpc::CallbackServerContext* ctx) const {
  const auto& md = ctx->client_metadata();
  auto it = md.find(kAuthHeader);
  if (it == md.end()) return absl::UnauthenticatedError("missing authorization token");
  std::string_view value(it->second.data(), it->second.size());
  if (value.rfind("Bearer ", 0) != 0 || !ConstantTimeEquals(value.substr(7), options_.token)) {
    return absl::UnauthenticatedError("wrong authorization token");
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* CoordinatorService::Register(grpc::CallbackServerContext* ctx,
                                                       const v1::RegisterRequest* req, v1::RegisterResponse* resp) {
  if (absl::Status s = Authenticate(ctx); !s.ok()) return Finish(ctx, s);
  std::string id = run_->RegisterAgent(req->name());
  if (options_.coverage) options_.coverage->Registered(id, req->name());
  spdlog::debug("agent {} registered as {} from {}", req->name(), id, ctx->peer());
  resp->set_agent_id(id);
  resp->set_run_id(options_.run_id);
  *resp->mutable_run() = options_.spec;
  resp->set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* CoordinatorService::Lease(grpc::CallbackServerContext* ctx, const v1::LeaseRequest* req,
                                                    v1::LeaseResponse* resp) {
  if (absl::Status s = Authenticate(ctx); !s.ok()) return Finish(ctx, s);
  if (!run_->KnownAgent(req->agent_id())) {
    return Finish(ctx, absl::FailedPreconditionError(absl::StrCat("unknown agent ", req->agent_id(), "; register")));
  }
  Work w = run_->NextWork(req->agent_id());
  switch (w.kind) {
    case Work::kWait:
      resp->mutable_wait()->set_retry_after_ms(absl::ToInt64Milliseconds(w.retry_after));
      break;
    case Work::kDone:
      resp->mutable_done()->set_reason(w.reason);
      if (options_.coverage) options_.coverage->Dismissed(req->agent_id());
      break;
    case Work::kLease: {
      v1::Lease* l = resp->mutable_lease();
      l->set_lease_id(w.lease.id);
      l->set_kind(w.lease.kind == LeaseKind::kDiscover ? v1::Lease::DISCOVER : v1::Lease::RUN);
      l->set_stage(w.lease.stage);
      l->set_deadline_unix_ms(ToUnixMs(w.lease.deadline));
      l->set_marker_expression(w.lease.markers);
      for (const auto& id : w.lease.test_ids) l->add_test_ids(id);
      l->set_timeout_ms(absl::ToInt64Milliseconds(w.lease.timeout));
      l->set_maxfail(w.lease.maxfail);
      l->set_test_timeout_ms(absl::ToInt64Milliseconds(w.lease.test_timeout));
      l->set_group_marker(w.lease.group_marker);
      break;
    }
  }
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* CoordinatorService::Heartbeat(grpc::CallbackServerContext* ctx,
                                                        const v1::HeartbeatRequest* req,
                                                        v1::HeartbeatResponse* resp) {
  if (absl::Status s = Authenticate(ctx); !s.ok()) return Finish(ctx, s);
  std::vector<std::string> ids(req->lease_ids().begin(), req->lease_ids().end());
  for (const LeaseUpdate& u : run_->Heartbeat(req->agent_id(), ids)) {
    v1::LeaseState* st = resp->add_leases();
    st->set_lease_id(u.lease_id);
    st->set_deadline_unix_ms(ToUnixMs(u.deadline));
    st->set_cancelled(u.cancelled);
    st->set_reason(u.reason);
  }
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* CoordinatorService::ReportResults(grpc::CallbackServerContext* ctx,
                                                            const v1::ReportResultsRequest* req,
                                                            v1::ReportResultsResponse* resp) {
  if (absl::Status s = Authenticate(ctx); !s.ok()) return Finish(ctx, s);
  std::vector<TestCase> results;
  results.reserve(req->results_size());
  for (const v1::TestResult& r : req->results()) results.push_back(testshard::FromWire(r));
  std::string cancel_reason;
  absl::Status s = run_->ReportResults(req->agent_id(), req->lease_id(), results, &cancel_reason);
  if (s.ok()) resp->set_accepted(req->results_size());
  if (!cancel_reason.empty()) {
    resp->set_cancelled(true);
    resp->set_reason(cancel_reason);
  }
  return Finish(ctx, s);
}

grpc::ServerUnaryReactor* CoordinatorService::CompleteLease(grpc::CallbackServerContext* ctx,
                                                            const v1::CompleteLeaseRequest* req,
                                                            v1::CompleteLeaseResponse*) {
  if (absl::Status s = Authenticate(ctx); !s.ok()) return Finish(ctx, s);
  for (const std::string& w : req->warnings()) {
    // Every agent on a server finds the same thing; the user needs to read it once.
    absl::MutexLock l(&warned_mu_);
    if (warned_.insert(w).second) spdlog::warn("{}", w);
  }
  if (options_.handoff) {
    for (const v1::HandoffFinding& f : req->handoff_findings()) options_.handoff->Add(testshard::FromWire(f));
  }
  return Finish(ctx, run_->CompleteLease(req->agent_id(), req->lease_id(), coordinator::FromWire(*req)));
}

// Receives one artifact. The first chunk names it; the name and the lease are checked before any byte is written.
class CoordinatorService::ArtifactReader final : public grpc::ServerReadReactor<v1::ArtifactChunk> {
 public:
  ArtifactReader(CoordinatorService* service, grpc::CallbackServerContext* ctx, v1::UploadArtifactResponse* resp)
      : service_(service), resp_(resp) {
    if (absl::Status s = service_->Authenticate(ctx); !s.ok()) {
      Finish(ToGrpc(s));
      return;
    }
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client finished sending
      if (!out_.is_open()) {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty upload"));
        return;
      }
      out_.close();
      // Renamed into place only when complete, so a reader never sees half a file.
      std::error_code ec;
      fs::rename(partial_, final_, ec);
      if (ec) {
        Finish(grpc::Status(grpc::StatusCode::INTERNAL, "cannot store artifact: " + ec.message()));
        return;
      }
      if (coverage_agent_) {
        service_->options_.coverage->Received(*coverage_agent_, {final_.string(), root_, error_});
      }
      resp_->set_bytes(bytes_);
      Finish(grpc::Status::OK);
      return;
    }
    if (!out_.is_open()) {
      absl::Status s = Open();
      if (!s.ok()) {
        Finish(ToGrpc(s));
        return;
      }
    }
    bytes_ += static_cast<int64_t>(chunk_.data().size());
    if (bytes_ > kMaxArtifactBytes) {
      Fail(absl::ResourceExhaustedError(absl::StrCat("artifact larger than ", kMaxArtifactBytes, " bytes")));
      return;
    }
    out_.write(chunk_.data().data(), static_cast<std::streamsize>(chunk_.data().size()));
    if (!out_) {
      Fail(absl::InternalError("cannot write artifact"));
      return;
    }
    StartRead(&chunk_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Open() {
    TS_RETURN_IF_ERROR(CheckArtifactName(chunk_.name()));
    fs::path dir;
    if (chunk_.lease_id().empty()) {
      TS_RETURN_IF_ERROR(OpenAgentCoverage());
      dir = fs::path(service_->options_.artifact_dir) / "coverage" / chunk_.agent_id();
    } else {
      TS_RETURN_IF_ERROR(CheckArtifactName(chunk_.lease_id()));
      TS_RETURN_IF_ERROR(service_->run_->CheckLease(chunk_.agent_id(), chunk_.lease_id()));
      dir = fs::path(service_->options_.artifact_dir) / chunk_.lease_id();
    }
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
    final_ = dir / chunk_.name();
    partial_ = dir / (chunk_.name() + ".partial");
    out_.open(partial_, std::ios::binary | std::ios::trunc);
    if (!out_) return absl::InternalError(absl::StrCat("cannot write ", partial_.string()));
    return absl::OkStatus();
  }

  // An agent's final coverage report: no lease (the run may be over), once per agent, only when the run measures.
  absl::Status OpenAgentCoverage() {
    if (chunk_.kind() != "coverage") {
      return absl::InvalidArgumentError(absl::StrCat("an artifact of kind \"", chunk_.kind(), "\" needs a lease"));
    }
    if (!service_->options_.coverage) return absl::FailedPreconditionError("this run measures no coverage");
    TS_RETURN_IF_ERROR(CheckArtifactName(chunk_.agent_id()));
    if (!service_->run_->KnownAgent(chunk_.agent_id())) {
      return absl::FailedPreconditionError(absl::StrCat("unknown agent ", chunk_.agent_id()));
    }
    TS_RETURN_IF_ERROR(service_->options_.coverage->CheckUpload(chunk_.agent_id()));
    // Only stripped from the report's paths, never used to open anything; still, only an absolute path means a root.
    if (!chunk_.root().empty() && !fs::path(chunk_.root()).is_absolute()) {
      return absl::InvalidArgumentError(absl::StrCat("coverage root must be absolute, got \"", chunk_.root(), "\""));
    }
    coverage_agent_ = chunk_.agent_id();
    root_ = chunk_.root();
    error_ = chunk_.error().substr(0, 4096);
    return absl::OkStatus();
  }

  void Fail(const absl::Status& s) {
    out_.close();
    std::error_code ec;
    fs::remove(partial_, ec);
    Finish(ToGrpc(s));
  }

  CoordinatorService* service_;
  v1::UploadArtifactResponse* resp_;
  v1::ArtifactChunk chunk_;
  std::ofstream out_;
  fs::path partial_, final_;
  int64_t bytes_ = 0;
  std::optional<std::string> coverage_agent_;  // set for an agent's final coverage report
  std::string root_, error_;
};

grpc::ServerReadReactor<v1::ArtifactChunk>* CoordinatorService::UploadArtifact(grpc::CallbackServerContext* ctx,
                                                                               v1::UploadArtifactResponse* resp) {
  return new ArtifactReader(this, ctx, resp);
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(const std::string& listen, RunState* run,
                                                                            ServiceOptions options,
                                                                            const ServerTls& tls,
                                                                            bool allow_remote_plaintext) {
  bool plaintext = tls.cert_file.empty();
  if (plaintext && !IsLocalAddress(listen) && !allow_remote_plaintext) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing to serve plaintext gRPC on ", listen,
        ": give --tls-cert and --tls-key, listen on 127.0.0.1 or a unix: socket, or pass --allow-remote-plaintext "
        "on a trusted network"));
  }
  TS_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, MakeServerCredentials(tls));
  auto server = std::unique_ptr<CoordinatorServer>(new CoordinatorServer());
  server->service_ = std::make_unique<CoordinatorService>(run, std::move(options));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, credentials, &port);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || (port == 0 && !absl::StartsWith(listen, "unix:"))) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen));
  }
  if (absl::StartsWith(listen, "unix:")) {
    server->address_ = listen;
  } else {
    server->address_ = listen.substr(0, listen.rfind(':')) + ":" + std::to_string(port);
  }
  return server;
}

void CoordinatorServer::Shutdown() {
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    server_.reset();
  }
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace testshard::coordinator

// The gRPC face of a RunState: authenticates each call, translates messages, and stores uploaded artifacts.
// Reactions do no blocking work beyond RunState's short critical sections and artifact chunk writes.
#ifndef TESTSHARD_COORDINATOR_GRPC_SERVICE_H_
#define TESTSHARD_COORDINATOR_GRPC_SERVICE_H_

#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/wire.h"
#include "coordinator/coverage_collector.h"
#include "coordinator/handoff_report.h"
#include "coordinator/run_state.h"
#include "grpcpp/grpcpp.h"
#include "testshard/v1/coordinator.grpc.pb.h"

namespace testshard::coordinator {

struct ServiceOptions {
  std::string run_id;
  std::string token;         // every call must carry "authorization: Bearer <token>"
  std::string artifact_dir;  // uploads land in artifact_dir/<lease id>/<name>
  v1::RunSpec spec;          // what agents run
  absl::Duration heartbeat_interval = absl::Seconds(1);
  HandoffReport* handoff = nullptr;  // receives the agents' hand-off findings; must outlive the service
  // Receives the agents' final coverage reports (stored in artifact_dir/coverage/<agent id>/); null when the run
  // measures no coverage, and then such uploads are refused. Must outlive the service.
  CoverageCollector* coverage = nullptr;
};

class CoordinatorService final : public v1::Coordinator::CallbackService {
 public:
  // `run` must outlive the service.
  CoordinatorService(RunState* run, ServiceOptions options);

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx, const v1::RegisterRequest* req,
                                     v1::RegisterResponse* resp) override;
  grpc::ServerUnaryReactor* Lease(grpc::CallbackServerContext* ctx, const v1::LeaseRequest* req,
                                  v1::LeaseResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* ReportResults(grpc::CallbackServerContext* ctx, const v1::ReportResultsRequest* req,
                                          v1::ReportResultsResponse* resp) override;
  grpc::ServerReadReactor<v1::ArtifactChunk>* UploadArtifact(grpc::CallbackServerContext* ctx,
                                                             v1::UploadArtifactResponse* resp) override;
  grpc::ServerUnaryReactor* CompleteLease(grpc::CallbackServerContext* ctx, const v1::CompleteLeaseRequest* req,
                                          v1::CompleteLeaseResponse* resp) override;

  // OK when the call carries the token and, for agent calls, an agent id this run issued.
  absl::Status Authenticate(const grpc::CallbackServerContext* ctx) const;

 private:
  class ArtifactReader;

  RunState* const run_;
  const ServiceOptions options_;
  absl::Mutex warned_mu_;
  std::set<std::string> warned_ ABSL_GUARDED_BY(warned_mu_);  // agents' warnings already shown, shown once each
};

// A listening server.
class CoordinatorServer {
 public:
  // Without TLS, only loopback or unix-socket addresses unless `allow_remote_plaintext`.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(const std::string& listen, RunState* run,
                                                                  ServiceOptions options, const ServerTls& tls,
                                                                  bool allow_remote_plaintext);
  ~CoordinatorServer();
  // The address agents dial, with the real port when the listen port was 0.
  const std::string& address() const { return address_; }
  void Shutdown();

 private:
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

// True for 127.0.0.0/8, ::1, localhost and unix: addresses.
bool IsLocalAddress(const std::string& address);

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_GRPC_SERVICE_H_

// The coordinator's gRPC face for the agents' final coverage reports: uploads without a lease, checked before any
// byte is written. A real server on loopback port 0.
#include "coordinator/grpc_service.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace testshard::coordinator {
namespace {

namespace fs = std::filesystem;

class CoverageUploadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("grpc-service-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    RunOptions ro;
    StageConfig stage;
    stage.name = "all";
    ro.stages = {stage};
    run_ = std::make_unique<RunState>(ro, std::make_unique<EqualCountPlanner>(), RealClock::Get());
    collector_ = std::make_unique<CoverageCollector>(CoverageOutputs{"/project", (dir_ / "out.xml").string(), ""});
    ServiceOptions so;
    so.run_id = "run1";
    so.token = "secret";
    so.artifact_dir = (dir_ / "artifacts").string();
    so.coverage = collector_.get();
    auto server = CoordinatorServer::Start("127.0.0.1:0", run_.get(), so, ServerTls{}, false);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = v1::Coordinator::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
    v1::RegisterRequest req;
    req.set_name("local-1");
    v1::RegisterResponse resp;
    auto ctx = Context();
    ASSERT_TRUE(stub_->Register(ctx.get(), req, &resp).ok());
    agent_id_ = resp.agent_id();
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }
  std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata(kAuthHeader, "Bearer secret");
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return ctx;
  }
  grpc::Status Upload(v1::ArtifactChunk first, const std::string& data) {
    v1::UploadArtifactResponse resp;
    auto ctx = Context();
    auto writer = stub_->UploadArtifact(ctx.get(), &resp);
    first.set_data(data);
    writer->Write(first);
    writer->WritesDone();
    return writer->Finish();
  }
  v1::ArtifactChunk Coverage(const std::string& agent_id) {
    v1::ArtifactChunk c;
    c.set_agent_id(agent_id);
    c.set_name("coverage.xml");
    c.set_kind("coverage");
    c.set_root("/agent/checkout");
    return c;
  }

  fs::path dir_;
  std::unique_ptr<RunState> run_;
  std::unique_ptr<CoverageCollector> collector_;
  std::unique_ptr<CoordinatorServer> server_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::string agent_id_;
};

TEST_F(CoverageUploadTest, AnAgentsReportIsStoredUnderItsIdAndCountedOnce) {
  ASSERT_TRUE(Upload(Coverage(agent_id_), "<coverage/>").ok());
  EXPECT_TRUE(fs::exists(dir_ / "artifacts" / "coverage" / agent_id_ / "coverage.xml"));
  EXPECT_TRUE(collector_->Missing().empty());
  EXPECT_EQ(Upload(Coverage(agent_id_), "<coverage/>").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(CoverageUploadTest, WireNamesAreCheckedBeforeAnythingIsWritten) {
  v1::ArtifactChunk bad_name = Coverage(agent_id_);
  bad_name.set_name("../../etc/passwd");
  EXPECT_EQ(Upload(bad_name, "x").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Upload(Coverage("../" + agent_id_), "x").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Upload(Coverage("a999"), "x").error_code(), grpc::StatusCode::FAILED_PRECONDITION);  // unknown agent
  v1::ArtifactChunk relative_root = Coverage(agent_id_);
  relative_root.set_root("../elsewhere");
  EXPECT_EQ(Upload(relative_root, "x").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::ArtifactChunk junit = Coverage(agent_id_);
  junit.set_kind("junit");  // only coverage may come without a lease
  EXPECT_EQ(Upload(junit, "x").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_FALSE(fs::exists(dir_ / "artifacts" / "coverage"));
  EXPECT_FALSE(fs::exists(dir_ / "etc"));
}

TEST_F(CoverageUploadTest, AnAgentWithoutAReportSaysWhy) {
  v1::ArtifactChunk none = Coverage(agent_id_);
  none.set_error("coverage.py is not installed");
  ASSERT_TRUE(Upload(none, "").ok());
  CoverageResult r = collector_->Finish();
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("local-1 (" + agent_id_ + ") has no coverage report: coverage.py is not installed"),
            std::string::npos);
}

}  // namespace
}  // namespace testshard::coordinator

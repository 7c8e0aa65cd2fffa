// Conversions between the wire messages and the structured types the logic works on, plus the auth and
// artifact-name rules both ends share.
#ifndef TESTSHARD_COMMON_WIRE_H_
#define TESTSHARD_COMMON_WIRE_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/handoff_finding.h"
#include "common/test_result.h"
#include "grpcpp/grpcpp.h"
#include "testshard/v1/coordinator.pb.h"

namespace testshard {

inline constexpr char kAuthHeader[] = "authorization";
inline constexpr int kMaxMessageBytes = 32 << 20;
inline constexpr int64_t kMaxArtifactBytes = 512LL << 20;

v1::TestResult ToWire(const TestCase& tc);
TestCase FromWire(const v1::TestResult& r);

v1::HandoffFinding ToWire(const HandoffFinding& f);
HandoffFinding FromWire(const v1::HandoffFinding& f);

grpc::Status ToGrpc(const absl::Status& s);
absl::Status FromGrpc(const grpc::Status& s);

// An artifact name from the wire may become a file: one plain component of [A-Za-z0-9._-], not "." or "..",
// at most 128 bytes. InvalidArgument otherwise.
absl::Status CheckArtifactName(std::string_view name);

// Compares in time independent of where the strings differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// Reads the token from TESTSHARD_TOKEN, else from `token_file` when given. Tokens never go on a command line,
// where any local user could read them from /proc.
absl::StatusOr<std::string> LoadToken(const std::string& token_file);

// 32 random bytes from the kernel, hex encoded.
std::string RandomToken();

// Transport security for the coordinator's port. Empty cert = plaintext.
struct ServerTls {
  std::string cert_file;       // PEM certificate chain
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // set: mutual TLS, agents must present a certificate signed by this CA
};
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerTls& tls);

// How an agent dials. Plaintext unless `enabled`; roots from ca_file, else the system's.
struct ClientTls {
  bool enabled = false;
  std::string ca_file;
  std::string cert_file;       // client certificate for mutual TLS
  std::string key_file;
};
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const ClientTls& tls);

}  // namespace testshard

#endif  // TESTSHARD_COMMON_WIRE_H_

#include "common/wire.h"

#include <sys/random.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace testshard {
namespace {

v1::TestResult::Outcome OutcomeToWire(Outcome o) {
  switch (o) {
    case Outcome::kPassed: return v1::TestResult::PASSED;
    case Outcome::kFailed: return v1::TestResult::FAILED;
    case Outcome::kError: return v1::TestResult::ERROR;
    case Outcome::kSkipped: return v1::TestResult::SKIPPED;
    case Outcome::kNotRun: return v1::TestResult::NOT_RUN;
  }
  return v1::TestResult::ERROR;
}

Outcome OutcomeFromWire(v1::TestResult::Outcome o) {
  switch (o) {
    case v1::TestResult::PASSED: return Outcome::kPassed;
    case v1::TestResult::FAILED: return Outcome::kFailed;
    case v1::TestResult::SKIPPED: return Outcome::kSkipped;
    case v1::TestResult::NOT_RUN: return Outcome::kNotRun;
    default: return Outcome::kError;  // unknown or unspecified is never a pass
  }
}

}  // namespace

v1::TestResult ToWire(const TestCase& tc) {
  v1::TestResult r;
  r.set_test_id(tc.id);
  r.set_outcome(OutcomeToWire(tc.result.outcome));
  r.set_duration_s(tc.result.time_s);
  r.set_message(tc.result.message);
  r.set_details(tc.result.details);
  r.set_system_out(tc.result.system_out);
  r.set_system_err(tc.result.system_err);
  r.set_classname(tc.classname);
  r.set_name(tc.name);
  for (const auto& [name, value] : tc.properties) {
    v1::Property* p = r.add_properties();
    p->set_name(name);
    p->set_value(value);
  }
  return r;
}

TestCase FromWire(const v1::TestResult& r) {
  TestCase tc;
  tc.id = r.test_id();
  tc.classname = r.classname();
  tc.name = r.name();
  tc.result.outcome = OutcomeFromWire(r.outcome());
  tc.result.time_s = r.duration_s();
  tc.result.message = r.message();
  tc.result.details = r.details();
  tc.result.system_out = r.system_out();
  tc.result.system_err = r.system_err();
  for (const v1::Property& p : r.properties()) tc.properties.emplace_back(p.name(), p.value());
  return tc;
}

v1::HandoffFinding ToWire(const HandoffFinding& f) {
  v1::HandoffFinding w;
  switch (f.kind) {
    case HandoffFinding::Kind::kForeignDatabase: w.set_kind(v1::HandoffFinding::FOREIGN_DATABASE); break;
    case HandoffFinding::Kind::kLeftoverTables: w.set_kind(v1::HandoffFinding::LEFTOVER_TABLES); break;
    case HandoffFinding::Kind::kNote: w.set_kind(v1::HandoffFinding::NOTE); break;
  }
  w.set_agent(f.agent);
  w.set_database(f.database);
  w.set_own_database(f.own_database);
  w.set_stage(f.stage);
  w.set_first_test(f.first_test);
  w.set_sessions(f.sessions);
  w.set_message(f.message);
  return w;
}

HandoffFinding FromWire(const v1::HandoffFinding& w) {
  HandoffFinding f;
  switch (w.kind()) {
    case v1::HandoffFinding::FOREIGN_DATABASE: f.kind = HandoffFinding::Kind::kForeignDatabase; break;
    case v1::HandoffFinding::LEFTOVER_TABLES: f.kind = HandoffFinding::Kind::kLeftoverTables; break;
    default: f.kind = HandoffFinding::Kind::kNote; break;  // an unknown kind from a newer agent: shown, not fatal
  }
  f.agent = w.agent();
  f.database = w.database();
  f.own_database = w.own_database();
  f.stage = w.stage();
  f.first_test = w.first_test();
  f.sessions = w.sessions();
  f.message = w.message();
  return f;
}

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

absl::Status CheckArtifactName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 128 && name != "." && name != "..";
  for (char c : name) {
    ok &= (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-';
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("artifact name \"", absl::CHexEscape(ToAbsl(name.substr(0, 200))),
                   "\" refused: use one plain file name of letters, digits, '.', '_' and '-'"));
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

absl::StatusOr<std::string> LoadToken(const std::string& token_file) {
  std::string token;
  if (const char* env = getenv("TESTSHARD_TOKEN"); env && *env) {
    token = env;
  } else if (!token_file.empty()) {
    std::ifstream in(token_file);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read token file ", token_file));
    std::getline(in, token);
  } else {
    return absl::NotFoundError("no token: set TESTSHARD_TOKEN or pass --token-file");
  }
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.size() < 16) return absl::InvalidArgumentError("the token is shorter than 16 characters");
  return token;
}

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the ", what, " ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a PEM file (", what, ")"));
  }
  return ss.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerTls& tls) {
  if (tls.cert_file.empty() && tls.key_file.empty()) return grpc::InsecureServerCredentials();
  if (tls.cert_file.empty() || tls.key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  TS_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(tls.cert_file, "certificate"));
  TS_ASSIGN_OR_RETURN(pair.private_key, ReadPem(tls.key_file, "private key"));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.client_ca_file.empty()) {
    TS_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(tls.client_ca_file, "client CA"));
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const ClientTls& tls) {
  if (!tls.enabled) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  if (!tls.ca_file.empty()) {
    TS_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(tls.ca_file, "CA"));
  }
  if (!tls.cert_file.empty() || !tls.key_file.empty()) {
    if (tls.cert_file.empty() || tls.key_file.empty()) {
      return absl::InvalidArgumentError("a client certificate needs both --tls-cert and --tls-key");
    }
    TS_ASSIGN_OR_RETURN(options.pem_cert_chain, ReadPem(tls.cert_file, "certificate"));
    TS_ASSIGN_OR_RETURN(options.pem_private_key, ReadPem(tls.key_file, "private key"));
  }
  return grpc::SslCredentials(options);
}

std::string RandomToken() {
  unsigned char buf[32];
  size_t got = 0;
  while (got < sizeof buf) {
    ssize_t n = getrandom(buf + got, sizeof buf - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  std::string out;
  for (unsigned char c : buf) out += absl::StrFormat("%02x", c);
  return out;
}

}  // namespace testshard

// `testshard agent`: dials a coordinator and runs its leases until the run is done.
#include <signal.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "agent/agent.h"
#include "common/postgres/embedded_postgres.h"
#include "common/status.h"
#include "common/wire.h"
#include "coordinator/main/commands.h"
#include "coordinator/main/session.h"
#include "spdlog/spdlog.h"

namespace testshard {
namespace {

namespace fs = std::filesystem;

struct AgentFlags {
  std::string coordinator;
  std::string root = ".";
  std::string name;
  std::string work_dir;
  std::string token_file;
  std::string database_url;
  int connect_timeout_s = 60;
  ClientTls tls;
};

int RunAgent(const AgentFlags& flags) {
  sigset_t signals = BlockTerminationSignals();
  // SIGUSR1 wakes the signal thread when the agent ends on its own.
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto token = LoadToken(flags.token_file);
  if (!token.ok()) {
    std::fprintf(stderr, "testshard agent: %s\n", std::string(token.status().message()).c_str());
    return 4;
  }
  // The token is the agent's credential, not the tests': the processes it starts inherit the environment.
  unsetenv("TESTSHARD_TOKEN");
  auto credentials = MakeChannelCredentials(flags.tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "testshard agent: %s\n", std::string(credentials.status().message()).c_str());
    return 4;
  }
  agent::AgentOptions o;
  o.credentials = *credentials;
  o.connect_timeout = absl::Seconds(flags.connect_timeout_s);
  o.coordinator = flags.coordinator;
  o.token = *token;
  char host[256] = "agent";
  gethostname(host, sizeof host - 1);
  o.name = flags.name.empty() ? absl::StrCat(host, "-", getpid()) : flags.name;
  o.root = fs::absolute(flags.root).lexically_normal().string();
  o.work_dir = flags.work_dir.empty() ? absl::StrCat(o.root, "/.testshard/agent-", getpid()) : flags.work_dir;
  if (!flags.database_url.empty()) {
    auto admin = pg::ParseConnection(flags.database_url);
    if (!admin.ok()) {
      std::fprintf(stderr, "testshard agent: --database-url: %s\n", std::string(admin.status().message()).c_str());
      return 4;
    }
    o.database_admin = *admin;
  }
  std::unique_ptr<pg::EmbeddedPostgres> postgres;
  o.start_embedded_server = [&postgres](const pg::EmbeddedOptions& options) -> absl::StatusOr<pg::Connection> {
    TS_ASSIGN_OR_RETURN(postgres, pg::EmbeddedPostgres::Start(options));
    return options.tcp ? *postgres->admin_tcp() : postgres->admin();
  };
  PosixProcessRunner runner;
  agent::Agent a(o, &runner);
  // Signals arrive here, not in the agent's threads: cancel the lease in hand and leave.
  std::atomic<bool> signalled{false};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR1) return;
    spdlog::info("{}: signal {}, stopping", o.name, sig);
    signalled = true;
    a.Stop();
  });
  absl::Status s = a.Run();
  pthread_kill(waiter.native_handle(), SIGUSR1);
  waiter.join();
  // A stopped agent leaves at once; one that finished keeps the templates it built for its next run.
  if (postgres && s.ok() && !signalled) {
    absl::Status saved = postgres->SaveSnapshot();
    if (!saved.ok()) spdlog::warn("{}: templates not kept for the next run: {}", o.name, ToStd(saved.message()));
  }
  if (!s.ok()) {
    spdlog::error("{}: {}", o.name, ToStd(s.message()));
    return 3;
  }
  return 0;
}

}  // namespace

void AddAgentCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<AgentFlags>();
  CLI::App* cmd = app.add_subcommand("agent", "Dial a coordinator and run its shards (token from TESTSHARD_TOKEN "
                                              "or --token-file)");
  cmd->add_option("--coordinator", flags->coordinator, "coordinator address (host:port or unix:/path)")->required();
  cmd->add_option("--root", flags->root, "the project checkout the config's paths are relative to")->capture_default_str();
  cmd->add_option("--name", flags->name, "name shown in logs and reports (default host-pid)");
  cmd->add_option("--work-dir", flags->work_dir, "scratch directory for reports and logs");
  cmd->add_option("--token-file", flags->token_file, "file holding the token");
  cmd->add_option("--database-url", flags->database_url,
                  "admin URL of the PostgreSQL server to clone databases on (default: the run's, else embedded)");
  cmd->add_option("--connect-timeout", flags->connect_timeout_s,
                  "seconds to keep retrying an unreachable coordinator")->capture_default_str();
  cmd->add_flag("--tls", flags->tls.enabled, "dial the coordinator over TLS (system roots unless --tls-ca)");
  cmd->add_option("--tls-ca", flags->tls.ca_file, "PEM CA that signed the coordinator's certificate (implies --tls)");
  cmd->add_option("--tls-cert", flags->tls.cert_file, "PEM client certificate for mutual TLS (implies --tls)");
  cmd->add_option("--tls-key", flags->tls.key_file, "PEM private key for --tls-cert");
  cmd->callback([flags, exit_code] {
    flags->tls.enabled |= !flags->tls.ca_file.empty() || !flags->tls.cert_file.empty();
    *exit_code = RunAgent(*flags);
  });
}

}  // namespace testshard

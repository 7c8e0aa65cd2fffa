// `testshard run` (a coordinator plus local agents, with an embedded PostgreSQL) and `testshard coordinator`
// (a coordinator that agents on other machines dial).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/history/history_store.h"
#include "common/postgres/embedded_postgres.h"
#include "common/process.h"
#include "common/status.h"
#include "common/wire.h"
#include "coordinator/main/commands.h"
#include "coordinator/main/session.h"
#include "coordinator/run_journal_backends.h"
#include "spdlog/spdlog.h"

namespace testshard {
namespace {

namespace fs = std::filesystem;

struct RunFlags {
  std::string config;
  int agents = 0;
  std::string junit_out;
  std::string cobertura_out;  // override [coverage] cobertura / lcov, and turn coverage on
  std::string lcov_out;
  std::string branch;
  // coordinator only
  std::string listen = "127.0.0.1:7070";
  std::string token_file;
  std::string database_url;
  bool allow_remote_plaintext = false;
  ServerTls tls;
  std::string resume;  // coordinator: run id to continue
  double lease_ttl_s = 15;
  double heartbeat_s = 1;
};

void AddLeaseFlags(CLI::App* cmd, RunFlags* flags) {
  cmd->add_option("--lease-ttl", flags->lease_ttl_s,
                  "seconds without a heartbeat before an agent's shard is given to another agent")
      ->capture_default_str()->check(CLI::Range(0.5, 3600.0));
  cmd->add_option("--heartbeat", flags->heartbeat_s, "seconds between agent heartbeats")
      ->capture_default_str()->check(CLI::Range(0.05, 600.0));
}

void ApplyLeaseFlags(const RunFlags& flags, SessionOptions* so) {
  so->lease_ttl = absl::Seconds(flags.lease_ttl_s);
  so->heartbeat = absl::Seconds(flags.heartbeat_s);
}

absl::StatusOr<Config> Load(const RunFlags& flags) {
  std::string path = flags.config;
  if (path.empty()) {
    TS_ASSIGN_OR_RETURN(path, FindConfig(fs::current_path().string()));
  }
  TS_ASSIGN_OR_RETURN(Config config, LoadConfig(path));
  // Like --junit-out, relative to where testshard was started.
  for (auto [flag, out] : {std::pair{&flags.cobertura_out, &config.coverage.cobertura},
                           std::pair{&flags.lcov_out, &config.coverage.lcov}}) {
    if (flag->empty()) continue;
    config.coverage.enabled = true;
    *out = fs::absolute(*flag).lexically_normal().string();
  }
  return config;
}

void AddCoverageFlags(CLI::App* cmd, RunFlags* flags) {
  cmd->add_option("--cobertura-out", flags->cobertura_out,
                  "measure coverage and write the merged Cobertura XML here (overrides [coverage] cobertura)");
  cmd->add_option("--lcov-out", flags->lcov_out,
                  "measure coverage and write the merged lcov tracefile here (overrides [coverage] lcov)");
}

std::string ProjectDir(const Config& c) { return fs::absolute(c.path).parent_path().string(); }

// .testshard/runs/<run id>, with `latest` pointing at it; only the newest few runs are kept.
std::string MakeRunDir(const Config& c, const std::string& run_id) {
  fs::path runs = fs::path(ProjectDir(c)) / ".testshard" / "runs";
  std::error_code ec;
  fs::create_directories(runs / run_id, ec);
  std::vector<fs::directory_entry> old;
  for (const auto& e : fs::directory_iterator(runs, ec)) {
    if (e.is_directory() && !e.is_symlink() && e.path().filename() != run_id) old.push_back(e);
  }
  std::sort(old.begin(), old.end(), [](const auto& a, const auto& b) {
    return a.last_write_time() > b.last_write_time();
  });
  for (size_t i = 4; i < old.size(); ++i) fs::remove_all(old[i].path(), ec);
  fs::remove(runs / "latest", ec);
  fs::create_directory_symlink(run_id, runs / "latest", ec);
  return (runs / run_id).string();
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "testshard: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument || s.code() == absl::StatusCode::kNotFound ? 4 : 3;
}

// Ends the run after a signal: cancel, give agents a moment to report what finished, then stop waiting.
void Interrupt(Session& session, int sig, const std::function<bool()>& agents_gone) {
  std::printf("\ntestshard: %s, cancelling (again to stop at once)\n", sig == SIGINT ? "interrupted" : "terminated");
  session.run().Cancel(sig == SIGINT ? "interrupted (Ctrl-C)" : "terminated");
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  session.Watch([&] { return agents_gone() || absl::Now() > deadline; });
}

int RunLocal(const RunFlags& flags) {
  sigset_t signals = BlockTerminationSignals();
  (void)signals;
  auto config = Load(flags);
  if (!config.ok()) return Fail(config.status());
  int agents = flags.agents > 0 ? flags.agents : config->agents > 0 ? config->agents : static_cast<int>(std::thread::hardware_concurrency());
  agents = std::max(1, agents);
  std::string project = ProjectDir(*config);

  // One embedded server for the machine; every agent clones the template on it.
  std::unique_ptr<pg::EmbeddedPostgres> postgres;
  std::string server_url;
  if (config->database.mode == DatabaseConfig::Mode::kEmbedded) {
    pg::EmbeddedOptions po;
    // Relative paths are the project's, wherever testshard was started from.
    auto in_project = [&](const std::string& p) {
      return p.empty() ? p : (fs::path(project) / p).lexically_normal().string();
    };
    po.bin_dir = in_project(config->database.bin_dir);
    po.base_dir = in_project(config->database.data_dir);
    po.tcp = config->database.tcp || config->database.transport == DatabaseConfig::Transport::kTcp;
    po.max_connections = config->database.max_connections > 0 ? config->database.max_connections
                                                                : std::max(100, 20 * agents + 20);
    if (config->database.KeepsTemplates()) po.snapshot = project;
    auto started = pg::EmbeddedPostgres::Start(po);
    if (!started.ok()) return Fail(Annotate(started.status(), "starting the embedded PostgreSQL"));
    postgres = std::move(*started);
    // The agents clone, and hand over, in the form the config asks for.
    server_url = po.tcp ? postgres->admin_tcp()->Url() : postgres->admin().Url();
    std::printf("testshard: embedded PostgreSQL ready in %s (%s)\n",
                absl::FormatDuration(absl::Trunc(postgres->startup_time(), absl::Milliseconds(1))).c_str(),
                postgres->dir().c_str());
  } else if (config->database.mode == DatabaseConfig::Mode::kServer) {
    server_url = config->database.url;
  }

  SessionOptions so;
  so.agents = agents;
  so.branch = DetectBranch(flags.branch, project);
  so.token = RandomToken();
  so.server_url = server_url;
  so.run_id = RandomToken().substr(0, 12);
  so.run_dir = MakeRunDir(*config, so.run_id);
  ApplyLeaseFlags(flags, &so);
  auto session = Session::Start(*config, so);
  if (!session.ok()) return Fail(session.status());
  std::printf("testshard: run %s, %zu stage(s), %d agent(s), branch '%s'\n", (*session)->run_id().c_str(),
              config->stages.size(), agents, so.branch.c_str());

  // Agents are separate processes, exactly as on other machines: a crash in one cannot take the run down.
  std::vector<Subprocess> children;
  for (int i = 0; i < agents; ++i) {
    ProcessSpec spec;
    spec.argv = {"/proc/self/exe", "agent", "--coordinator", (*session)->address(), "--root", project,
                 "--name", absl::StrCat("local-", i + 1), "--work-dir", absl::StrCat(so.run_dir, "/agent-", i + 1)};
    spec.env["TESTSHARD_TOKEN"] = so.token;
    spec.stdout_path = spec.stderr_path = absl::StrCat(so.run_dir, "/agent-", i + 1, ".log");
    spec.parent_death_signal = SIGTERM;
    auto child = Subprocess::Start(spec);
    if (!child.ok()) return Fail(child.status());
    children.push_back(std::move(*child));
  }
  std::vector<bool> exited(children.size(), false);
  auto agents_gone = [&] {
    bool all = true;
    for (size_t i = 0; i < children.size(); ++i) {
      ProcessResult r;
      if (!exited[i] && children[i].Poll(&r)) {
        exited[i] = true;
        // Its shard need not wait out the lease: hand it to the others now.
        (*session)->run().AgentGone(absl::StrCat("local-", i + 1));
        if (!r.ok() && !(*session)->run().done()) {
          std::string log = absl::StrCat(so.run_dir, "/agent-", i + 1, ".log");
          std::fprintf(stderr, "\ntestshard: agent local-%zu stopped (%s); its log ends:\n%s\n", i + 1,
                       r.Describe().c_str(), ReadTail(log, 2000).c_str());
        }
      }
      all &= exited[i];
    }
    return all;
  };
  int sig = (*session)->Watch(agents_gone);
  if (sig) {
    Interrupt(**session, sig, agents_gone);
  } else if (!(*session)->run().done()) {
    (*session)->run().Cancel("every agent stopped before the run ended (see .testshard/runs/latest/agent-*.log)");
  }
  // Agents leave when told the run is done (after sending their coverage); give them a moment, then make sure.
  absl::Time deadline = absl::Now() + absl::Seconds(10) +
                        (config->coverage.enabled ? config->coverage.upload_timeout : absl::ZeroDuration());
  while (!agents_gone() && absl::Now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (Subprocess& c : children) c.SignalGroup(SIGTERM);
  children.clear();
  std::string junit = flags.junit_out.empty() ? "testshard-report.xml" : flags.junit_out;
  int code = (*session)->Finish(junit);
  if (postgres && !sig) {
    // An interrupted run leaves at once, keeping nothing.
    absl::Status saved = postgres->SaveSnapshot();
    if (!saved.ok()) {
      std::fprintf(stderr, "testshard: warning: templates not kept for the next run: %s\n",
                   std::string(saved.message()).c_str());
    }
  }
  return code;
}

int RunCoordinator(const RunFlags& flags) {
  BlockTerminationSignals();
  auto config = Load(flags);
  if (!config.ok()) return Fail(config.status());
  std::string token;
  auto loaded = LoadToken(flags.token_file);
  if (loaded.ok()) {
    token = *loaded;
  } else if (flags.token_file.empty()) {
    // No token given: make one and leave it where the operator can hand it to agents.
    token = RandomToken();
    std::string path = ProjectDir(*config) + "/.testshard/token";
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path) << token << "\n";
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
    std::printf("testshard: agents authenticate with the token in %s\n", path.c_str());
  } else {
    return Fail(loaded.status());
  }
  SessionOptions so;
  so.listen = flags.listen;
  so.allow_remote_plaintext = flags.allow_remote_plaintext;
  so.tls = flags.tls;
  so.agents = std::max(1, flags.agents > 0 ? flags.agents : config->agents);
  so.branch = DetectBranch(flags.branch, ProjectDir(*config));
  so.token = token;
  so.server_url = !flags.database_url.empty() ? flags.database_url
                  : config->database.mode == DatabaseConfig::Mode::kServer ? config->database.url : "";
  so.resume = !flags.resume.empty();
  so.run_id = so.resume ? flags.resume : RandomToken().substr(0, 12);
  if (so.resume) {
    // The journal is wherever the history store is (run_journal_backends.h); for file: stores, the run's dir.
    const std::string history_spec = HistoryStoreSpec(*config);
    const std::string runs = ProjectDir(*config) + "/.testshard/runs";
    absl::StatusOr<std::vector<coordinator::JournalEvent>> events =
        CheckArtifactName(so.run_id).ok()
            ? coordinator::ReadRunJournal(history_spec, config->project, so.run_id, runs + "/" + so.run_id)
            : absl::NotFoundError("not a run id");
    if (absl::IsNotFound(events.status())) {
      auto parsed = history::ParseStoreSpec(history_spec);
      const bool file = parsed.ok() && parsed->kind == history::StoreSpec::kFile;
      // For a server, its message names it (without its password).
      const std::string where = file ? " under " + runs : ": " + std::string(events.status().message());
      return Fail(absl::NotFoundError(absl::StrCat("no run ", so.run_id, " to resume", where)));
    }
    if (!events.ok()) return Fail(Annotate(events.status(), "reading the journal of run " + so.run_id));
    so.resume_events = *std::move(events);
  }
  so.run_dir = MakeRunDir(*config, so.run_id);
  ApplyLeaseFlags(flags, &so);
  auto session = Session::Start(*config, so);
  if (!session.ok()) return Fail(session.status());
  std::printf("testshard: coordinator for run %s listening on %s; start agents with\n"
              "  TESTSHARD_TOKEN=... testshard agent --coordinator %s --root <checkout>\n",
              (*session)->run_id().c_str(), (*session)->address().c_str(), (*session)->address().c_str());
  std::fflush(stdout);
  int sig = (*session)->Watch([] { return false; });
  if (sig) Interrupt(**session, sig, [] { return false; });
  // Keep serving until every agent has heard that the run is over, so none mistakes the shutdown for a crash.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!(*session)->run().AgentsDismissed() && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  (*session)->WaitForCoverage(config->coverage.upload_timeout);
  std::string junit = flags.junit_out.empty() ? "testshard-report.xml" : flags.junit_out;
  return (*session)->Finish(junit);
}

}  // namespace

void AddRunCommands(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<RunFlags>();
  CLI::App* run = app.add_subcommand("run", "Run every stage on this machine: a coordinator, N local agents and an "
                                            "embedded PostgreSQL");
  run->add_option("--config", flags->config, "testshard.toml or pyproject.toml (default: found in the current dir)");
  run->add_option("--agents", flags->agents, "local agents (default: config, else one per core)")->check(CLI::Range(1, 1024));
  run->add_option("--junit-out", flags->junit_out, "where to write the merged JUnit XML (default testshard-report.xml)");
  run->add_option("--branch", flags->branch, "branch for stages limited to branches (default: CI env, else git)");
  AddCoverageFlags(run, flags.get());
  AddLeaseFlags(run, flags.get());
  run->callback([flags, exit_code] { *exit_code = RunLocal(*flags); });

  CLI::App* coord = app.add_subcommand("coordinator", "Serve a run to agents that dial in over gRPC");
  coord->add_option("--config", flags->config, "testshard.toml or pyproject.toml");
  coord->add_option("--listen", flags->listen, "address to listen on (host:port or unix:/path)")->capture_default_str();
  coord->add_option("--agents", flags->agents, "agents to plan shards for");
  coord->add_option("--junit-out", flags->junit_out, "where to write the merged JUnit XML");
  coord->add_option("--branch", flags->branch, "branch for stages limited to branches");
  coord->add_option("--token-file", flags->token_file,
                    "file holding the agents' token (or set TESTSHARD_TOKEN; default: generate one)");
  coord->add_option("--database-url", flags->database_url,
                    "admin URL of a PostgreSQL server all agents clone from (default: each agent's own)");
  coord->add_flag("--allow-remote-plaintext", flags->allow_remote_plaintext,
                  "serve plaintext gRPC on a non-loopback address (trusted networks only)");
  coord->add_option("--tls-cert", flags->tls.cert_file, "PEM certificate chain: serve TLS");
  coord->add_option("--tls-key", flags->tls.key_file, "PEM private key for --tls-cert");
  coord->add_option("--tls-client-ca", flags->tls.client_ca_file,
                    "PEM CA: require agents to present a certificate it signed (mutual TLS)");
  coord->add_option("--resume", flags->resume,
                    "continue run RUN_ID after a coordinator restart: its results are kept, the rest re-queued");
  AddCoverageFlags(coord, flags.get());
  AddLeaseFlags(coord, flags.get());
  coord->callback([flags, exit_code] { *exit_code = RunCoordinator(*flags); });
}

}  // namespace testshard

// The project's testshard configuration: `testshard.toml`, or `[tool.testshard]` inside `pyproject.toml`.
#ifndef TESTSHARD_COMMON_CONFIG_H_
#define TESTSHARD_COMMON_CONFIG_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace testshard {

struct StageConfig {
  std::string name;
  std::string markers;               // pytest -m expression; empty = every test
  int maxfail = 0;                   // failures across all agents that cancel the rest of the stage; 0 = no limit
  absl::Duration timeout = absl::ZeroDuration();  // per shard; zero = none
  absl::Duration test_timeout = absl::ZeroDuration();  // per test; zero = none
  std::vector<std::string> branches;  // run only on these branches; empty = always
  bool continue_on_failure = false;   // later stages run even when this one fails
  int retries = 0;                    // a failed test runs again up to this many times, on another agent if any
  std::string reset;                  // "agent" | "stage" | "shard"; empty = database.reset
  // Planning. The smallest unit a batch holds: "test", "class" or "module" (coarser units pay their class- or
  // module-scoped fixtures once, but balance worse).
  std::string granularity = "test";
  // A pytest marker that keeps tests together: those with the same first argument (@pytest.mark.NAME("key")),
  // or all of them when it has none, always run in one batch. Empty: none.
  std::string group_marker;
};

struct DatabaseConfig {
  enum class Mode { kNone, kEmbedded, kServer };
  Mode mode = Mode::kNone;
  std::string url;                              // server mode: an admin URL whose role has CREATEDB
  std::string role;                             // role the tests connect as; empty = the admin role
  std::map<std::string, std::string> env;       // env var -> template such as "{url}"
  std::vector<std::vector<std::string>> setup;  // commands that build the template (migrations, seed)
  std::vector<std::string> template_inputs;     // globs, relative to workdir, whose contents name the template
  absl::Duration setup_timeout = absl::Minutes(30);  // per set-up command
  // How a stage's leases share databases: "agent" (one per agent), "stage" (fresh for each stage) or "shard"
  // (fresh for every lease). Stages may override it with their own `reset`.
  std::string reset = "agent";
  int pool_size = 2;                            // clones each agent keeps ready when some stage resets
  int keep_templates = 3;                       // a project's newest templates kept; older unused ones dropped
  std::string clone_strategy = "auto";          // "auto" (measured) | "file_copy" | "wal_log"
  std::map<std::string, std::string> settings;  // ALTER DATABASE <clone> SET name = value, for every clone
  std::map<std::string, std::string> grants;    // role -> privileges (CONNECT, TEMPORARY, CREATE) on every clone
  // Embedded server.
  std::string bin_dir;                          // initdb/postgres; empty = PATH, pg_config, /usr/lib/postgresql
  std::string data_dir;                         // parent of the cluster; empty = /dev/shm when it has room, else /tmp
  bool tcp = false;                             // also listen on 127.0.0.1 (a free port)
  int max_connections = 0;                      // 0 = sized from the number of agents
  // Keep the templates an embedded server built for the next run of this project (a snapshot of the cluster beside
  // the initdb cache), as pytest-django's --reuse-db keeps its database. Only with template_inputs: without them
  // nothing would tell a stale template from a current one.
  bool reuse_templates = true;
  // Whether an embedded server keeps its templates between runs: reuse_templates, and inputs that name them.
  bool KeepsTemplates() const { return reuse_templates && !template_inputs.empty(); }

  // How the tests reach the server, and so what {host} and {port} say. kSocket: a unix-socket directory in {host}
  // ({socket_dir} too); kTcp: 127.0.0.1 and a port (an embedded server then also listens on loopback TCP). kAuto:
  // a socket for an embedded server, whatever `url` says for a named one (which must agree when it is set).
  enum class Transport { kAuto, kSocket, kTcp };
  Transport transport = Transport::kAuto;
  // pytest-django's test database. kNone: testshard does nothing special. kCreate: pytest-django creates and
  // migrates test_<NAME> as usual, inside the agent's server (the agent checks the name fits PostgreSQL's 63-byte
  // limit with xdist's suffixes). kReuse: the agent's clone of the migrated template is the test database, used as
  // is (testshard's pytest plugin sets TEST.NAME and --reuse-db).
  enum class DjangoTestDb { kNone, kCreate, kReuse };
  DjangoTestDb django_test_db = DjangoTestDb::kNone;
  // What happens when an agent sees its tests use a database other than the one it handed them: kFail reports it
  // and fails the run, kWarn only reports it, kOff does not look.
  enum class HandoffCheck { kFail, kWarn, kOff };
  HandoffCheck handoff_check = HandoffCheck::kFail;
};

std::string_view TransportName(DatabaseConfig::Transport t);
std::string_view DjangoTestDbName(DatabaseConfig::DjangoTestDb d);
std::string_view HandoffCheckName(DatabaseConfig::HandoffCheck c);

// Coverage measured during a run (pytest-cov in every pytest process) and merged into one report.
struct CoverageConfig {
  bool enabled = false;                // a [coverage] table turns it on; `enabled = false` keeps the table but off
  std::vector<std::string> source;     // what to measure (pytest-cov's --cov), relative to workdir; empty = what
                                       // coverage.py's own configuration says
  bool branch = false;                 // branch coverage (--cov-branch)
  std::string cobertura;               // outputs, absolute (given relative to the config's directory); "" = none.
  std::string lcov;                    // With neither given, cobertura is coverage.xml.
  absl::Duration upload_timeout = absl::Seconds(120);  // how long the coordinator waits for agents' reports
};

struct Config {
  std::string path;                    // the file it was read from
  std::string project;                 // history key; defaults to the config directory's name
  // Where test durations are kept between runs, as written: "file:DIR" (relative to the config's directory),
  // "redis://...", "unix:/PATH", "postgresql://...". Empty: the default; see HistoryStoreSpec.
  std::string history;
  std::vector<std::string> command;    // argv prefix of the test runner
  std::string workdir;                 // absolute
  int agents = 0;                      // 0 = one per core
  std::string runner = "pytest";
  bool warm = true;                    // one long-lived pytest worker per agent (false: one process per shard)
  std::map<std::string, std::string> env;
  DatabaseConfig database;
  CoverageConfig coverage;
  std::vector<StageConfig> stages;
};

// Reads and validates a config file. A `.toml` file named pyproject.toml is read from its [tool.testshard] table,
// any other file from its top level. Errors are InvalidArgument naming the file, the key and the line.
absl::StatusOr<Config> LoadConfig(const std::string& path);

// The same, from text; `path` is used for messages and to resolve `workdir`.
absl::StatusOr<Config> ParseConfig(std::string_view text, const std::string& path);

// The history store the project's runs read and update: `history` with a relative file: directory resolved
// against the config's directory; by default file:<config's directory>/.testshard.
std::string HistoryStoreSpec(const Config& config);

// Finds the config for `dir`: testshard.toml, else a pyproject.toml that has [tool.testshard]. NotFound otherwise.
absl::StatusOr<std::string> FindConfig(const std::string& dir);

// Checks a pytest marker expression's syntax (identifiers, and/or/not, parentheses) so a typo is refused before
// anything runs. Returns InvalidArgument with the position of the problem.
absl::Status ValidateMarkerExpression(std::string_view expr);

}  // namespace testshard

#endif  // TESTSHARD_COMMON_CONFIG_H_

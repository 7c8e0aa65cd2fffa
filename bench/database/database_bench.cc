// Time to a ready database per agent, side by side: running a project's migrations and seed into an empty database
// (what every agent would do without templates) vs cloning the template, for 1, 4 and 16 agents at once, with each
// CREATE DATABASE strategy; the hand-out from a warm pool; and the embedded server's start-up. Ends with one line:
//   migrate_ms=... clone_ms=... clone_speedup=... pool_handout_ms=... server_start_ms=...
//
//   database_bench [--project DIR] [--agents 1,4,16] [--repeat N]
//
// DIR holds testshard.toml or pyproject.toml with [tool.testshard.database]; its set-up commands are the
// "migrations and seed". Default: examples/tenantapp.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/database.h"
#include "agent/postgres_provisioner.h"
#include "common/config.h"
#include "common/postgres/embedded_postgres.h"
#include "common/postgres/sql_session.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace testshard {
namespace {

namespace fs = std::filesystem;
using agent::CloneStrategy;
using agent::PostgresProvisioner;
using agent::PostgresProvisionerOptions;

struct Flags {
  std::string project = "examples/tenantapp";
  std::vector<int> agents = {1, 4, 16};
  int repeat = 3;
};

struct Summary {
  double median = 0, p90 = 0, max = 0;
  int n = 0;
};

Summary Summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.n = static_cast<int>(v.size());
  s.median = v[v.size() / 2];
  s.p90 = v[std::min(v.size() - 1, static_cast<size_t>(v.size() * 0.9))];
  s.max = v.back();
  return s;
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

[[noreturn]] void Die(const absl::Status& s) {
  std::fprintf(stderr, "database_bench: %s\n", std::string(s.message()).c_str());
  std::exit(1);
}

template <typename T>
T OrDie(absl::StatusOr<T> v) {
  if (!v.ok()) Die(v.status());
  return std::move(*v);
}

// The project's recipe, as an agent would build it.
agent::TemplateRecipe Recipe(const Config& c, const std::string& log_dir) {
  agent::TemplateRecipe r;
  r.setup = c.database.setup;
  r.env_templates = c.database.env;
  r.env = c.env;
  r.workdir = c.workdir;
  r.inputs = c.database.template_inputs;
  r.role = c.database.role;
  r.log_dir = log_dir;
  return r;
}

// One agent without templates: an empty database, then the set-up commands. Returns ms to ready.
double MigrateAndSeed(const pg::Connection& admin, const agent::TemplateRecipe& recipe, const std::string& db,
                      const std::string& log_dir) {
  absl::Time t0 = absl::Now();
  auto s = OrDie(pg::SqlSession::Open(admin));
  if (absl::Status st = s->Exec(absl::StrCat("CREATE DATABASE ", pg::QuoteIdent(db))); !st.ok()) Die(st);
  auto env = OrDie(agent::RenderEnv(recipe.env_templates, admin.WithDb(db)));
  PosixProcessRunner runner;
  for (size_t i = 0; i < recipe.setup.size(); ++i) {
    ProcessSpec spec;
    spec.argv = recipe.setup[i];
    spec.cwd = recipe.workdir;
    spec.env = recipe.env;
    for (const auto& [k, v] : env) spec.env[k] = v;
    spec.stdout_path = spec.stderr_path = absl::StrCat(log_dir, "/", db, "-", i, ".log");
    auto r = OrDie(runner.Run(spec, nullptr));
    if (!r.ok()) {
      Die(absl::InternalError(
          absl::StrCat(absl::StrJoin(spec.argv, " "), " failed:\n", ReadTail(spec.stdout_path, 4000))));
    }
  }
  return Ms(absl::Now() - t0);
}

void DropAll(const pg::Connection& admin, const std::string& like) {
  auto s = OrDie(pg::SqlSession::Open(admin));
  auto rows =
      OrDie(s->Query(absl::StrCat("SELECT datname FROM pg_database WHERE datname LIKE ", pg::QuoteLiteral(like))));
  for (const pg::Row& r : rows) (void)s->Exec(absl::StrCat("DROP DATABASE ", pg::QuoteIdent(r[0]), " WITH (FORCE)"));
}

// Runs `fn(i)` on `n` threads released together; returns each one's result.
template <typename Fn>
std::vector<double> Together(int n, Fn fn) {
  std::atomic<bool> go{false};
  std::vector<std::future<double>> f;
  for (int i = 0; i < n; ++i) {
    f.push_back(std::async(std::launch::async, [&, i] {
      while (!go.load()) std::this_thread::yield();
      return fn(i);
    }));
  }
  go = true;
  std::vector<double> out;
  for (auto& x : f) out.push_back(x.get());
  return out;
}

// "0.42 0.61 0.70": other work on the machine skews every figure, so the output says how busy it was.
std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return absl::StrCat(one, " ", five, " ", fifteen);
}

int Main(const Flags& flags) {
  spdlog::set_level(spdlog::level::warn);
  std::string load_before = LoadAverage();
  std::string config_path = OrDie(FindConfig(flags.project));
  Config config = OrDie(LoadConfig(config_path));
  if (config.database.setup.empty()) Die(absl::InvalidArgumentError(config_path + " has no database set-up commands"));
  char tmpl[] = "/tmp/ts-dbbench-XXXXXX";
  std::string logs = mkdtemp(tmpl);
  agent::TemplateRecipe recipe = Recipe(config, logs);
  std::printf("database bench: %s\n  set-up: %s\n", config_path.c_str(),
              absl::StrJoin(config.database.setup, " && ", [](std::string* out, const std::vector<std::string>& argv) {
                absl::StrAppend(out, absl::StrJoin(argv, " "));
              }).c_str());

  // 1. The embedded server: start-up from scratch (initdb), and from the cached initdb every later start uses.
  std::vector<double> cold, warm;
  std::unique_ptr<pg::EmbeddedPostgres> server;
  for (int i = 0; i < flags.repeat; ++i) {
    server.reset();
    pg::EmbeddedOptions eo;
    eo.cache_initdb = false;
    server = OrDie(pg::EmbeddedPostgres::Start(eo));
    cold.push_back(Ms(server->startup_time()));
  }
  for (int i = 0; i < flags.repeat + 1; ++i) {
    server.reset();
    pg::EmbeddedOptions eo;
    eo.max_connections = 300;
    server = OrDie(pg::EmbeddedPostgres::Start(eo));
    if (i > 0) warm.push_back(Ms(server->startup_time()));  // the first one fills the cache when it is empty
  }
  Summary cold_start = Summarize(cold), start = Summarize(warm);
  std::printf(
      "\nembedded server start-up, until it accepts connections (%s):\n"
      "  initdb + start          median %6.0f ms  max %6.0f ms (n=%d)\n"
      "  cached initdb + start   median %6.0f ms  max %6.0f ms (n=%d)\n",
      server->dir().c_str(), cold_start.median, cold_start.max, cold_start.n, start.median, start.max, start.n);
  pg::Connection admin = server->admin();

  // 2. Without templates: each agent migrates and seeds an empty database of its own.
  std::printf("\n%-34s %8s %10s %10s %10s\n", "time to a ready database per agent", "agents", "median ms", "p90 ms",
              "max ms");
  std::map<int, Summary> migrate;
  for (int n : flags.agents) {
    std::vector<double> all;
    int rounds = n == 1 ? flags.repeat : 1;
    for (int r = 0; r < rounds; ++r) {
      std::vector<double> v = Together(
          n, [&](int i) { return MigrateAndSeed(admin, recipe, absl::StrCat("bench_migrate_", r, "_", i), logs); });
      all.insert(all.end(), v.begin(), v.end());
      DropAll(admin, "bench\\_migrate\\_%");
    }
    migrate[n] = Summarize(all);
    std::printf("%-34s %8d %10.0f %10.0f %10.0f\n", "migrate + seed an empty database", n, migrate[n].median,
                migrate[n].p90, migrate[n].max);
  }

  // 3. The template, built once (the same recipe an agent uses), with its strategy calibration.
  PosixProcessRunner runner;
  auto options = [&](int i, std::optional<CloneStrategy> strategy, int pool) {
    PostgresProvisionerOptions o;
    o.admin = admin;
    o.recipe = recipe;
    o.project = config.project;
    o.run_id = "bench";
    o.agent_id = absl::StrCat("agent-", i);
    o.pool_size = pool;
    o.strategy = strategy;
    o.janitor_interval = absl::Hours(1);
    return o;
  };
  absl::Time b0 = absl::Now();
  agent::PrepareReport built;
  {
    PostgresProvisioner p(options(0, std::nullopt, 0), &runner);
    built = OrDie(p.Prepare());
  }
  std::printf("%-34s %8d %10.0f  (once per migration hash: set-up, VACUUM, seal, strategy calibration)\n",
              "build the template", 1, Ms(absl::Now() - b0));

  // 4. With templates: each agent clones (CREATE DATABASE ... TEMPLATE, grants and settings re-applied, renamed).
  std::map<std::pair<std::string, int>, Summary> clone;
  for (CloneStrategy strategy : {CloneStrategy::kFileCopy, CloneStrategy::kWalLog}) {
    std::string sname(agent::CloneStrategyName(strategy));
    for (int n : flags.agents) {
      std::vector<std::unique_ptr<PostgresProvisioner>> agents;
      for (int i = 0; i < n; ++i) {
        agents.push_back(std::make_unique<PostgresProvisioner>(options(i, strategy, 0), &runner));
        OrDie(agents.back()->Prepare());
        OrDie(agents.back()->Acquire("warmup"));  // Prepare's own first clone, taken out of the way
      }
      std::vector<double> all;
      int rounds = std::max(1, (flags.repeat * 4) / n);
      for (int r = 0; r < rounds; ++r) {
        std::vector<double> v = Together(n, [&](int i) {
          absl::Time t0 = absl::Now();
          agent::Database db = OrDie(agents[i]->Acquire(absl::StrCat("r", r)));
          double ms = Ms(absl::Now() - t0);
          agents[i]->Release(db);
          return ms;
        });
        all.insert(all.end(), v.begin(), v.end());
        // Let the background drops finish, so the next round does not pay for them.
        for (auto& a : agents) {
          while (a->pool_stats().pending_drops > 0) absl::SleepFor(absl::Milliseconds(5));
        }
      }
      agents.clear();
      clone[{sname, n}] = Summarize(all);
      const Summary& s = clone[{sname, n}];
      std::printf("%-34s %8d %10.1f %10.1f %10.1f\n", absl::StrCat("clone the template, ", sname).c_str(), n, s.median,
                  s.p90, s.max);
    }
  }

  // 5. A warm pool: the database is ready before the shard asks.
  std::vector<double> handouts;
  std::string chosen;
  {
    PostgresProvisioner p(options(0, std::nullopt, 2), &runner);
    chosen = OrDie(p.Prepare()).strategy;
    for (int i = 0; i < 40; ++i) {
      while (p.pool_stats().ready < 2) absl::SleepFor(absl::Milliseconds(2));
      absl::Time t0 = absl::Now();
      agent::Database db = OrDie(p.Acquire(absl::StrCat("lease-", i)));
      handouts.push_back(Ms(absl::Now() - t0));
      p.Release(db);
    }
  }
  Summary handout = Summarize(handouts);
  std::printf("%-34s %8d %10.2f %10.2f %10.2f\n", "hand-out from a warm pool", 1, handout.median, handout.p90,
              handout.max);

  // Headline: one agent, the strategy the calibration picks.
  std::string best = built.strategy;
  double migrate_ms = migrate.count(1) ? migrate[1].median : migrate.begin()->second.median;
  double clone_ms = clone.count({best, 1}) ? clone[{best, 1}].median : clone.begin()->second.median;
  std::printf("\nratios: clone vs migrate+seed per agent:");
  for (int n : flags.agents) {
    std::printf("  %d agent(s) %.0fx", n, migrate[n].median / std::max(0.01, clone[{best, n}].median));
  }
  std::printf("\n        calibrated strategy %s (template %s); warm-pool hand-out vs clone %.0fx\n", best.c_str(),
              built.template_name.c_str(), clone_ms / std::max(0.001, handout.median));
  std::printf("        load average %s before, %s after, on %u cores\n", load_before.c_str(), LoadAverage().c_str(),
              std::thread::hardware_concurrency());
  std::printf("migrate_ms=%.0f clone_ms=%.1f clone_speedup=%.1f pool_handout_ms=%.2f server_start_ms=%.0f\n",
              migrate_ms, clone_ms, migrate_ms / std::max(0.01, clone_ms), handout.median, start.median);
  server.reset();
  fs::remove_all(logs);
  return 0;
}

}  // namespace
}  // namespace testshard

int main(int argc, char** argv) {
  testshard::Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "database_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--project") {
      flags.project = value();
    } else if (a == "--agents") {
      flags.agents.clear();
      for (absl::string_view n : absl::StrSplit(value(), ',')) {
        int v = 0;
        if (!absl::SimpleAtoi(n, &v) || v < 1) {
          std::fprintf(stderr, "database_bench: --agents takes numbers such as 1,4,16\n");
          return 2;
        }
        flags.agents.push_back(v);
      }
    } else if (a == "--repeat") {
      if (!absl::SimpleAtoi(value(), &flags.repeat) || flags.repeat < 1) return 2;
    } else {
      std::fprintf(stderr, "usage: database_bench [--project DIR] [--agents 1,4,16] [--repeat N]\n");
      return 2;
    }
  }
  return testshard::Main(flags);
}

#include "coordinator/main/session.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/history/history.h"
#include "common/junit_writer.h"
#include "common/process.h"
#include "common/status.h"
#include "common/wire.h"
#include "coordinator/dynamic_queue.h"
#include "coordinator/estimator.h"
#include "coordinator/run_journal_backends.h"

namespace testshard {
namespace {

namespace fs = std::filesystem;
using coordinator::StageProgress;
using coordinator::StageStatus;

std::string Seconds(absl::Duration d) { return absl::StrFormat("%.1fs", absl::ToDoubleSeconds(d)); }

// "45s", "3m05s", "1h02m": an estimate, so no fractions.
std::string Eta(double seconds) {
  const int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

std::string Line(const StageProgress& p) {
  std::string s = absl::StrFormat("%-20s %-10s", p.name, coordinator::StageStatusName(p.status));
  if (p.total > 0 || p.status == StageStatus::kRunning) {
    s += absl::StrFormat(" %d/%d", p.done, p.total);
    if (p.failed + p.errors) s += absl::StrFormat(", %d failed", p.failed + p.errors);
    if (p.not_run) s += absl::StrFormat(", %d not run", p.not_run);
  }
  if (p.elapsed > absl::ZeroDuration()) s += "  " + Seconds(p.elapsed);
  if (p.status == StageStatus::kRunning && p.eta_s >= 0) s += "  ETA " + Eta(p.eta_s);
  return s;
}

}  // namespace

sigset_t BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

std::string DetectBranch(const std::string& flag, const std::string& dir) {
  if (!flag.empty()) return flag;
  for (const char* var : {"TESTSHARD_BRANCH", "GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME",
                          "BUILDKITE_BRANCH", "BRANCH_NAME"}) {
    if (const char* v = getenv(var); v && *v) return v;
  }
  char tmpl[] = "/tmp/ts-branch-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) return "";
  close(fd);
  ProcessSpec spec;
  spec.argv = {"git", "rev-parse", "--abbrev-ref", "HEAD"};
  spec.cwd = dir;
  spec.stdout_path = tmpl;
  PosixProcessRunner runner;
  auto r = runner.Run(spec, nullptr);
  std::string out = ReadTail(tmpl, 256);
  unlink(tmpl);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return r.ok() && r->ok() && out != "HEAD" ? out : "";
}

std::set<std::string> WarmStages(const Config& config) {
  std::set<std::string> warm;
  if (!config.warm || config.runner != "pytest") return warm;
  for (const StageConfig& stage : config.stages) {
    // The agent runs a lease with a database of its own (reset "stage" or "shard") in a process of its own.
    const std::string& reset = stage.reset.empty() ? config.database.reset : stage.reset;
    if (config.database.mode == DatabaseConfig::Mode::kNone || reset == "agent") warm.insert(stage.name);
  }
  return warm;
}

v1::RunSpec BuildRunSpec(const Config& config, const std::string& server_url) {
  v1::RunSpec spec;
  for (const std::string& a : config.command) spec.add_command(a);
  // A config named without a directory (--config pyproject.toml) has an empty parent, which fs::absolute refuses.
  fs::path root = fs::absolute(config.path).parent_path();
  spec.set_workdir(fs::relative(config.workdir, root).string());
  spec.mutable_env()->insert(config.env.begin(), config.env.end());
  spec.set_runner(config.runner);
  spec.set_warm(config.warm);
  const DatabaseConfig& db = config.database;
  v1::DatabaseSpec* d = spec.mutable_database();
  d->set_enabled(db.mode != DatabaseConfig::Mode::kNone);
  d->mutable_env()->insert(db.env.begin(), db.env.end());
  for (const auto& argv : db.setup) {
    v1::Command* c = d->add_setup();
    for (const std::string& a : argv) c->add_argv(a);
  }
  d->set_role(db.role);
  for (const std::string& g : db.template_inputs) d->add_template_inputs(g);
  d->set_server_url(server_url);
  d->set_project(config.project);
  d->set_reset(db.reset);
  for (const StageConfig& stage : config.stages) {
    if (!stage.reset.empty()) (*d->mutable_stage_reset())[stage.name] = stage.reset;
  }
  d->set_pool_size(db.pool_size);
  d->set_keep_templates(db.keep_templates);
  d->set_clone_strategy(db.clone_strategy);
  d->mutable_settings()->insert(db.settings.begin(), db.settings.end());
  d->mutable_grants()->insert(db.grants.begin(), db.grants.end());
  d->set_setup_timeout_ms(absl::ToInt64Milliseconds(db.setup_timeout));
  d->mutable_embedded()->set_bin_dir(db.bin_dir);
  d->mutable_embedded()->set_data_dir(db.data_dir);
  d->mutable_embedded()->set_tcp(db.tcp);
  d->mutable_embedded()->set_max_connections(db.max_connections);
  d->mutable_embedded()->set_reuse_templates(db.KeepsTemplates());
  d->set_transport(std::string(TransportName(db.transport)));
  d->set_django_test_db(std::string(DjangoTestDbName(db.django_test_db)));
  d->set_handoff_check(std::string(HandoffCheckName(db.handoff_check)));
  if (config.coverage.enabled) {
    v1::CoverageSpec* cov = spec.mutable_coverage();
    cov->set_enabled(true);
    for (const std::string& src : config.coverage.source) cov->add_source(src);
    cov->set_branch(config.coverage.branch);
  }
  return spec;
}

absl::StatusOr<std::unique_ptr<Session>> Session::Start(const Config& config, const SessionOptions& options) {
  auto s = std::unique_ptr<Session>(new Session());
  s->config_ = config;
  s->run_id_ = options.run_id.empty() ? RandomToken().substr(0, 12) : options.run_id;
  s->started_ = absl::Now();
  s->tty_ = isatty(STDOUT_FILENO);
  // The journal lives where the history does (run_journal_backends.h): beside the run for file: stores, on the
  // Redis or PostgreSQL server otherwise, so a coordinator restarted elsewhere can resume.
  const std::string history_spec = HistoryStoreSpec(config);
  const std::vector<coordinator::JournalEvent>& events = options.resume_events;
  auto journal = coordinator::OpenRunJournal(history_spec, config.project, s->run_id_, options.run_dir,
                                             options.resume);
  if (journal.ok()) {
    s->journal_ = *std::move(journal);
  } else {
    auto spec = history::ParseStoreSpec(history_spec);
    // A file that cannot be opened is a broken checkout, as it always was. A server that cannot be reached only
    // costs the ability to resume this run, so the run goes on without a journal; a run being resumed was just
    // read from that server, and must be able to keep journaling there.
    if (options.resume || !spec.ok() || spec->kind == history::StoreSpec::kFile) return journal.status();
    std::fprintf(stderr, "testshard: warning: run journal in the history store: %s; this run cannot be resumed\n",
                 std::string(journal.status().message()).c_str());
  }
  coordinator::RunOptions ro;
  ro.journal = s->journal_.get();
  // Lease ids from before a restart must never be mistaken for new ones.
  ro.generation = options.resume ? static_cast<int>(absl::ToUnixSeconds(absl::Now()) % 1000000) : 0;
  ro.stages = config.stages;
  ro.branch = options.branch;
  ro.expected_agents = std::max(1, options.agents);
  ro.lease_ttl = options.lease_ttl;
  ro.estimator = s->OpenHistory();
  ro.warm_stages = WarmStages(config);
  for (const StageConfig& stage : config.stages) {
    // Group keys are read from the markers by the agents' pytest worker; discovery in a plain pytest process only
    // lists ids.
    if (!stage.group_marker.empty() && !(config.warm && config.runner == "pytest")) {
      std::fprintf(stderr, "testshard: warning: stage %s: group_marker needs warm = true and the pytest runner; "
                   "its tests are planned without groups\n", stage.name.c_str());
    }
  }
  s->run_ = std::make_unique<coordinator::RunState>(ro, std::make_unique<coordinator::DynamicPlanner>(),
                                                    RealClock::Get());
  if (options.resume) {
    TS_RETURN_IF_ERROR(s->run_->Restore(events));
    std::printf("testshard: resumed run %s from %zu journal entries\n", s->run_id_.c_str(), events.size());
  }
  coordinator::ServiceOptions so;
  so.run_id = s->run_id_;
  so.token = options.token;
  so.artifact_dir = options.run_dir + "/artifacts";
  so.spec = BuildRunSpec(config, options.server_url);
  so.heartbeat_interval = options.heartbeat;
  s->handoff_ = std::make_unique<coordinator::HandoffReport>(config.database.handoff_check);
  so.handoff = s->handoff_.get();
  if (config.coverage.enabled) {
    s->coverage_ = std::make_unique<coordinator::CoverageCollector>(coordinator::CoverageOutputs{
        fs::absolute(config.path).parent_path().lexically_normal().string(), config.coverage.cobertura,
        config.coverage.lcov});
    so.coverage = s->coverage_.get();
  }
  TS_ASSIGN_OR_RETURN(s->server_, coordinator::CoordinatorServer::Start(options.listen, s->run_.get(), so, options.tls,
                                                                         options.allow_remote_plaintext));
  return s;
}

std::shared_ptr<const coordinator::DurationEstimator> Session::OpenHistory() {
  // The history only makes the plan better. Without it every test is estimated the same and the dynamic queue
  // still balances by what it measures, so a store that cannot be reached is a warning, not a failed run. (It is
  // an error for `testshard split`, whose CI jobs plan separately and must all see the same history; here one
  // coordinator plans for every agent.)
  history_spec_ = HistoryStoreSpec(config_);
  std::vector<history::TestHistory> records;
  auto store = history::OpenHistoryStore(history_spec_);
  if (!store.ok()) {
    std::fprintf(stderr, "testshard: warning: history store %s: %s; planning with default estimates\n",
                 history_spec_.c_str(), std::string(store.status().message()).c_str());
  } else {
    auto read = (*store)->ReadAll(config_.project);
    if (read.ok()) {
      records = *std::move(read);
    } else {
      std::fprintf(stderr, "testshard: warning: reading the history from %s: %s; planning with default estimates\n",
                   (*store)->Describe().c_str(), std::string(read.status().message()).c_str());
    }
    history_ = *std::move(store);
  }
  return std::make_shared<coordinator::DurationEstimator>(history::KnownDurations(records));
}

void Session::RecordHistory(const std::vector<TestSuite>& suites) {
  std::vector<TestCase> cases;
  for (const TestSuite& suite : suites) cases.insert(cases.end(), suite.cases.begin(), suite.cases.end());
  // The samples `testshard history import` folds in for a JUnit file, straight from the results.
  std::vector<history::Sample> samples = history::SamplesFromResults(cases, absl::Now());
  if (samples.empty()) return;
  if (!history_) {
    auto store = history::OpenHistoryStore(history_spec_);
    if (!store.ok()) {
      std::fprintf(stderr, "testshard: warning: durations not recorded: history store %s: %s\n",
                   history_spec_.c_str(), std::string(store.status().message()).c_str());
      return;
    }
    history_ = *std::move(store);
  }
  absl::Status s = history_->Update(config_.project, samples);
  if (!s.ok()) {
    std::fprintf(stderr, "testshard: warning: durations not recorded in %s: %s\n", history_->Describe().c_str(),
                 std::string(s.message()).c_str());
    return;
  }
  std::printf("testshard: recorded %zu result(s) in the history (%s, project %s)\n", samples.size(),
              history_->Describe().c_str(), config_.project.c_str());
}

void Session::PrintProgress(bool force) {
  std::vector<StageProgress> progress = run_->Progress();
  std::string line;
  for (const StageProgress& p : progress) {
    if (p.status == StageStatus::kDiscovering || p.status == StageStatus::kRunning) line = Line(p);
  }
  absl::Time now = absl::Now();
  if (line.empty() || (!force && line == last_line_ && now - last_print_ < absl::Seconds(10))) return;
  if (!force && now - last_print_ < absl::Milliseconds(tty_ ? 200 : 1000)) return;
  std::printf(tty_ ? "\r\033[K%s" : "%s\n", line.c_str());
  std::fflush(stdout);
  last_line_ = line;
  last_print_ = now;
}

int Session::Watch(const std::function<bool()>& should_stop) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  std::vector<StageStatus> seen;
  while (true) {
    run_->ExpireLeases();
    // A line when a stage starts or ends; the live line in between.
    std::vector<StageProgress> progress = run_->Progress();
    seen.resize(progress.size(), StageStatus::kPending);
    for (size_t i = 0; i < progress.size(); ++i) {
      if (progress[i].status != seen[i]) {
        if (progress[i].status == StageStatus::kRunning) {
          // Once per stage, when its tests are planned.
          std::printf(tty_ ? "\r\033[Ktestshard: stage %s planned: %d test(s), %d known from history\n"
                           : "testshard: stage %s planned: %d test(s), %d known from history\n",
                      progress[i].name.c_str(), progress[i].planned, progress[i].known);
          std::fflush(stdout);
          last_line_.clear();
        }
        bool terminal = progress[i].status != StageStatus::kDiscovering && progress[i].status != StageStatus::kRunning &&
                        progress[i].status != StageStatus::kPending;
        if (terminal) {
          std::string note = progress[i].note.empty() ? "" : "  (" + progress[i].note + ")";
          std::printf(tty_ ? "\r\033[K%s%s\n" : "%s%s\n", Line(progress[i]).c_str(), note.c_str());
          std::fflush(stdout);
          last_line_.clear();
        }
        seen[i] = progress[i].status;
      }
    }
    if (run_->done() || should_stop()) return 0;
    PrintProgress(false);
    timespec timeout{0, 100 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &timeout);
    if (sig > 0) return sig;
  }
}

void Session::WaitForCoverage(absl::Duration max_wait) {
  if (!coverage_) return;
  coverage_->WaitForReports(absl::Now() + max_wait);
}

int Session::Finish(const std::string& junit_out) {
  std::vector<TestSuite> suites = run_->Report();
  RecordHistory(suites);  // the tests' own results only, not the hand-off check's
  if (auto handoff = handoff_->Suite()) suites.push_back(std::move(*handoff));
  if (!junit_out.empty()) {
    std::error_code ec;
    fs::path out(junit_out);
    if (out.has_parent_path()) fs::create_directories(out.parent_path(), ec);
    std::ofstream f(junit_out + ".tmp", std::ios::binary);
    absl::Status s = WriteJunit(suites, f);
    f.close();
    if (s.ok() && f) fs::rename(junit_out + ".tmp", junit_out, ec);
    if (!s.ok() || ec) std::fprintf(stderr, "testshard: cannot write %s\n", junit_out.c_str());
  }
  // Summary: each stage, the failures, the slowest tests.
  std::vector<StageProgress> progress = run_->Progress();
  int total = 0;
  for (const StageProgress& p : progress) total += p.total;
  std::printf("\ntestshard: %zu stage(s), %d test(s) in %s (run %s)\n", progress.size(), total,
              Seconds(absl::Now() - started_).c_str(), run_id_.c_str());
  for (const StageProgress& p : progress) {
    std::string detail = absl::StrFormat("%d passed", p.passed);
    if (p.failed) absl::StrAppendFormat(&detail, ", %d failed", p.failed);
    if (p.errors) absl::StrAppendFormat(&detail, ", %d errors", p.errors);
    if (p.skipped) absl::StrAppendFormat(&detail, ", %d skipped", p.skipped);
    if (p.not_run) absl::StrAppendFormat(&detail, ", %d not run", p.not_run);
    if (p.flaky) absl::StrAppendFormat(&detail, " (%d flaky)", p.flaky);
    if (p.total == 0) detail = p.note.empty() ? "no tests selected" : p.note;
    std::printf("  %-20s %-10s %s  %s\n", p.name.c_str(), std::string(coordinator::StageStatusName(p.status)).c_str(),
                detail.c_str(), p.elapsed > absl::ZeroDuration() ? Seconds(p.elapsed).c_str() : "");
  }
  std::vector<const TestCase*> all;
  int shown = 0;
  for (const TestSuite& suite : suites) {
    for (const TestCase& c : suite.cases) {
      all.push_back(&c);
      bool bad = c.result.outcome == Outcome::kFailed || c.result.outcome == Outcome::kError;
      if (bad && shown < 20) {
        if (shown++ == 0) std::printf("\nFailures:\n");
        std::string msg = c.result.message.substr(0, c.result.message.find('\n')).substr(0, 160);
        std::printf("  %s %s - %s\n", c.result.outcome == Outcome::kFailed ? "FAILED" : "ERROR ", c.id.c_str(),
                    msg.c_str());
      }
    }
  }
  // A pass on retry is reported, never hidden.
  int flaky = 0;
  for (const TestCase* c : all) {
    if (!c->flaky()) continue;
    if (flaky++ == 0) std::printf("\nFlaky (passed on retry):\n");
    if (flaky <= 20) {
      std::string msg = c->reruns.back().message.substr(0, 120);
      std::printf("  FLAKY  %s - failed %zu time(s) first: %s\n", c->id.c_str(), c->reruns.size(), msg.c_str());
    }
  }
  for (const auto& [name, why] : run_->DrainedAgents()) {
    std::printf("\nAgent %s was drained: %s\n", name.c_str(), why.c_str());
  }
  std::sort(all.begin(), all.end(),
            [](const TestCase* a, const TestCase* b) { return a->result.time_s > b->result.time_s; });
  if (!all.empty() && all.front()->result.time_s > 0) {
    std::printf("\nSlowest:\n");
    for (size_t i = 0; i < std::min<size_t>(5, all.size()) && all[i]->result.time_s > 0; ++i) {
      std::printf("  %7.2fs %s\n", all[i]->result.time_s, all[i]->id.c_str());
    }
  }
  std::printf("%s", handoff_->Summary().c_str());
  if (!junit_out.empty()) std::printf("\nJUnit report: %s\n", junit_out.c_str());
  if (coverage_) {
    coordinator::CoverageResult cov = coverage_->Finish();
    for (const std::string& w : cov.warnings) std::printf("testshard: warning: coverage: %s\n", w.c_str());
    for (const std::string& path : cov.written) {
      std::printf("Coverage report: %s (%zu files, %llu/%llu lines%s, from %d agent report(s))\n", path.c_str(),
                  cov.files, static_cast<unsigned long long>(cov.totals.lines_covered),
                  static_cast<unsigned long long>(cov.totals.lines_valid),
                  cov.totals.branches_valid
                      ? absl::StrFormat(", %d/%d branches", cov.totals.branches_covered, cov.totals.branches_valid).c_str()
                      : "",
                  cov.reports);
    }
  }
  std::fflush(stdout);
  int code = run_->exit_code();
  // Results from agents that shared a database cannot be trusted, however they came out.
  if (handoff_->Fails() && code == coordinator::kExitOk) code = coordinator::kExitTestsFailed;
  return code;
}

}  // namespace testshard

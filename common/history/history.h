// What testshard remembers about each test between runs, and the pure rules for folding a new run into it.
// The stores (file, Redis, PostgreSQL) only persist these records; every backend applies the same rules here, so
// they agree to the last bit.
#ifndef TESTSHARD_COMMON_HISTORY_HISTORY_H_
#define TESTSHARD_COMMON_HISTORY_HISTORY_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/test_result.h"

namespace testshard::history {

// One execution of one test, as a run reports it.
struct Sample {
  std::string test_id;  // the runner's own id (pytest node id)
  double duration_s = 0;
  Outcome outcome = Outcome::kPassed;
  absl::Time at = absl::UnixEpoch();  // when it ran; orders last_seen
};

// The remembered state of one test in one project. Stage-independent: a test that runs in two stages has one record.
struct TestHistory {
  std::string test_id;
  // Exponentially weighted moving average of the durations of runs that executed the test body (passed or failed);
  // the planner's estimate. Skips and errors say nothing about how long the test takes, so they do not move it.
  double ewma_s = 0;
  // A high percentile of `recent_s`, for pessimistic uses (time budgets, ETA upper bounds).
  double p90_s = 0;
  std::vector<double> recent_s;  // most recent durations that moved the EWMA, oldest first
  // One letter per recent run, oldest first: P passed, F failed, E error, S skipped. Lets flakiness be told later
  // (a test that alternates P and F).
  std::string outcomes;
  absl::Time last_seen = absl::UnixEpoch();
  int64_t runs = 0;  // every sample ever folded in, whatever its outcome

  bool has_duration() const { return !recent_s.empty(); }
  friend bool operator==(const TestHistory&, const TestHistory&) = default;
};

struct HistoryOptions {
  double ewma_alpha = 0.3;  // weight of the newest sample; 0.3 follows a real change within ~5 runs
  size_t max_recent_samples = 10;
  size_t max_recent_outcomes = 20;
};

// Folds `sample` into `h` (whose test_id it must match; an empty h.test_id is taken from the sample).
void ApplySample(TestHistory& h, const Sample& sample, const HistoryOptions& options = {});

// Folds `samples` into `records` in order, adding a record for a test seen for the first time; "not run" samples
// carry nothing and are skipped. `index` maps test ids to positions in `records` and is kept current. Every
// backend's Update goes through here.
void ApplySamples(std::vector<TestHistory>& records, std::unordered_map<std::string, size_t>& index,
                  const std::vector<Sample>& samples, const HistoryOptions& options);
// The same, for records that come without an index.
void ApplySamples(std::vector<TestHistory>& records, const std::vector<Sample>& samples,
                  const HistoryOptions& options);

// The samples of a finished run, as the coordinator hands them to HistoryStore::Update: every attempt of every
// test, earlier attempts first (so a pass on retry leaves "FP" in the outcomes, which is how flakiness shows),
// dated `at`. "Not run" tests yield nothing.
std::vector<Sample> SamplesFromResults(const std::vector<TestCase>& cases, absl::Time at);

// The estimate the planner uses for each test with a known duration: (test id, ewma_s).
std::vector<std::pair<std::string, double>> KnownDurations(const std::vector<TestHistory>& records);

// Flakiness from the recent outcomes: a test that both passed and failed (or errored) in its window.
bool LooksFlaky(const TestHistory& h);
// Failed or errored runs over runs that executed (passed, failed or errored) in the window; 0 when none did.
double FailureRate(const TestHistory& h);

// Nearest-rank percentile (q in [0, 1]) of `values`; 0 when empty.
double Percentile(std::vector<double> values, double q);

char OutcomeLetter(Outcome o);

// JSON (one object, compact, one line) for the file and Redis stores. `with_id` writes the test id as "id";
// the Redis store keeps the id as the hash field instead.
std::string EncodeJson(const TestHistory& h, bool with_id);
// The inverse. `test_id` is used when the object has no "id". kDataLoss on a malformed record.
absl::StatusOr<TestHistory> DecodeJson(std::string_view json, std::string_view test_id = {});

}  // namespace testshard::history

#endif  // TESTSHARD_COMMON_HISTORY_HISTORY_H_

// Predicted durations for a stage's tests: the history where there is one, the test's nearest relatives where
// there is not.
#ifndef TESTSHARD_COORDINATOR_ESTIMATOR_H_
#define TESTSHARD_COORDINATOR_ESTIMATOR_H_

#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace testshard::coordinator {

enum class EstimateSource {
  kHistory,      // the test's own smoothed duration
  kParametrize,  // other parameters of the same test function: "a.py::test_x[...]"
  kClass,        // the same class: "a.py::TestK::..."
  kModule,       // the same module: "a.py::..."
  kDirectory,    // the nearest directory with known tests: "tests/api/", then "tests/", ...
  kSuite,        // every known test
  kDefault,      // nothing known at all
};

std::string_view EstimateSourceName(EstimateSource s);

struct EstimatorOptions {
  double default_s = 1.0;  // when the project has no history at all
  // A sibling group speaks for an unknown test only when it has at least this many known tests.
  size_t min_siblings = 1;
};

struct Estimate {
  double seconds = 0;
  EstimateSource source = EstimateSource::kDefault;
};

// Unknown tests are estimated by the median (robust to the one 10-minute test in a module of 50 ms ones) of the
// nearest group of relatives that has history: same parametrised function, class, module, directory (nearest
// first), then the whole suite. Relatives are found by node-id prefix in a sorted copy of the known ids — a
// group is a contiguous range there — built on the first unknown test, so a fully known stage never pays for it.
//
// Thread-safe: Get may be called concurrently (the lazily built index and the median cache are under mu_).
class DurationEstimator {
 public:
  // `known`: test id → smoothed duration in seconds (ids must be unique).
  explicit DurationEstimator(std::vector<std::pair<std::string, double>> known, EstimatorOptions options = {});

  Estimate Get(std::string_view test_id) const;
  double Seconds(std::string_view test_id) const { return Get(test_id).seconds; }
  size_t known() const { return known_.size(); }

 private:
  void BuildIndexLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Median of the known tests whose id starts with `prefix`, or -1 if fewer than min_siblings.
  double MedianWithPrefixLocked(const std::string& prefix) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const EstimatorOptions options_;
  absl::flat_hash_map<std::string, double> known_;
  mutable absl::Mutex mu_;
  mutable bool indexed_ ABSL_GUARDED_BY(mu_) = false;
  mutable std::vector<std::pair<std::string_view, double>> sorted_ ABSL_GUARDED_BY(mu_);  // views into known_
  mutable std::unordered_map<std::string, double> median_cache_ ABSL_GUARDED_BY(mu_);
};

// The prefixes that define an unknown test's relatives, nearest first, ending with "" (the suite). Exposed for
// tests. Each is paired with its source.
std::vector<std::pair<std::string, EstimateSource>> RelativePrefixes(std::string_view test_id);

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_ESTIMATOR_H_

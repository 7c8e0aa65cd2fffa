#include "coordinator/estimator.h"

#include <algorithm>

#include "common/status.h"

namespace testshard::coordinator {

std::string_view EstimateSourceName(EstimateSource s) {
  switch (s) {
    case EstimateSource::kHistory: return "history";
    case EstimateSource::kParametrize: return "parametrize";
    case EstimateSource::kClass: return "class";
    case EstimateSource::kModule: return "module";
    case EstimateSource::kDirectory: return "directory";
    case EstimateSource::kSuite: return "suite";
    case EstimateSource::kDefault: return "default";
  }
  return "default";
}

std::vector<std::pair<std::string, EstimateSource>> RelativePrefixes(std::string_view test_id) {
  std::vector<std::pair<std::string, EstimateSource>> out;
  const size_t bracket = test_id.find('[');
  std::string_view base = test_id.substr(0, bracket);
  if (bracket != std::string_view::npos) out.emplace_back(std::string(base) + "[", EstimateSource::kParametrize);
  const size_t first = base.find("::");
  const size_t last = base.rfind("::");
  if (first != std::string_view::npos && last != first) {
    out.emplace_back(std::string(base.substr(0, last)) + "::", EstimateSource::kClass);
  }
  std::string_view path = base.substr(0, first);
  if (first != std::string_view::npos) out.emplace_back(std::string(path) + "::", EstimateSource::kModule);
  for (size_t slash = path.rfind('/'); slash != std::string_view::npos && slash > 0;
       slash = path.rfind('/', slash - 1)) {
    out.emplace_back(std::string(path.substr(0, slash + 1)), EstimateSource::kDirectory);
  }
  out.emplace_back(std::string(), EstimateSource::kSuite);
  return out;
}

DurationEstimator::DurationEstimator(std::vector<std::pair<std::string, double>> known, EstimatorOptions options)
    : options_(options) {
  known_.reserve(known.size());
  for (auto& [id, s] : known) known_.insert_or_assign(std::move(id), s);
}

void DurationEstimator::BuildIndexLocked() const {
  sorted_.reserve(known_.size());
  for (const auto& [id, s] : known_) sorted_.emplace_back(std::string_view(id), s);
  std::sort(sorted_.begin(), sorted_.end());
  indexed_ = true;
}

double DurationEstimator::MedianWithPrefixLocked(const std::string& prefix) const {
  if (auto it = median_cache_.find(prefix); it != median_cache_.end()) return it->second;
  // Every id with this prefix sits in one run of the sorted list.
  auto begin = std::lower_bound(sorted_.begin(), sorted_.end(), std::string_view(prefix),
                                [](const auto& e, std::string_view p) { return e.first < p; });
  auto end = begin;
  while (end != sorted_.end() && end->first.substr(0, prefix.size()) == prefix) ++end;
  double median = -1;
  const size_t n = static_cast<size_t>(end - begin);
  if (n >= std::max<size_t>(1, options_.min_siblings)) {
    std::vector<double> values;
    values.reserve(n);
    for (auto it = begin; it != end; ++it) values.push_back(it->second);
    auto mid = values.begin() + static_cast<ptrdiff_t>(n / 2);
    std::nth_element(values.begin(), mid, values.end());
    median = *mid;
    if (n % 2 == 0) median = (median + *std::max_element(values.begin(), mid)) / 2;
  }
  median_cache_.emplace(prefix, median);
  return median;
}

Estimate DurationEstimator::Get(std::string_view test_id) const {
  if (auto it = known_.find(ToAbsl(test_id)); it != known_.end()) {
    return Estimate{it->second, EstimateSource::kHistory};
  }
  if (known_.empty()) return Estimate{options_.default_s, EstimateSource::kDefault};
  absl::MutexLock l(&mu_);
  if (!indexed_) BuildIndexLocked();
  for (const auto& [prefix, source] : RelativePrefixes(test_id)) {
    double m = MedianWithPrefixLocked(prefix);
    if (m >= 0) return Estimate{m, source};
  }
  return Estimate{options_.default_s, EstimateSource::kDefault};
}

}  // namespace testshard::coordinator

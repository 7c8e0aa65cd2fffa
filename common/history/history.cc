#include "common/history/history.h"

#include <algorithm>
#include <cmath>
#include <exception>

#include "common/status.h"
#include "nlohmann/json.hpp"

namespace testshard::history {

char OutcomeLetter(Outcome o) {
  switch (o) {
    case Outcome::kPassed: return 'P';
    case Outcome::kFailed: return 'F';
    case Outcome::kError: return 'E';
    case Outcome::kSkipped: return 'S';
    case Outcome::kNotRun: return 'N';
  }
  return '?';
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
  size_t index = rank == 0 ? 0 : rank - 1;
  std::nth_element(values.begin(), values.begin() + index, values.end());
  return values[index];
}

void ApplySample(TestHistory& h, const Sample& sample, const HistoryOptions& options) {
  // A test that never ran (cancelled by maxfail, lost with its agent) has told us nothing.
  if (sample.outcome == Outcome::kNotRun) return;
  if (h.test_id.empty()) h.test_id = sample.test_id;
  ++h.runs;
  h.last_seen = std::max(h.last_seen, sample.at);
  h.outcomes.push_back(OutcomeLetter(sample.outcome));
  if (h.outcomes.size() > options.max_recent_outcomes) {
    h.outcomes.erase(0, h.outcomes.size() - options.max_recent_outcomes);
  }
  const bool ran_body = sample.outcome == Outcome::kPassed || sample.outcome == Outcome::kFailed;
  // A negative or NaN time is a broken report, not a duration.
  if (!ran_body || !(sample.duration_s >= 0) || !std::isfinite(sample.duration_s)) return;
  h.ewma_s = h.recent_s.empty() ? sample.duration_s
                                : options.ewma_alpha * sample.duration_s + (1 - options.ewma_alpha) * h.ewma_s;
  h.recent_s.push_back(sample.duration_s);
  if (h.recent_s.size() > options.max_recent_samples) {
    h.recent_s.erase(h.recent_s.begin(), h.recent_s.end() - static_cast<ptrdiff_t>(options.max_recent_samples));
  }
  h.p90_s = Percentile(h.recent_s, 0.9);
}

void ApplySamples(std::vector<TestHistory>& records, std::unordered_map<std::string, size_t>& index,
                  const std::vector<Sample>& samples, const HistoryOptions& options) {
  for (const Sample& s : samples) {
    if (s.outcome == Outcome::kNotRun) continue;
    auto [it, inserted] = index.emplace(s.test_id, records.size());
    if (inserted) {
      records.emplace_back();
      records.back().test_id = s.test_id;
    }
    ApplySample(records[it->second], s, options);
  }
}

void ApplySamples(std::vector<TestHistory>& records, const std::vector<Sample>& samples,
                  const HistoryOptions& options) {
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < records.size(); ++i) index.emplace(records[i].test_id, i);
  ApplySamples(records, index, samples, options);
}

std::vector<Sample> SamplesFromResults(const std::vector<TestCase>& cases, absl::Time at) {
  std::vector<Sample> out;
  out.reserve(cases.size());
  for (const TestCase& c : cases) {
    for (const TestAttempt& a : c.reruns) {
      if (a.outcome != Outcome::kNotRun) out.push_back(Sample{c.id, a.time_s, a.outcome, at});
    }
    if (c.result.outcome != Outcome::kNotRun) out.push_back(Sample{c.id, c.result.time_s, c.result.outcome, at});
  }
  return out;
}

std::vector<std::pair<std::string, double>> KnownDurations(const std::vector<TestHistory>& records) {
  std::vector<std::pair<std::string, double>> out;
  out.reserve(records.size());
  for (const TestHistory& h : records) {
    if (h.has_duration()) out.emplace_back(h.test_id, h.ewma_s);
  }
  return out;
}

bool LooksFlaky(const TestHistory& h) {
  const bool passed = h.outcomes.find('P') != std::string::npos;
  const bool failed = h.outcomes.find_first_of("FE") != std::string::npos;
  return passed && failed;
}

double FailureRate(const TestHistory& h) {
  int executed = 0, failed = 0;
  for (char c : h.outcomes) {
    if (c == 'P' || c == 'F' || c == 'E') ++executed;
    if (c == 'F' || c == 'E') ++failed;
  }
  return executed ? static_cast<double>(failed) / executed : 0;
}

std::string EncodeJson(const TestHistory& h, bool with_id) {
  nlohmann::json j;
  if (with_id) j["id"] = h.test_id;
  j["ewma"] = h.ewma_s;
  j["p90"] = h.p90_s;
  j["recent"] = h.recent_s;
  j["outcomes"] = h.outcomes;
  j["last_seen_us"] = absl::ToUnixMicros(h.last_seen);
  j["runs"] = h.runs;
  // Test ids are Python str, so valid UTF-8; should one not be, replacing a byte beats failing the whole run.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<TestHistory> DecodeJson(std::string_view json, std::string_view test_id) {
  try {
    nlohmann::json j = nlohmann::json::parse(json);
    if (!j.is_object()) return absl::DataLossError("history record is not a JSON object");
    TestHistory h;
    h.test_id = j.contains("id") ? j.at("id").get<std::string>() : std::string(test_id);
    h.ewma_s = j.value("ewma", 0.0);
    h.p90_s = j.value("p90", 0.0);
    h.recent_s = j.value("recent", std::vector<double>{});
    h.outcomes = j.value("outcomes", std::string());
    h.last_seen = absl::FromUnixMicros(j.value("last_seen_us", int64_t{0}));
    h.runs = j.value("runs", int64_t{0});
    return h;
  } catch (const std::exception& e) {
    return absl::DataLossError(std::string("malformed history record: ") + e.what());
  }
}

}  // namespace testshard::history

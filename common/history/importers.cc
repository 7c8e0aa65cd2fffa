#include "common/history/importers.h"

#include <algorithm>
#include <exception>
#include <map>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "common/test_result.h"
#include "nlohmann/json.hpp"
#include "pugixml.hpp"

namespace testshard::history {

absl::StatusOr<std::vector<Sample>> ParseTestDurations(std::string_view json, absl::Time at) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("expected a JSON object of {\"node id\": seconds}");
  std::vector<Sample> out;
  out.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("duration of '", it.key(), "' is not a number"));
    }
    out.push_back(Sample{it.key(), it.value().get<double>(), Outcome::kPassed, at});
  }
  return out;
}

std::string NodeIdFromJunit(std::string_view classname, std::string_view name, std::string_view file,
                            const std::unordered_set<std::string>* known_ids) {
  if (known_ids) {
    // Built once per set; a map from mangled names back to ids.
    static thread_local const std::unordered_set<std::string>* cached_for = nullptr;
    static thread_local std::unordered_map<std::string, std::string> by_mangled;
    if (cached_for != known_ids) {
      by_mangled.clear();
      for (const std::string& id : *known_ids) {
        std::string c, n;
        PytestJunitNames(id, &c, &n);
        by_mangled.emplace(c + '\n' + n, id);
      }
      cached_for = known_ids;
    }
    auto it = by_mangled.find(absl::StrCat(ToAbsl(classname), "\n", ToAbsl(name)));
    if (it != by_mangled.end()) return it->second;
  }
  std::vector<std::string> parts = absl::StrSplit(ToAbsl(classname), '.', absl::SkipEmpty());
  std::string module_path;
  std::vector<std::string> classes;
  if (!file.empty()) {
    std::string dotted(file);
    if (dotted.size() > 3 && dotted.compare(dotted.size() - 3, 3, ".py") == 0) dotted.resize(dotted.size() - 3);
    std::replace(dotted.begin(), dotted.end(), '/', '.');
    const size_t module_parts = std::count(dotted.begin(), dotted.end(), '.') + 1;
    module_path = std::string(file);
    for (size_t i = module_parts; i < parts.size(); ++i) classes.push_back(parts[i]);
  } else {
    size_t first_class = parts.size();
    while (first_class > 1 && parts[first_class - 1].rfind("Test", 0) == 0) --first_class;
    for (size_t i = 0; i < first_class; ++i) {
      if (i) module_path += '/';
      module_path += parts[i];
    }
    if (!module_path.empty()) module_path += ".py";
    classes.assign(parts.begin() + static_cast<ptrdiff_t>(first_class), parts.end());
  }
  std::string id = module_path;
  for (const std::string& c : classes) absl::StrAppend(&id, "::", c);
  if (id.empty()) return std::string(name);
  absl::StrAppend(&id, "::", ToAbsl(name));
  return id;
}

namespace {

int Severity(Outcome o) {
  switch (o) {
    case Outcome::kError: return 3;
    case Outcome::kFailed: return 2;
    case Outcome::kPassed: return 1;
    default: return 0;
  }
}

void Collect(const pugi::xml_node& node, absl::Time at, const std::unordered_set<std::string>* known_ids,
             std::map<std::string, Sample>& by_id, std::vector<std::string>& order) {
  for (const pugi::xml_node& child : node.children()) {
    const std::string_view tag = child.name();
    if (tag == "testsuite" || tag == "testsuites") {
      absl::Time suite_at = at;
      if (const char* ts = child.attribute("timestamp").value(); *ts) {
        absl::Time parsed;
        std::string err;
        // pytest writes local time with an offset; older ones without (taken as UTC then).
        if (absl::ParseTime("%Y-%m-%dT%H:%M:%E*S%Ez", ts, &parsed, &err) ||
            absl::ParseTime("%Y-%m-%dT%H:%M:%E*S", ts, &parsed, &err)) {
          suite_at = parsed;
        }
      }
      Collect(child, suite_at, known_ids, by_id, order);
    } else if (tag == "testcase") {
      Sample s;
      s.test_id = NodeIdFromJunit(child.attribute("classname").value(), child.attribute("name").value(),
                                  child.attribute("file").value(), known_ids);
      s.duration_s = child.attribute("time").as_double(0);
      s.at = at;
      s.outcome = child.child("error")     ? Outcome::kError
                  : child.child("failure") ? Outcome::kFailed
                  : child.child("skipped") ? Outcome::kSkipped
                                           : Outcome::kPassed;
      auto [it, inserted] = by_id.emplace(s.test_id, s);
      if (inserted) {
        order.push_back(s.test_id);
      } else {
        if (Severity(s.outcome) > Severity(it->second.outcome)) it->second.outcome = s.outcome;
        it->second.duration_s = std::max(it->second.duration_s, s.duration_s);
      }
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<Sample>> ParseJunitXml(std::string_view xml, absl::Time default_at,
                                                  const std::unordered_set<std::string>* known_ids) {
  pugi::xml_document doc;
  pugi::xml_parse_result r = doc.load_buffer(xml.data(), xml.size());
  if (!r) {
    return absl::InvalidArgumentError(absl::StrCat("malformed JUnit XML at byte ", r.offset, ": ", r.description()));
  }
  std::map<std::string, Sample> by_id;
  std::vector<std::string> order;
  Collect(doc, default_at, known_ids, by_id, order);
  std::vector<Sample> out;
  out.reserve(order.size());
  for (const std::string& id : order) out.push_back(by_id.at(id));
  return out;
}

std::string ToTestDurations(const std::vector<TestHistory>& records) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  std::vector<const TestHistory*> sorted;
  for (const TestHistory& h : records) {
    if (h.has_duration()) sorted.push_back(&h);
  }
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->test_id < b->test_id; });
  for (const TestHistory* h : sorted) j[h->test_id] = h->ewma_s;
  return j.dump(4, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace testshard::history

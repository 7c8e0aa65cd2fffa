#include "coordinator/work_units.h"

#include <algorithm>
#include <unordered_map>
#include <utility>

namespace testshard::coordinator {

std::optional<Granularity> ParseGranularity(std::string_view name) {
  if (name == "test") return Granularity::kTest;
  if (name == "class") return Granularity::kClass;
  if (name == "module") return Granularity::kModule;
  return std::nullopt;
}

std::string_view GranularityName(Granularity g) {
  switch (g) {
    case Granularity::kTest: return "test";
    case Granularity::kClass: return "class";
    case Granularity::kModule: return "module";
  }
  return "test";
}

std::string_view GroupKey(std::string_view test_id, Granularity g) {
  if (g == Granularity::kTest) return test_id;
  std::string_view base = test_id.substr(0, test_id.find('['));
  if (g == Granularity::kModule) return base.substr(0, base.find("::"));
  size_t first = base.find("::");
  size_t last = base.rfind("::");
  if (first == std::string_view::npos || first == last) return test_id;  // a module-level function
  return base.substr(0, last);
}

std::vector<WorkUnit> BuildUnits(const PlanRequest& request, size_t min_units) {
  const std::vector<std::string>& ids = request.test_ids;
  const bool explicit_groups = request.groups.size() == ids.size();
  std::vector<double> seconds(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    seconds[i] = std::max(kMinTestSeconds, request.estimate ? request.estimate(ids[i]) : 1.0);
  }

  std::vector<WorkUnit> units;
  if (request.granularity == Granularity::kTest && !explicit_groups) {
    // The common case, and the one that has to plan a million tests quickly: one unit per test, no map.
    units.resize(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      units[i].tests.push_back(static_cast<uint32_t>(i));
      units[i].seconds = seconds[i];
    }
  } else {
    std::unordered_map<std::string, size_t> by_key;
    for (size_t i = 0; i < ids.size(); ++i) {
      const bool pinned = explicit_groups && !request.groups[i].empty();
      // Explicit keys live in their own namespace so that a group called "a.py" cannot swallow module a.py.
      std::string key = pinned ? "group:" + request.groups[i]
                               : std::string(GroupKey(ids[i], request.granularity));
      auto [it, inserted] = by_key.emplace(std::move(key), units.size());
      if (inserted) {
        units.emplace_back();
        // A lone test's key is its id, so that it sorts the same as it would at test granularity.
        if (it->first != ids[i]) units.back().key = it->first;
        units.back().pinned = pinned;
      }
      WorkUnit& u = units[it->second];
      u.tests.push_back(static_cast<uint32_t>(i));
      u.seconds += seconds[i];
    }
    for (WorkUnit& u : units) {
      std::sort(u.tests.begin(), u.tests.end(), [&](uint32_t a, uint32_t b) { return ids[a] < ids[b]; });
      // Summed in id order so the total does not depend on collection order, to the last bit.
      u.seconds = 0;
      for (uint32_t t : u.tests) u.seconds += seconds[t];
    }
  }
  auto longer_first = [&ids](const WorkUnit& a, const WorkUnit& b) { return LongerFirst(a, b, ids); };
  std::sort(units.begin(), units.end(), longer_first);

  // Too few units to give every shard one: cut the largest soft units into single tests.
  while (units.size() < min_units) {
    auto it = std::find_if(units.begin(), units.end(),
                           [](const WorkUnit& u) { return !u.pinned && u.tests.size() > 1; });
    if (it == units.end()) break;
    WorkUnit cut = std::move(*it);
    units.erase(it);
    for (uint32_t t : cut.tests) {
      WorkUnit lone;
      lone.tests.push_back(t);
      lone.seconds = seconds[t];
      units.push_back(std::move(lone));
    }
    std::sort(units.begin(), units.end(), longer_first);
  }
  return units;
}

}  // namespace testshard::coordinator

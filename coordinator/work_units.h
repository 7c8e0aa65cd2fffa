// The indivisible pieces a stage is planned in: a test, a class, a module, or an explicit group.
#ifndef TESTSHARD_COORDINATOR_WORK_UNITS_H_
#define TESTSHARD_COORDINATOR_WORK_UNITS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "coordinator/planner.h"

namespace testshard::coordinator {

struct WorkUnit {
  // The group key; empty for a lone test, whose key is its id (not copied: a million-test stage is mostly lone
  // tests). Orders ties deterministically; see UnitKey.
  std::string key;
  absl::InlinedVector<uint32_t, 1> tests;  // indices into the test ids, sorted by test id
  double seconds = 0;           // sum of the tests' estimates
  bool pinned = false;          // an explicit group: never split, even to avoid an empty shard
};

// Parses "test", "class", "module" (as in a stage's config).
std::optional<Granularity> ParseGranularity(std::string_view name);
std::string_view GranularityName(Granularity g);

// The key that groups `test_id` at granularity `g`, from the pytest node id:
//   kTest    -> the id itself
//   kClass   -> "path.py::Class" for a method ("path.py::Outer::Inner" for nested classes); the id itself for a
//               module-level function, which shares no class fixtures with anything
//   kModule  -> "path.py"
// Parameters are cut off first (they may contain "::"), as pytest's own junitxml does.
std::string_view GroupKey(std::string_view test_id, Granularity g);

inline std::string_view UnitKey(const WorkUnit& u, const std::vector<std::string>& ids) {
  return u.key.empty() ? std::string_view(ids[u.tests.front()]) : std::string_view(u.key);
}

// Longest first, ties by key: the order units are planned in.
inline bool LongerFirst(const WorkUnit& a, const WorkUnit& b, const std::vector<std::string>& ids) {
  if (a.seconds != b.seconds) return a.seconds > b.seconds;
  return UnitKey(a, ids) < UnitKey(b, ids);
}

// The floor under every estimate. A zero-second test still costs something, and a zero would let one shard take
// an unbounded number of "free" tests while another sits empty.
inline constexpr double kMinTestSeconds = 1e-3;

// Builds the units of `request`: explicit groups first, then granularity. Estimates come from request.estimate
// (1 s each without one), floored at kMinTestSeconds. When there are fewer than `min_units` units, the largest
// unpinned multi-test units are cut into single tests until there are enough (or nothing more can be cut): a
// granularity is a preference, an explicit group is a promise.
// The result is sorted longest first, ties by key, and is the same whatever order the tests were collected in.
std::vector<WorkUnit> BuildUnits(const PlanRequest& request, size_t min_units = 0);

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_WORK_UNITS_H_

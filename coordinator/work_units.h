// The indivisible pieces a stage is planned in: a test, a class, a module, or an explicit group.
#ifndef TESTSHARD_COORDINATOR_WORK_UNITS_H_
#define TESTSHARD_COORDINATOR_WORK_UNITS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/planner.h"

namespace testshard::coordinator {

struct WorkUnit {
  std::string key;              // the group key, or the test id for a lone test; orders ties deterministically
  std::vector<uint32_t> tests;  // indices into PlanRequest::test_ids, sorted by test id
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

// Bringing a history in from the tools users already have, and taking it out again.
#ifndef TESTSHARD_COMMON_HISTORY_IMPORTERS_H_
#define TESTSHARD_COMMON_HISTORY_IMPORTERS_H_

#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/history/history.h"

namespace testshard::history {

// pytest-split's .test_durations: a flat JSON object {"node id": seconds}. One passed sample per test, at `at`.
// kInvalidArgument (with the offending key) on anything else.
absl::StatusOr<std::vector<Sample>> ParseTestDurations(std::string_view json, absl::Time at);

// The inverse of pytest's junitxml names (PytestJunitNames): the node id for a <testcase>.
//  1. If `known_ids` is given and one of them mangles to exactly (classname, name), that id.
//  2. With a `file` attribute (junit_family=xunit1): file + "::" + the classname's part after the module's dotted
//     path, dots turned into "::", + "::" + name.
//  3. Otherwise (xunit2 writes no file): the trailing classname segments that look like pytest classes ("Test*")
//     are classes, the rest is the module path ("a.b.test_c" -> "a/b/test_c.py").
std::string NodeIdFromJunit(std::string_view classname, std::string_view name, std::string_view file,
                            const std::unordered_set<std::string>* known_ids = nullptr);

// Every <testcase> of a JUnit XML file (any nesting of <testsuites>/<testsuite>) as a sample: failure → failed,
// error → error, skipped → skipped, else passed; time from "time"; when from the enclosing suite's "timestamp",
// else `default_at`. A node id that appears twice (pytest writes a second testcase for a teardown error) becomes
// one sample: the worse outcome, the longer time. kInvalidArgument, with the byte offset, for malformed XML.
absl::StatusOr<std::vector<Sample>> ParseJunitXml(std::string_view xml, absl::Time default_at,
                                                  const std::unordered_set<std::string>* known_ids = nullptr);

// pytest-split's format, from the smoothed durations (so `--store-durations` users can go back).
std::string ToTestDurations(const std::vector<TestHistory>& records);

}  // namespace testshard::history

#endif  // TESTSHARD_COMMON_HISTORY_IMPORTERS_H_

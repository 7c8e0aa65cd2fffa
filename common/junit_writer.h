// Writes one JUnit XML report from structured results.
#ifndef TESTSHARD_COMMON_JUNIT_WRITER_H_
#define TESTSHARD_COMMON_JUNIT_WRITER_H_

#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "common/test_result.h"

namespace testshard {

struct JunitWriteOptions {
  std::string report_name = "testshard";
  // Captured output and failure text longer than this keep their head and tail, with a marker between.
  size_t max_text_bytes = 64 * 1024;
};

// Every count and time is computed from the cases, never taken from an input. Times always have a decimal point.
// Characters XML 1.0 forbids and invalid UTF-8 are replaced, so the report always parses.
// Retried tests use Surefire's form: a flaky pass carries <flakyFailure>/<flakyError> children, a test that
// failed every attempt carries <rerunFailure>/<rerunError>. A "not run" test is a <skipped> with its reason.
absl::Status WriteJunit(const std::vector<TestSuite>& suites, std::ostream& out,
                        const JunitWriteOptions& options = {});

// XML-escapes `text` for use in an attribute or element, replacing forbidden characters and bad UTF-8 by U+FFFD.
std::string XmlEscape(std::string_view text);

// Keeps the first and last max_bytes/2 of `text` (on UTF-8 boundaries) with a note of how much was cut.
std::string TrimMiddle(std::string_view text, size_t max_bytes);

}  // namespace testshard

#endif  // TESTSHARD_COMMON_JUNIT_WRITER_H_

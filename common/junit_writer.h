// Writes one JUnit XML report from structured results, either all at once (WriteJunit) or suite by suite
// (JunitStreamWriter) so that a merge of any size holds one test case in memory at a time.
#ifndef TESTSHARD_COMMON_JUNIT_WRITER_H_
#define TESTSHARD_COMMON_JUNIT_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
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

// The aggregate attributes of a suite or report, computed from its cases. A test case counts once whatever its
// number of attempts; its time is the sum of its attempts. kNotRun counts as skipped.
struct JunitCounts {
  int64_t tests = 0, failures = 0, errors = 0, skipped = 0, flaky = 0;
  double time_s = 0;
  void Add(const TestCase& c);
  // For callers that know a case's final outcome and total time without building the case.
  void Add(Outcome final_outcome, double total_time_s, bool flaky);
  void Add(const JunitCounts& other);
};

// Writes the report incrementally: Begin, then for each suite BeginSuite, WriteCase..., EndSuite, then Finish.
// The caller supplies the counts up front (XML attributes precede the children); WriteJunit computes them.
// Not thread-safe: one writer per thread. Output is buffered; errors surface from Finish.
class JunitStreamWriter {
 public:
  JunitStreamWriter(std::ostream& out, JunitWriteOptions options = {});
  JunitStreamWriter(const JunitStreamWriter&) = delete;
  JunitStreamWriter& operator=(const JunitStreamWriter&) = delete;

  // `properties` become <property name value/> children of <testsuite>.
  void Begin(const JunitCounts& total);
  void BeginSuite(std::string_view name, const JunitCounts& counts,
                  const std::vector<std::pair<std::string, std::string>>& properties = {});
  void WriteCase(const TestCase& c);
  // Cases formatted by AppendJunitCase (on any thread), written where the WriteCase calls would have been.
  void WriteFormatted(std::string_view cases);
  // Suite-level output (e.g. a crashed shard's log) goes after the suite's cases, capped like test output.
  void EndSuite(std::string_view system_out = {}, std::string_view system_err = {});
  // Closes the document and flushes. kDataLoss when the stream failed at any point.
  absl::Status Finish();

 private:
  void Flush();

  std::ostream& out_;
  JunitWriteOptions options_;
  std::string buf_;
};

// A test case whose strings are views, for formatting without copying them: a merge formats straight from the
// bytes it spooled. Valid while the viewed strings live.
struct TestAttemptView {
  Outcome outcome = Outcome::kError;
  double time_s = 0;
  std::string_view message, type, details, system_out, system_err;
};
struct TestCaseView {
  std::string_view id, classname, name, file;
  std::vector<std::pair<std::string_view, std::string_view>> properties;
  TestAttemptView result;
  std::vector<TestAttemptView> reruns;
};

// Appends the XML of one test case, exactly as JunitStreamWriter::WriteCase writes it. Thread-safe.
void AppendJunitCase(const TestCase& c, const JunitWriteOptions& options, std::string* out);
void AppendJunitCase(const TestCaseView& c, const JunitWriteOptions& options, std::string* out);

// XML-escapes `text` for use in an attribute or element, replacing forbidden characters and bad UTF-8 by U+FFFD.
std::string XmlEscape(std::string_view text);

// Appends the escaped form of `text` to `out`. With `attribute`, tab and newline become character references so
// attribute-value normalisation does not turn them into spaces.
void AppendXmlEscaped(std::string* out, std::string_view text, bool attribute = false);

// Keeps the first and last max_bytes/2 of `text` (on UTF-8 boundaries) with a note of how much was cut.
std::string TrimMiddle(std::string_view text, size_t max_bytes);

// Formats seconds the way every report does: fixed, three decimals, never negative ("12.000").
std::string FormatSeconds(double s);
void AppendSeconds(std::string* out, double s);

}  // namespace testshard

#endif  // TESTSHARD_COMMON_JUNIT_WRITER_H_

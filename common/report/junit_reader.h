// Streaming reader for the JUnit XML dialects real tools write: pytest (xunit1, xunit2), GoogleTest, ctest
// --output-junit, Maven Surefire (flaky/rerun elements), Bazel's test.xml, Ant and Jenkins (nested suites).
#ifndef TESTSHARD_COMMON_REPORT_JUNIT_READER_H_
#define TESTSHARD_COMMON_REPORT_JUNIT_READER_H_

#include <cstddef>
#include <cstdint>
#include <istream>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/report/xml_stream.h"
#include "common/test_result.h"

namespace testshard::report {

struct JunitReadOptions {
  // Each text (failure text, system-out, system-err) keeps at most this many bytes, head and tail, as it is read:
  // a gigabyte of captured output never sits in memory.
  size_t max_text_bytes = 64 * 1024;
  XmlLimits limits;
};

// Receives what the reader finds, in document order. Called on the reading thread.
class JunitCaseSink {
 public:
  virtual ~JunitCaseSink() = default;
  // One complete test case (or, after a parse error, the case that was cut off, as an error). `suite` is the
  // innermost enclosing <testsuite>'s name.
  virtual void OnCase(std::string_view suite, TestCase&& test_case) = 0;
  // Output written at suite level (Bazel puts a crashed test's log there).
  virtual void OnSuiteOutput(std::string_view suite, std::string&& system_out, std::string&& system_err) {}
};

struct JunitReadStats {
  int64_t complete_cases = 0;
  // Sum of the `tests` attributes of the outermost suites, -1 when none had one. Used only to tell how many
  // results a truncated file lost; never trusted for counting.
  int64_t declared_tests = -1;
  // The suite being read when the input ended (for placing an error entry).
  std::string last_suite;
};

// Reads one JUnit document. Each case's status is computed from its children (error > failure > skipped >
// passed; several <failure>s are one failed test; GoogleTest's status="notrun"/ctest's status="disabled" without a
// child is skipped as disabled); aggregate attributes are ignored. Missing classname takes the suite's name.
//
// Returns OK for a complete document. Otherwise the parse problem (see ParseXml), prefixed with
// `input_name`; every case completed before it has been delivered, and a case that was cut off is delivered as
// kError with the problem as its message — a truncated file never turns into passes.
// Thread-safe: keeps no state between calls (the sink is called on the calling thread).
absl::Status ReadJunit(std::istream& in, std::string_view input_name, JunitCaseSink& sink,
                       const JunitReadOptions& options = {}, JunitReadStats* stats = nullptr);

// Keeps the first and last halves of a text that arrives in pieces, in bounded memory. Not thread-safe.
class CappedText {
 public:
  explicit CappedText(size_t max_bytes = 64 * 1024) : half_(max_bytes / 2) {}
  void Append(std::string_view piece);
  bool empty() const { return total_ == 0; }
  uint64_t total_bytes() const { return total_; }
  // The text, or its head and tail around a "[testshard: N bytes trimmed]" marker; resets the object.
  std::string Take();
  // The same into `out`, keeping the capacity of both (no allocation per test case in the reader).
  void TakeInto(std::string* out);

 private:
  size_t half_;
  uint64_t total_ = 0;
  std::string head_, tail_;
};

}  // namespace testshard::report

#endif  // TESTSHARD_COMMON_REPORT_JUNIT_READER_H_

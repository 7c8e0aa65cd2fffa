// The structured result of one test, as the coordinator keeps it and the JUnit writer prints it.
#ifndef TESTSHARD_COMMON_TEST_RESULT_H_
#define TESTSHARD_COMMON_TEST_RESULT_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace testshard {

enum class Outcome { kPassed, kFailed, kError, kSkipped, kNotRun };

std::string_view OutcomeName(Outcome o);

// One execution of a test. A retried test keeps its earlier attempts in `reruns`.
struct TestAttempt {
  Outcome outcome = Outcome::kError;
  double time_s = 0;
  std::string message;  // one line: exception type and text, or the skip/not-run reason
  std::string type;     // exception type, when the runner gave one
  std::string details;  // traceback or failure text
  std::string system_out;
  std::string system_err;
};

struct TestCase {
  std::string id;         // the runner's own id (pytest node id); unique within a suite
  std::string classname;  // JUnit classname; derived from id when empty
  std::string name;       // JUnit name; derived from id when empty
  std::string file;
  std::vector<std::pair<std::string, std::string>> properties;  // pytest's record_property, in order
  TestAttempt result;               // the final attempt
  std::vector<TestAttempt> reruns;  // earlier attempts, oldest first
  bool flaky() const { return result.outcome == Outcome::kPassed && !reruns.empty(); }
};

struct TestSuite {
  std::string name;
  std::vector<TestCase> cases;
};

// What pytest's junitxml writes for a node id: classname "pkg.mod.Class" and name "test[params]".
// Mirrors _pytest.junitxml.mangle_test_address so ids can be matched to the XML pytest produced.
void PytestJunitNames(std::string_view node_id, std::string* classname, std::string* name);

}  // namespace testshard

#endif  // TESTSHARD_COMMON_TEST_RESULT_H_

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/runner_adapter.h"
#include "pugixml.hpp"

namespace testshard::agent {
namespace {

// pytest's own exit codes (pytest.ExitCode).
constexpr int kTestsFailed = 1;
constexpr int kNoTestsCollected = 5;

constexpr size_t kTailBytes = 8 * 1024;

std::string Key(const std::string& classname, const std::string& name) { return classname + '\x1f' + name; }

// Folds one <testcase> element into `tc`. pytest writes a second <testcase> with the same name when the call
// failed and the teardown errored too; the failure is kept and the error text appended.
void Fold(const pugi::xml_node& node, TestCase* tc, bool first) {
  TestAttempt& r = tc->result;
  if (first) {
    r.outcome = Outcome::kPassed;
    r.time_s = node.attribute("time").as_double();
  }
  auto take = [&](Outcome o, const pugi::xml_node& el) {
    bool worse = r.outcome == Outcome::kPassed || r.outcome == Outcome::kSkipped;
    if (worse) {
      r.outcome = o;
      r.message = el.attribute("message").value();
      r.type = el.attribute("type").value();
      r.details = el.text().get();
    } else {
      r.details += "\n\n" + std::string(el.attribute("message").value()) + "\n" + el.text().get();
    }
  };
  if (auto el = node.child("failure")) take(Outcome::kFailed, el);
  if (auto el = node.child("error")) take(Outcome::kError, el);
  if (auto el = node.child("skipped"); el && r.outcome == Outcome::kPassed) {
    r.outcome = Outcome::kSkipped;
    r.message = el.attribute("message").value();
    r.type = el.attribute("type").value();
  }
  for (pugi::xml_node p : node.child("properties").children("property")) {
    tc->properties.emplace_back(p.attribute("name").value(), p.attribute("value").value());
  }
  if (auto out = node.child("system-out")) r.system_out += out.text().get();
  if (auto err = node.child("system-err")) r.system_err += err.text().get();
}

}  // namespace

std::vector<std::string> PytestAdapter::CollectArgv(const std::vector<std::string>& command,
                                                    std::string_view markers) const {
  std::vector<std::string> argv = command;
  // no:cacheprovider: agents share one checkout and must not race on .pytest_cache.
  argv.insert(argv.end(), {"--collect-only", "-q", "-p", "no:cacheprovider"});
  if (!markers.empty()) argv.insert(argv.end(), {"-m", std::string(markers)});
  return argv;
}

absl::StatusOr<std::vector<std::string>> PytestAdapter::ParseCollection(const std::string& output,
                                                                        const ProcessResult& result) const {
  if (result.term_signal == 0 && result.exit_code == kNoTestsCollected) return std::vector<std::string>{};
  if (!result.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("pytest collection failed (", result.Describe(), "):\n", output));
  }
  // `-q` prints one node id per line, then a blank line and the summary. Node ids never contain a newline:
  // pytest escapes non-printable characters in parametrised ids.
  std::vector<std::string> ids;
  size_t pos = 0;
  while (pos < output.size()) {
    size_t end = output.find('\n', pos);
    if (end == std::string::npos) end = output.size();
    std::string line = output.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) break;
    ids.push_back(std::move(line));
    pos = end + 1;
  }
  if (ids.empty() || ids.front().rfind("<", 0) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "could not read test ids from pytest --collect-only -q (is -v in addopts?):\n", output.substr(0, 4096)));
  }
  return ids;
}

std::vector<std::string> PytestAdapter::RunArgv(const std::vector<std::string>& command,
                                                const std::vector<std::string>& test_ids, const ShardFiles& files,
                                                int maxfail) const {
  std::vector<std::string> argv = command;
  argv.insert(argv.end(), {"-p", "no:cacheprovider", "--junitxml=" + files.report_path, "-o", "junit_family=xunit2",
                           "-o", "junit_logging=all", "-o", "junit_log_passing_tests=False"});
  if (maxfail > 0) argv.push_back("--maxfail=" + std::to_string(maxfail));
  // "--" ends the options, so an id that begins with "-" stays an id.
  argv.push_back("--");
  argv.insert(argv.end(), test_ids.begin(), test_ids.end());
  return argv;
}

std::vector<TestCase> PytestAdapter::ParseResults(const std::vector<std::string>& test_ids, const ShardFiles& files,
                                                  const ProcessResult& result, int maxfail) const {
  std::vector<TestCase> cases(test_ids.size());
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < test_ids.size(); ++i) {
    cases[i].id = test_ids[i];
    PytestJunitNames(test_ids[i], &cases[i].classname, &cases[i].name);
    index.emplace(Key(cases[i].classname, cases[i].name), i);
  }
  std::vector<bool> seen(test_ids.size(), false);
  std::string problem;
  pugi::xml_document doc;
  pugi::xml_parse_result parsed = doc.load_file(files.report_path.c_str());
  if (!parsed) {
    problem = parsed.status == pugi::status_file_not_found
                  ? "pytest wrote no JUnit report"
                  : absl::StrCat("its JUnit report is unreadable (", parsed.description(), " at byte ", parsed.offset, ")");
  } else {
    int failures = 0;
    // xunit1 and xunit2 both put <testcase> under <testsuite>, with or without a <testsuites> root.
    for (const pugi::xpath_node& x : doc.select_nodes("//testcase")) {
      pugi::xml_node tc = x.node();
      auto it = index.find(Key(tc.attribute("classname").value(), tc.attribute("name").value()));
      if (it == index.end()) continue;  // not one of ours (a plugin's extra entry)
      Fold(tc, &cases[it->second], !seen[it->second]);
      seen[it->second] = true;
    }
    for (size_t i = 0; i < cases.size(); ++i) {
      if (seen[i] && (cases[i].result.outcome == Outcome::kFailed || cases[i].result.outcome == Outcome::kError)) {
        ++failures;
      }
    }
    bool stopped_at_maxfail = maxfail > 0 && failures >= maxfail && result.term_signal == 0 &&
                              result.exit_code == kTestsFailed && !result.timed_out && !result.cancelled;
    if (stopped_at_maxfail) {
      for (size_t i = 0; i < cases.size(); ++i) {
        if (seen[i]) continue;
        cases[i].result.outcome = Outcome::kNotRun;
        cases[i].result.message = absl::StrCat("maxfail (", maxfail, ") reached in this shard");
        seen[i] = true;
      }
    }
    problem = "pytest reported no result for it";
  }
  // Whatever is left had no complete result: an error naming why, with the end of the shard's output.
  std::string why = result.cancelled   ? "the shard was cancelled"
                    : result.timed_out ? absl::StrCat("the shard ", result.Describe())
                                       : absl::StrCat("the shard ended with ", result.Describe());
  std::string tail;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (seen[i]) continue;
    if (tail.empty()) tail = ReadTail(files.output_path, kTailBytes);
    TestAttempt& r = cases[i].result;
    if (result.cancelled) {
      r.outcome = Outcome::kNotRun;
      r.message = "cancelled";
    } else {
      r.outcome = Outcome::kError;
      r.type = "testshard.NoResult";
      r.message = absl::StrCat(problem, "; ", why);
      r.details = tail;
    }
  }
  return cases;
}

}  // namespace testshard::agent

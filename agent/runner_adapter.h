// How the agent drives one kind of test runner: the argv for collecting and for running a list of tests, and how
// the runner's output turns back into one result per test.
#ifndef TESTSHARD_AGENT_RUNNER_ADAPTER_H_
#define TESTSHARD_AGENT_RUNNER_ADAPTER_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/process.h"
#include "common/test_result.h"

namespace testshard::agent {

struct ShardFiles {
  std::string report_path;  // where the runner writes its JUnit XML
  std::string output_path;  // its combined stdout and stderr
};

// Stateless; safe to share between threads.
class RunnerAdapter {
 public:
  virtual ~RunnerAdapter() = default;
  virtual std::vector<std::string> CollectArgv(const std::vector<std::string>& command,
                                               std::string_view markers) const = 0;
  // The collected test ids, in collection order. A collection error is FailedPrecondition carrying the runner's
  // own message; an empty selection is an empty list.
  virtual absl::StatusOr<std::vector<std::string>> ParseCollection(const std::string& output,
                                                                   const ProcessResult& result) const = 0;
  virtual std::vector<std::string> RunArgv(const std::vector<std::string>& command,
                                           const std::vector<std::string>& test_ids, const ShardFiles& files,
                                           int maxfail) const = 0;
  // Exactly one result per id in `test_ids`, in that order, whatever state the report is in: a test with no
  // complete result is an error naming why (crash, timeout, unreadable report), or "not run" when the runner
  // stopped early at `maxfail`.
  virtual std::vector<TestCase> ParseResults(const std::vector<std::string>& test_ids, const ShardFiles& files,
                                             const ProcessResult& result, int maxfail) const = 0;
};

class PytestAdapter final : public RunnerAdapter {
 public:
  std::vector<std::string> CollectArgv(const std::vector<std::string>& command,
                                       std::string_view markers) const override;
  absl::StatusOr<std::vector<std::string>> ParseCollection(const std::string& output,
                                                           const ProcessResult& result) const override;
  std::vector<std::string> RunArgv(const std::vector<std::string>& command, const std::vector<std::string>& test_ids,
                                   const ShardFiles& files, int maxfail) const override;
  std::vector<TestCase> ParseResults(const std::vector<std::string>& test_ids, const ShardFiles& files,
                                     const ProcessResult& result, int maxfail) const override;
};

}  // namespace testshard::agent

#endif  // TESTSHARD_AGENT_RUNNER_ADAPTER_H_

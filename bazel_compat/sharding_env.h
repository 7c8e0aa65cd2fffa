// Bazel's test sharding protocol, seen from the test: which shard this process is, where to say that it understood
// sharding, and where its JUnit XML is expected. Pure logic over an environment map; the caller does the I/O it
// asks for (touching the status file, passing the XML path to the runner).
//
// Bazel sets, for a test with shard_count > 1 (see the Test Encyclopedia):
//   TEST_TOTAL_SHARDS       number of shards, >= 1
//   TEST_SHARD_INDEX        this shard, 0-based, below TEST_TOTAL_SHARDS
//   TEST_SHARD_STATUS_FILE  a file the test must touch to show it shards; Bazel 7+ fails a sharded test that
//                           passes without touching it
//   XML_OUTPUT_FILE         where the test's JUnit XML should go; Bazel writes a fallback one when it is absent
#ifndef TESTSHARD_BAZEL_COMPAT_SHARDING_ENV_H_
#define TESTSHARD_BAZEL_COMPAT_SHARDING_ENV_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace testshard::bazel_compat {

inline constexpr char kTotalShardsVar[] = "TEST_TOTAL_SHARDS";
inline constexpr char kShardIndexVar[] = "TEST_SHARD_INDEX";
inline constexpr char kShardStatusFileVar[] = "TEST_SHARD_STATUS_FILE";
inline constexpr char kXmlOutputFileVar[] = "XML_OUTPUT_FILE";

struct ShardAssignment {
  int index = 0;  // 0 <= index < total
  int total = 1;
};

struct ShardingEnv {
  // Set when both TEST_TOTAL_SHARDS and TEST_SHARD_INDEX are; absent when neither is.
  std::optional<ShardAssignment> shard;
  std::string status_file;      // TEST_SHARD_STATUS_FILE; empty when unset
  std::string xml_output_file;  // XML_OUTPUT_FILE; empty when unset
};

// Reads the protocol's variables from `env`. An empty value counts as unset for the two file variables. Errors are
// InvalidArgument naming the variable: a value that is not a whole number, TEST_TOTAL_SHARDS below 1,
// TEST_SHARD_INDEX negative or not below TEST_TOTAL_SHARDS, or one of the pair set without the other.
// Thread-safe (no state).
absl::StatusOr<ShardingEnv> ParseShardingEnv(const std::map<std::string, std::string>& env);

// This process's environment, as a map for ParseShardingEnv. Reads `environ`: call it while no other thread is
// changing the environment.
std::map<std::string, std::string> ProcessEnvironment();

// Creates `path` if it does not exist and updates its modification time ("touch"). An existing file's contents
// are kept. Errors (NotFound, PermissionDenied, Internal from errno) name TEST_SHARD_STATUS_FILE and the path.
absl::Status TouchStatusFile(const std::string& path);

// True when `argv` runs pytest: argv[0]'s file name starts with "pytest" or "py.test", or the command is
// `... -m pytest`. Only then does XML_OUTPUT_FILE become a --junitxml flag; another runner reads the variable
// itself.
bool RunsPytest(const std::vector<std::string>& argv);

// The arguments to append to a pytest `argv` (before the test ids) so its JUnit XML lands in `xml_output_file`:
// none when the path is empty or argv already names a --junitxml of its own.
std::vector<std::string> PytestJunitArgs(const std::vector<std::string>& argv, const std::string& xml_output_file);

}  // namespace testshard::bazel_compat

#endif  // TESTSHARD_BAZEL_COMPAT_SHARDING_ENV_H_

#include "bazel_compat/sharding_env.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace testshard::bazel_compat {
namespace {

// A whole number in decimal, nothing around it (no sign, spaces or suffix: Bazel writes plain digits, and a
// value that is anything else was set by hand and should be looked at, not guessed).
absl::StatusOr<int> ParseCount(const char* var, const std::string& value) {
  int n = 0;
  const char* end = value.data() + value.size();
  auto [ptr, ec] = std::from_chars(value.data(), end, n);
  if (value.empty() || ec == std::errc::result_out_of_range || ec != std::errc() || ptr != end) {
    return absl::InvalidArgumentError(absl::StrCat(var, "='", value, "' is not a whole number"));
  }
  return n;
}

std::string Lookup(const std::map<std::string, std::string>& env, const char* var) {
  auto it = env.find(var);
  return it == env.end() ? std::string() : it->second;
}

std::string_view Basename(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace

absl::StatusOr<ShardingEnv> ParseShardingEnv(const std::map<std::string, std::string>& env) {
  ShardingEnv out;
  out.status_file = Lookup(env, kShardStatusFileVar);
  out.xml_output_file = Lookup(env, kXmlOutputFileVar);
  auto total_it = env.find(kTotalShardsVar);
  auto index_it = env.find(kShardIndexVar);
  const bool has_total = total_it != env.end(), has_index = index_it != env.end();
  if (!has_total && !has_index) return out;
  if (!has_total) {
    return absl::InvalidArgumentError(absl::StrCat(kShardIndexVar, " is set but ", kTotalShardsVar, " is not"));
  }
  if (!has_index) {
    return absl::InvalidArgumentError(absl::StrCat(kTotalShardsVar, " is set but ", kShardIndexVar, " is not"));
  }
  auto total = ParseCount(kTotalShardsVar, total_it->second);
  if (!total.ok()) return total.status();
  auto index = ParseCount(kShardIndexVar, index_it->second);
  if (!index.ok()) return index.status();
  if (*total < 1) {
    return absl::InvalidArgumentError(absl::StrCat(kTotalShardsVar, "=", *total, " must be at least 1"));
  }
  if (*index < 0 || *index >= *total) {
    return absl::InvalidArgumentError(absl::StrCat(kShardIndexVar, "=", *index, " must be in [0, ",
                                                   kTotalShardsVar, "=", *total, ")"));
  }
  out.shard = ShardAssignment{*index, *total};
  return out;
}

std::map<std::string, std::string> ProcessEnvironment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    size_t eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return env;
}

absl::Status TouchStatusFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 || ::futimens(fd, nullptr) != 0) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    return absl::Status(err == ENOENT || err == ENOTDIR ? absl::StatusCode::kNotFound
                        : err == EACCES || err == EPERM ? absl::StatusCode::kPermissionDenied
                                                        : absl::StatusCode::kInternal,
                        absl::StrCat("cannot touch ", kShardStatusFileVar, "=", path, ": ", std::strerror(err)));
  }
  ::close(fd);
  return absl::OkStatus();
}

bool RunsPytest(const std::vector<std::string>& argv) {
  if (argv.empty()) return false;
  std::string_view program = Basename(argv[0]);
  if (program.starts_with("pytest") || program.starts_with("py.test")) return true;
  for (size_t i = 1; i + 1 < argv.size(); ++i) {
    if (argv[i] == "-m") return argv[i + 1] == "pytest";
  }
  return false;
}

std::vector<std::string> PytestJunitArgs(const std::vector<std::string>& argv, const std::string& xml_output_file) {
  if (xml_output_file.empty()) return {};
  for (const std::string& a : argv) {
    if (a == "--junitxml" || a == "--junit-xml" || a.starts_with("--junitxml=") || a.starts_with("--junit-xml=")) {
      return {};
    }
  }
  return {"--junitxml=" + xml_output_file};
}

}  // namespace testshard::bazel_compat

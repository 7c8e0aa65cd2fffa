#include "common/history/file_history_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <random>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace testshard::history {
namespace {

constexpr std::string_view kFormat = "testshard-history";
constexpr int kVersion = 1;

absl::Status ErrnoStatus(std::string_view what, const std::string& path, int err) {
  std::string message = absl::StrCat(ToAbsl(what), " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT: return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
    case EROFS: return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT: return absl::ResourceExhaustedError(message);
    default: return absl::UnavailableError(message);
  }
}

// Keeps [A-Za-z0-9_-] and percent-encodes the rest, so any project name is one safe file name ("." and ".."
// included).
std::string FileNameFor(std::string_view project) {
  std::string out;
  for (unsigned char c : project) {
    if (std::isalnum(c) || c == '_' || c == '-') {
      out.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::Status MakeDirs(const std::string& path) {
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) return ErrnoStatus("cannot create", partial, errno);
  }
  return absl::OkStatus();
}

// A file descriptor closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Reads the whole history file; an absent file is an empty history.
absl::StatusOr<std::vector<TestHistory>> LoadFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::vector<TestHistory>{};
    return ErrnoStatus("cannot open", path, errno);
  }
  std::string content;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot read", path, errno);
    }
    if (n == 0) break;
    content.append(buf, static_cast<size_t>(n));
  }
  std::vector<TestHistory> records;
  size_t line_no = 0;
  size_t start = 0;
  while (start < content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    std::string_view line(content.data() + start, end - start);
    start = end + 1;
    ++line_no;
    if (line.empty()) continue;
    if (line_no == 1) {
      nlohmann::json header = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!header.is_object() || header.value("format", "") != kFormat) {
        return absl::DataLossError(absl::StrCat(path, ":1: not a testshard history file"));
      }
      if (header.value("version", 0) != kVersion) {
        return absl::DataLossError(
            absl::StrCat(path, ":1: unsupported history version ", header.value("version", 0)));
      }
      continue;
    }
    absl::StatusOr<TestHistory> record = DecodeJson(line);
    if (!record.ok()) return Annotate(record.status(), absl::StrCat(path, ":", line_no));
    records.push_back(*std::move(record));
  }
  return records;
}

}  // namespace

absl::Status CheckProject(std::string_view project) {
  if (project.empty()) return absl::InvalidArgumentError("the project name is empty");
  return absl::OkStatus();
}

namespace {
std::string WithoutTrailingSlash(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}
}  // namespace

FileHistoryStore::FileHistoryStore(std::string dir, HistoryOptions options)
    : dir_(WithoutTrailingSlash(std::move(dir))), options_(options) {}

std::string FileHistoryStore::PathFor(std::string_view project) const {
  return absl::StrCat(dir_, "/history/", FileNameFor(project), ".jsonl");
}

absl::StatusOr<std::vector<TestHistory>> FileHistoryStore::ReadAll(std::string_view project) {
  TS_RETURN_IF_ERROR(CheckProject(project));
  return LoadFile(PathFor(project));
}

absl::StatusOr<std::vector<TestHistory>> FileHistoryStore::Read(std::string_view project,
                                                                const std::vector<std::string>& test_ids) {
  TS_ASSIGN_OR_RETURN(std::vector<TestHistory> all, ReadAll(project));
  std::unordered_set<std::string_view> wanted(test_ids.begin(), test_ids.end());
  std::vector<TestHistory> out;
  for (TestHistory& h : all) {
    if (wanted.count(h.test_id)) out.push_back(std::move(h));
  }
  return out;
}

template <typename Mutate>
absl::Status FileHistoryStore::Rewrite(std::string_view project, Mutate mutate) {
  TS_RETURN_IF_ERROR(CheckProject(project));
  const std::string history_dir = dir_ + "/history";
  TS_RETURN_IF_ERROR(MakeDirs(history_dir));
  const std::string path = PathFor(project);
  const std::string lock_path = path.substr(0, path.size() - 6) + ".lock";

  Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (lock.get() < 0) return ErrnoStatus("cannot open", lock_path, errno);
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return ErrnoStatus("cannot lock", lock_path, errno);
  }
  // Everything below runs with the project's lock held; closing `lock` releases it.

  TS_ASSIGN_OR_RETURN(std::vector<TestHistory> records, LoadFile(path));
  std::unordered_map<std::string, size_t> index;
  index.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) index.emplace(records[i].test_id, i);
  mutate(records, index);

  // A unique temporary name: the lock keeps other writers of this project out, but a crashed writer may have left
  // one behind, which O_EXCL would trip over.
  std::random_device rd;
  const std::string tmp_path = absl::StrCat(path, ".tmp.", ::getpid(), ".", rd());
  Fd out(::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (out.get() < 0) return ErrnoStatus("cannot create", tmp_path, errno);
  absl::Status status = [&]() -> absl::Status {
    nlohmann::json header = {{"format", kFormat}, {"version", kVersion}, {"project", std::string(project)}};
    std::string buffer = header.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    for (const TestHistory& h : records) {
      buffer += EncodeJson(h, /*with_id=*/true);
      buffer += '\n';
      if (buffer.size() >= (1 << 20)) {
        TS_RETURN_IF_ERROR(WriteAll(out.get(), buffer, tmp_path));
        buffer.clear();
      }
    }
    TS_RETURN_IF_ERROR(WriteAll(out.get(), buffer, tmp_path));
    if (::fsync(out.get()) != 0) return ErrnoStatus("cannot fsync", tmp_path, errno);
    if (::close(out.release()) != 0) return ErrnoStatus("cannot close", tmp_path, errno);
    if (::rename(tmp_path.c_str(), path.c_str()) != 0) return ErrnoStatus("cannot rename onto", path, errno);
    // The rename is durable only once the directory entry is.
    Fd dir(::open(history_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() >= 0) ::fsync(dir.get());
    return absl::OkStatus();
  }();
  if (!status.ok()) ::unlink(tmp_path.c_str());
  return status;
}

absl::Status FileHistoryStore::Update(std::string_view project, const std::vector<Sample>& samples) {
  if (samples.empty()) return CheckProject(project);
  return Rewrite(project, [&](std::vector<TestHistory>& records, std::unordered_map<std::string, size_t>& index) {
    ApplySamples(records, index, samples, options_);
  });
}

absl::Status FileHistoryStore::Put(std::string_view project, const std::vector<TestHistory>& puts) {
  if (puts.empty()) return CheckProject(project);
  return Rewrite(project, [&](std::vector<TestHistory>& records, std::unordered_map<std::string, size_t>& index) {
    for (const TestHistory& h : puts) {
      auto [it, inserted] = index.emplace(h.test_id, records.size());
      if (inserted) {
        records.push_back(h);
      } else {
        records[it->second] = h;
      }
    }
  });
}

}  // namespace testshard::history

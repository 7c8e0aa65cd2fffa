#include "common/report/junit_merger.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>

#include "absl/strings/str_format.h"
#include "common/status.h"

namespace testshard::report {
namespace {

constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();

// ---- Key hashing: two independent 64-bit hashes, so 10^6 distinct tests collide with odds near 2^-88; the
// strings themselves are never kept in memory.
uint64_t Mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

uint64_t Hash64(std::string_view s, uint64_t seed) {
  uint64_t h = seed ^ (s.size() * 0x9E3779B97F4A7C15ULL);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t k;
    std::memcpy(&k, s.data() + i, 8);
    h = (h ^ Mix(k + seed)) * 0x9E3779B97F4A7C15ULL;
  }
  uint64_t k = 0;
  std::memcpy(&k, s.data() + i, s.size() - i);
  h = (h ^ Mix(k + seed + s.size())) * 0x9E3779B97F4A7C15ULL;
  return Mix(h);
}

// ---- Spool serialisation of a TestCase: length-prefixed strings, fixed-size numbers.
void PutU32(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), 4); }
void PutStr(std::string* out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}
void PutAttempt(std::string* out, const TestAttempt& a) {
  out->push_back(static_cast<char>(a.outcome));
  out->append(reinterpret_cast<const char*>(&a.time_s), sizeof(double));
  PutStr(out, a.message);
  PutStr(out, a.type);
  PutStr(out, a.details);
  PutStr(out, a.system_out);
  PutStr(out, a.system_err);
}

class Cursor {
 public:
  explicit Cursor(std::string_view data) : data_(data) {}
  uint32_t U32() {
    uint32_t v;
    std::memcpy(&v, data_.data(), 4);
    data_.remove_prefix(4);
    return v;
  }
  std::string Str() {
    uint32_t n = U32();
    std::string s(data_.substr(0, n));
    data_.remove_prefix(n);
    return s;
  }
  TestAttempt Attempt() {
    TestAttempt a;
    a.outcome = static_cast<Outcome>(data_[0]);
    std::memcpy(&a.time_s, data_.data() + 1, sizeof(double));
    data_.remove_prefix(1 + sizeof(double));
    a.message = Str();
    a.type = Str();
    a.details = Str();
    a.system_out = Str();
    a.system_err = Str();
    return a;
  }

 private:
  std::string_view data_;
};

bool FailedOrError(Outcome o) { return o == Outcome::kFailed || o == Outcome::kError; }

// Two records of one test from one input (pytest's extra <testcase> for a teardown error): one attempt.
void MergeSameAttempt(TestCase& a, TestCase&& b) {
  TestAttempt& r = a.result;
  TestAttempt& s = b.result;
  auto join = [](std::string& x, const std::string& y) {
    if (y.empty() || x == y) return;
    x += x.empty() ? y : "\n\n" + y;
  };
  if (OutcomeSeverity(s.outcome) > OutcomeSeverity(r.outcome)) {
    std::swap(r.message, s.message);
    r.outcome = s.outcome;
    r.type = s.type;
  }
  if (!s.message.empty() && s.message != r.message) join(r.details, s.message);
  join(r.details, s.details);
  join(r.system_out, s.system_out);
  join(r.system_err, s.system_err);
  r.time_s = std::max(r.time_s, s.time_s);
  for (TestAttempt& x : b.reruns) a.reruns.push_back(std::move(x));
}

}  // namespace

// An unlinked temporary file that test cases are appended to while reading and read back while writing.
class JunitMerger::Spool {
 public:
  static absl::StatusOr<std::unique_ptr<Spool>> Create(const std::string& dir_option) {
    std::string dir = dir_option;
    if (dir.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      dir = tmp && *tmp ? tmp : "/tmp";
    }
    std::string path = dir + "/testshard-junit-spool-XXXXXX";
    int fd = mkstemp(path.data());
    if (fd < 0) {
      return absl::UnavailableError(absl::StrFormat("cannot create a spool file in %s: %s", dir, std::strerror(errno)));
    }
    unlink(path.c_str());  // gone when the process exits, whatever happens
    return std::unique_ptr<Spool>(new Spool(fd));
  }
  ~Spool() { close(fd_); }

  uint64_t Append(std::string_view data) {
    uint64_t offset = flushed_ + buf_.size();
    buf_.append(data);
    if (buf_.size() >= (1u << 20)) Flush();
    return offset;
  }

  absl::Status Read(uint64_t offset, uint32_t size, std::string* out) {
    out->resize(size);
    if (offset >= flushed_) {
      std::memcpy(out->data(), buf_.data() + (offset - flushed_), size);
      return absl::OkStatus();
    }
    Flush();
    size_t done = 0;
    while (done < size) {
      ssize_t n = pread(fd_, out->data() + done, size - done, static_cast<off_t>(offset + done));
      if (n <= 0) return absl::DataLossError(absl::StrFormat("spool read failed: %s", std::strerror(errno)));
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

  const absl::Status& status() const { return status_; }

 private:
  explicit Spool(int fd) : fd_(fd) {}
  void Flush() {
    size_t done = 0;
    while (done < buf_.size()) {
      ssize_t n = write(fd_, buf_.data() + done, buf_.size() - done);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        if (status_.ok()) {
          status_ = absl::ResourceExhaustedError(absl::StrFormat("spool write failed: %s", std::strerror(errno)));
        }
        break;
      }
      done += static_cast<size_t>(n);
    }
    flushed_ += buf_.size();
    buf_.clear();
  }

  int fd_;
  uint64_t flushed_ = 0;
  std::string buf_;
  absl::Status status_;
};

struct JunitMerger::Record {
  uint64_t offset = 0;
  uint32_t size = 0;
  uint32_t input = 0;
  uint32_t suite = 0;
  uint32_t next = kNone;
  uint32_t n_reruns = 0;
  Outcome outcome = Outcome::kError;
  double result_time = 0;
  double reruns_time = 0;
};

struct JunitMerger::Entry {
  uint32_t first = kNone, last = kNone;
  uint32_t expected = kNone;
  uint32_t last_input = kNone;
  uint32_t distinct_inputs = 0;
};

class JunitMerger::Sink : public JunitCaseSink {
 public:
  Sink(JunitMerger* merger, std::string_view stage, uint32_t input, std::string_view input_name)
      : merger_(merger), stage_(stage), input_(input), input_name_(input_name) {}

  void OnCase(std::string_view suite, TestCase&& c) override {
    std::string_view stage = StageFor(suite);
    absl::Status s = merger_->Add(stage, OutputSuite(stage), input_, false, c);
    if (!s.ok() && status.ok()) status = s;
  }
  void OnSuiteOutput(std::string_view suite, std::string&& out, std::string&& err) override {
    merger_->AddSuiteOutput(OutputSuite(StageFor(suite)), input_name_, out, err);
  }

  std::string_view StageFor(std::string_view suite) const {
    if (!stage_.empty()) return stage_;
    if (!suite.empty()) return suite;
    return input_name_;
  }
  std::string_view OutputSuite(std::string_view stage) const {
    return merger_->options_.suite_per == SuitePer::kInput ? std::string_view(input_name_) : stage;
  }

  absl::Status status;

 private:
  JunitMerger* merger_;
  std::string stage_;
  uint32_t input_;
  std::string input_name_;
};

absl::StatusOr<std::unique_ptr<JunitMerger>> JunitMerger::Create(JunitMergeOptions options) {
  TS_ASSIGN_OR_RETURN(std::unique_ptr<Spool> spool, Spool::Create(options.spool_dir));
  return std::unique_ptr<JunitMerger>(new JunitMerger(std::move(options), std::move(spool)));
}

JunitMerger::JunitMerger(JunitMergeOptions options, std::unique_ptr<Spool> spool)
    : options_(std::move(options)), spool_(std::move(spool)) {}

JunitMerger::~JunitMerger() = default;

uint32_t JunitMerger::SuiteId(std::string_view name) {
  auto [it, inserted] = suite_ids_.try_emplace(std::string(name), static_cast<uint32_t>(suite_names_.size()));
  if (inserted) {
    suite_names_.emplace_back(name);
    suite_outputs_.emplace_back();
  }
  return it->second;
}

absl::Status JunitMerger::Add(std::string_view stage, std::string_view output_suite, uint32_t input, bool expected,
                              const TestCase& c) {
  if (written_) return absl::FailedPreconditionError("JunitMerger: inputs added after Write");
  std::string classname = c.classname, name = c.name;
  if (classname.empty() && name.empty()) PytestJunitNames(c.id, &classname, &name);

  std::string key_text;
  PutStr(&key_text, stage);
  PutStr(&key_text, classname);
  PutStr(&key_text, name);
  Key key{Hash64(key_text, 0x243F6A8885A308D3ULL), Hash64(key_text, 0x13198A2E03707344ULL)};

  std::string blob;
  blob.reserve(256 + c.result.details.size() + c.result.system_out.size() + c.result.system_err.size());
  PutStr(&blob, c.id);
  PutStr(&blob, classname);
  PutStr(&blob, name);
  PutStr(&blob, c.file);
  PutAttempt(&blob, c.result);
  PutU32(&blob, static_cast<uint32_t>(c.reruns.size()));
  for (const TestAttempt& r : c.reruns) PutAttempt(&blob, r);

  Record rec;
  rec.offset = spool_->Append(blob);
  rec.size = static_cast<uint32_t>(blob.size());
  rec.input = input;
  rec.suite = SuiteId(output_suite);
  rec.outcome = c.result.outcome;
  rec.result_time = c.result.time_s;
  rec.n_reruns = static_cast<uint32_t>(c.reruns.size());
  for (const TestAttempt& r : c.reruns) rec.reruns_time += r.time_s;
  uint32_t rec_id = static_cast<uint32_t>(records_.size());
  records_.push_back(rec);

  auto [it, inserted] = index_.try_emplace(key, static_cast<uint32_t>(entries_.size()));
  if (inserted) entries_.emplace_back();
  Entry& e = entries_[it->second];
  if (expected) {
    e.expected = rec_id;
    return absl::OkStatus();
  }
  ++summary_.cases_read;
  if (e.first == kNone) {
    e.first = rec_id;
  } else {
    records_[e.last].next = rec_id;
  }
  e.last = rec_id;
  if (e.last_input != input) {
    e.last_input = input;
    if (++e.distinct_inputs == 2) ++summary_.retried_tests;
  }
  return absl::OkStatus();
}

void JunitMerger::AddSuiteOutput(std::string_view output_suite, std::string_view input_name, std::string_view out,
                                 std::string_view err) {
  std::string blob;
  PutStr(&blob, input_name);
  PutStr(&blob, out);
  PutStr(&blob, err);
  Record rec;
  rec.offset = spool_->Append(blob);
  rec.size = static_cast<uint32_t>(blob.size());
  uint32_t suite = SuiteId(output_suite);
  suite_outputs_[suite].push_back(static_cast<uint32_t>(records_.size()));
  records_.push_back(rec);
}

absl::Status JunitMerger::AddStream(std::istream& in, std::string_view input_name, std::string_view stage) {
  uint32_t input = next_input_++;
  ++summary_.inputs;
  Sink sink(this, stage, input, input_name);
  JunitReadStats stats;
  absl::Status status = ReadJunit(in, input_name, sink, options_.read, &stats);
  TS_RETURN_IF_ERROR(sink.status);
  if (status.ok()) return status;

  summary_.problems.push_back({std::string(input_name), status});
  // One entry for the file itself, so a report built from a broken input can never pass.
  TestCase err;
  err.classname = "testshard.input";
  err.name = std::string(input_name);
  err.file = std::string(input_name);
  err.result.outcome = Outcome::kError;
  err.result.type = "testshard.BrokenInput";
  err.result.message = std::string(ToStd(status.message()));
  err.result.details = absl::StrFormat(
      "%d complete test results were read from %s before the problem%s. Results the file would have held after "
      "that point are missing; their tests are not reported as passed.",
      stats.complete_cases, input_name,
      stats.declared_tests >= 0 ? absl::StrFormat(" (its suites declared %d tests)", stats.declared_tests) : "");
  std::string_view err_stage = sink.StageFor(stats.last_suite);
  TS_RETURN_IF_ERROR(Add(err_stage, sink.OutputSuite(err_stage), input, false, err));
  return status;
}

absl::Status JunitMerger::AddFile(const std::string& path, std::string_view stage) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    absl::Status status = err == ENOENT   ? absl::NotFoundError(absl::StrFormat("%s: no such file", path))
                          : err == EACCES ? absl::PermissionDeniedError(absl::StrFormat("%s: permission denied", path))
                                          : absl::UnavailableError(absl::StrFormat("%s: %s", path, std::strerror(err)));
    // Same treatment as an unparseable file: the missing input is an error entry in the report.
    uint32_t input = next_input_++;
    ++summary_.inputs;
    summary_.problems.push_back({path, status});
    TestCase c;
    c.classname = "testshard.input";
    c.name = path;
    c.file = path;
    c.result.outcome = Outcome::kError;
    c.result.type = "testshard.BrokenInput";
    c.result.message = std::string(ToStd(status.message()));
    Sink sink(this, stage, input, path);
    std::string_view s = sink.StageFor({});
    TS_RETURN_IF_ERROR(Add(s, sink.OutputSuite(s), input, false, c));
    return status;
  }
  return AddStream(in, path, stage);
}

absl::Status JunitMerger::AddCase(std::string_view stage, const TestCase& c, std::string_view input_name) {
  uint32_t input = next_input_++;
  std::string_view suite = options_.suite_per == SuitePer::kInput && !input_name.empty() ? input_name : stage;
  return Add(stage, suite, input, false, c);
}

absl::Status JunitMerger::AddExpected(std::string_view stage, const TestCase& placeholder) {
  return Add(stage, stage, kNone, true, placeholder);
}

TestCase JunitMerger::Load(uint32_t record) const {
  const Record& r = records_[record];
  std::string blob;
  absl::Status s = spool_->Read(r.offset, r.size, &blob);
  TestCase c;
  if (!s.ok()) {
    c.result.outcome = Outcome::kError;
    c.result.message = std::string(ToStd(s.message()));
    return c;
  }
  Cursor cur(blob);
  c.id = cur.Str();
  c.classname = cur.Str();
  c.name = cur.Str();
  c.file = cur.Str();
  c.result = cur.Attempt();
  uint32_t n = cur.U32();
  for (uint32_t i = 0; i < n; ++i) c.reruns.push_back(cur.Attempt());
  return c;
}

TestCase JunitMerger::Combine(const Entry& e) const {
  if (e.first == kNone) return Load(e.expected);
  std::vector<TestCase> attempts;
  uint32_t prev_input = kNone;
  for (uint32_t r = e.first; r != kNone; r = records_[r].next) {
    TestCase c = Load(r);
    if (!attempts.empty() && records_[r].input == prev_input) {
      MergeSameAttempt(attempts.back(), std::move(c));
    } else {
      attempts.push_back(std::move(c));
    }
    prev_input = records_[r].input;
  }
  TestCase out = std::move(attempts.back());
  std::vector<TestAttempt> reruns;
  bool passed_earlier = false;
  for (size_t i = 0; i + 1 < attempts.size(); ++i) {
    for (TestAttempt& r : attempts[i].reruns) reruns.push_back(std::move(r));
    if (FailedOrError(attempts[i].result.outcome)) {
      reruns.push_back(std::move(attempts[i].result));
    } else if (attempts[i].result.outcome == Outcome::kPassed) {
      passed_earlier = true;
    }
  }
  for (TestAttempt& r : out.reruns) reruns.push_back(std::move(r));
  out.reruns = std::move(reruns);
  if (passed_earlier && out.result.outcome != Outcome::kPassed) {
    out.result.message += " (passed in an earlier attempt)";
  }
  return out;
}

absl::Status JunitMerger::Write(std::ostream& out) {
  if (written_) return absl::FailedPreconditionError("JunitMerger::Write called twice");
  written_ = true;
  TS_RETURN_IF_ERROR(spool_->status());

  // Pass 1, in memory: each test's final outcome, total time and output suite, exactly as Combine will build
  // the case, so the counts written up front agree with the cases written after.
  size_t n_suites = suite_names_.size();
  std::vector<std::vector<uint32_t>> members(n_suites);
  std::vector<JunitCounts> counts(n_suites);
  JunitCounts total;
  struct Group {
    Outcome outcome;
    double result_time, reruns_time;
    uint32_t n_reruns, suite, input;
  };
  std::vector<Group> groups;
  for (uint32_t ei = 0; ei < entries_.size(); ++ei) {
    const Entry& e = entries_[ei];
    groups.clear();
    uint32_t start = e.first != kNone ? e.first : e.expected;
    for (uint32_t ri = start; ri != kNone; ri = e.first != kNone ? records_[ri].next : kNone) {
      const Record& r = records_[ri];
      if (!groups.empty() && groups.back().input == r.input) {
        Group& g = groups.back();
        if (OutcomeSeverity(r.outcome) > OutcomeSeverity(g.outcome)) g.outcome = r.outcome;
        g.result_time = std::max(g.result_time, r.result_time);
        g.reruns_time += r.reruns_time;
        g.n_reruns += r.n_reruns;
      } else {
        groups.push_back({r.outcome, r.result_time, r.reruns_time, r.n_reruns, r.suite, r.input});
      }
    }
    const Group& last = groups.back();
    double time = last.result_time + last.reruns_time;
    bool reran = last.n_reruns > 0;
    for (size_t i = 0; i + 1 < groups.size(); ++i) {
      time += groups[i].reruns_time;
      reran = reran || groups[i].n_reruns > 0;
      if (FailedOrError(groups[i].outcome)) {
        time += groups[i].result_time;
        reran = true;
      }
    }
    counts[last.suite].Add(last.outcome, time, last.outcome == Outcome::kPassed && reran);
    members[last.suite].push_back(ei);
  }
  for (const JunitCounts& c : counts) total.Add(c);

  // Pass 2: stream the cases back from the spool, suite by suite.
  JunitStreamWriter w(out, options_.write);
  w.Begin(total);
  for (size_t s = 0; s < n_suites; ++s) {
    if (members[s].empty() && suite_outputs_[s].empty()) continue;
    w.BeginSuite(suite_names_[s], counts[s]);
    for (uint32_t ei : members[s]) w.WriteCase(Combine(entries_[ei]));
    CappedText sys_out(options_.write.max_text_bytes), sys_err(options_.write.max_text_bytes);
    for (uint32_t ri : suite_outputs_[s]) {
      std::string blob;
      TS_RETURN_IF_ERROR(spool_->Read(records_[ri].offset, records_[ri].size, &blob));
      Cursor cur(blob);
      std::string input = cur.Str(), o = cur.Str(), e = cur.Str();
      if (!o.empty()) sys_out.Append(absl::StrFormat("[testshard: from %s]\n%s\n", input, o));
      if (!e.empty()) sys_err.Append(absl::StrFormat("[testshard: from %s]\n%s\n", input, e));
    }
    w.EndSuite(sys_out.Take(), sys_err.Take());
  }
  summary_.counts = total;
  return w.Finish();
}

absl::Status JunitMerger::WriteFile(const std::string& path) {
  std::string tmp = path + ".testshard-tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::UnavailableError(absl::StrFormat("%s: cannot create: %s", tmp, std::strerror(errno)));
    absl::Status s = Write(out);
    out.close();
    if (s.ok() && !out) s = absl::DataLossError("write failed");
    if (!s.ok()) {
      std::remove(tmp.c_str());
      return Annotate(s, path);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrFormat("%s: cannot rename into place: %s", path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace testshard::report

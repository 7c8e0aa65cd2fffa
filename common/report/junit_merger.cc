#include "common/report/junit_merger.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <atomic>
#include <deque>
#include <functional>
#include <limits>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/report/xml_stream.h"
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
    std::string s;
    StrInto(&s);
    return s;
  }
  void StrInto(std::string* s) {
    uint32_t n = U32();
    s->assign(data_.data(), n);
    data_.remove_prefix(n);
  }
  void AttemptInto(TestAttempt* a) {
    a->outcome = static_cast<Outcome>(data_[0]);
    std::memcpy(&a->time_s, data_.data() + 1, sizeof(double));
    data_.remove_prefix(1 + sizeof(double));
    StrInto(&a->message);
    StrInto(&a->type);
    StrInto(&a->details);
    StrInto(&a->system_out);
    StrInto(&a->system_err);
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

// Sorts by key, keeping arrival order among equal keys: a stable LSD radix sort on the top 32 bits of the key,
// then the few runs that share those (about n^2/2^33 keys) are ordered by the whole key and arrival.
template <typename KeyRef>
void SortKeys(std::vector<KeyRef>* keys) {
  std::vector<KeyRef> tmp(keys->size());
  for (int shift = 32; shift < 64; shift += 8) {
    size_t count[257] = {};
    for (const KeyRef& k : *keys) ++count[((k.key.a >> shift) & 0xFF) + 1];
    for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
    for (const KeyRef& k : *keys) tmp[count[(k.key.a >> shift) & 0xFF]++] = k;
    keys->swap(tmp);
  }
  for (size_t i = 0; i < keys->size();) {
    size_t j = i + 1;
    while (j < keys->size() && ((*keys)[j].key.a >> 32) == ((*keys)[i].key.a >> 32)) ++j;
    if (j - i > 1) {
      std::sort(keys->begin() + i, keys->begin() + j, [](const KeyRef& x, const KeyRef& y) {
        if (x.key.a != y.key.a) return x.key.a < y.key.a;
        if (x.key.b != y.key.b) return x.key.b < y.key.b;
        return x.record < y.record;
      });
    }
    i = j;
  }
}

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
  for (auto& p : b.properties) {
    if (std::find(a.properties.begin(), a.properties.end(), p) == a.properties.end()) a.properties.push_back(std::move(p));
  }
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

  // Reads are served from a window of the file: the writer asks for records in nearly the order they were
  // spooled, so one read syscall serves thousands of records.
  absl::Status Read(uint64_t offset, uint32_t size, std::string* out) {
    out->resize(size);
    if (offset >= flushed_) {
      std::memcpy(out->data(), buf_.data() + (offset - flushed_), size);
      return absl::OkStatus();
    }
    if (offset < window_start_ || offset + size > window_start_ + window_.size()) {
      Flush();
      window_.resize(std::max<size_t>(size, kWindowBytes));
      size_t done = 0;
      while (done < window_.size()) {
        ssize_t n = pread(fd_, window_.data() + done, window_.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return absl::DataLossError(absl::StrFormat("spool read failed: %s", std::strerror(errno)));
        if (n == 0) break;
        done += static_cast<size_t>(n);
      }
      window_.resize(done);
      window_start_ = offset;
      if (done < size) return absl::DataLossError("spool read past its end");
    }
    std::memcpy(out->data(), window_.data() + (offset - window_start_), size);
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

  static constexpr size_t kWindowBytes = 1 << 20;
  int fd_;
  uint64_t flushed_ = 0;
  std::string buf_;
  std::string window_;
  uint64_t window_start_ = 0;
  absl::Status status_;
};

struct JunitMerger::Record {
  uint64_t offset = 0;
  uint32_t size = 0;
  uint32_t input = 0;
  uint32_t suite = 0;
  uint32_t n_reruns = 0;
  Outcome outcome = Outcome::kError;
  bool expected = false;  // an AddExpected placeholder
  double result_time = 0;
  double reruns_time = 0;
};

// One test's records, as a chain through next_ starting at its first record.
struct JunitMerger::Test {
  uint32_t head = kNone;
};

// A test case (or suite-level output) made ready for the index off the merging thread: its key hashed and its
// record serialised. Producing one touches no merger state, so readers on other threads can do it.
struct JunitMerger::Prepared {
  bool suite_output = false;
  Key key{0, 0};
  std::string blob;
  std::string output_suite;
  Outcome outcome = Outcome::kError;
  uint32_t n_reruns = 0;
  double result_time = 0, reruns_time = 0;
};

namespace {

std::string_view StageFor(std::string_view given, std::string_view suite, std::string_view input_name) {
  if (!given.empty()) return given;
  if (!suite.empty()) return suite;
  return input_name;
}

}  // namespace

void JunitMerger::PrepareCase(std::string_view stage, std::string_view output_suite, const TestCase& c,
                              Prepared* p) {
  std::string derived_classname, derived_name;
  const std::string* classname = &c.classname;
  const std::string* name = &c.name;
  if (c.classname.empty() && c.name.empty()) {
    PytestJunitNames(c.id, &derived_classname, &derived_name);
    classname = &derived_classname;
    name = &derived_name;
  }
  // The key text goes first into the blob's buffer, is hashed, and is then overwritten by the record.
  std::string& blob = p->blob;
  blob.clear();
  PutStr(&blob, stage);
  PutStr(&blob, *classname);
  PutStr(&blob, *name);
  p->key = Key{Hash64(blob, 0x243F6A8885A308D3ULL), Hash64(blob, 0x13198A2E03707344ULL)};
  blob.clear();
  PutStr(&blob, c.id);
  PutStr(&blob, *classname);
  PutStr(&blob, *name);
  PutStr(&blob, c.file);
  PutU32(&blob, static_cast<uint32_t>(c.properties.size()));
  for (const auto& [key, value] : c.properties) {
    PutStr(&blob, key);
    PutStr(&blob, value);
  }
  PutAttempt(&blob, c.result);
  PutU32(&blob, static_cast<uint32_t>(c.reruns.size()));
  for (const TestAttempt& r : c.reruns) PutAttempt(&blob, r);
  p->suite_output = false;
  p->output_suite.assign(output_suite);
  p->outcome = c.result.outcome;
  p->result_time = c.result.time_s;
  p->n_reruns = static_cast<uint32_t>(c.reruns.size());
  p->reruns_time = 0;
  for (const TestAttempt& r : c.reruns) p->reruns_time += r.time_s;
}

void JunitMerger::PrepareSuiteOutput(std::string_view output_suite, std::string_view input_name,
                                     std::string_view out, std::string_view err, Prepared* p) {
  p->suite_output = true;
  p->blob.clear();
  PutStr(&p->blob, input_name);
  PutStr(&p->blob, out);
  PutStr(&p->blob, err);
  p->output_suite.assign(output_suite);
}

// Reads one JUnit document into Prepared items, handed to `emit` in document order.
class JunitMerger::Reader : public JunitCaseSink {
 public:
  Reader(SuitePer suite_per, std::string_view stage, std::string_view input_name,
         std::function<void(Prepared&&)> emit)
      : suite_per_(suite_per), stage_(stage), input_name_(input_name), emit_(std::move(emit)) {}

  void OnCase(std::string_view suite, TestCase&& c) override {
    std::string_view stage = StageFor(stage_, suite, input_name_);
    // scratch_ keeps its buffers unless `emit_` takes them (the threaded reader does).
    PrepareCase(stage, OutputSuite(stage), c, &scratch_);
    emit_(std::move(scratch_));
  }
  void OnSuiteOutput(std::string_view suite, std::string&& out, std::string&& err) override {
    Prepared p;
    PrepareSuiteOutput(OutputSuite(StageFor(stage_, suite, input_name_)), input_name_, out, err, &p);
    emit_(std::move(p));
  }
  std::string_view OutputSuite(std::string_view stage) const {
    return suite_per_ == SuitePer::kInput ? std::string_view(input_name_) : stage;
  }

 private:
  SuitePer suite_per_;
  std::string stage_;
  std::string input_name_;
  std::function<void(Prepared&&)> emit_;
  Prepared scratch_;
};

absl::StatusOr<std::unique_ptr<JunitMerger>> JunitMerger::Create(JunitMergeOptions options) {
  TS_ASSIGN_OR_RETURN(std::unique_ptr<Spool> spool, Spool::Create(options.spool_dir));
  return std::unique_ptr<JunitMerger>(new JunitMerger(std::move(options), std::move(spool)));
}

JunitMerger::JunitMerger(JunitMergeOptions options, std::unique_ptr<Spool> spool)
    : options_(std::move(options)), spool_(std::move(spool)) {}

JunitMerger::~JunitMerger() = default;

uint32_t JunitMerger::SuiteId(std::string_view name) {
  if (last_suite_id_ != kNone && name == suite_names_[last_suite_id_]) return last_suite_id_;
  auto it = suite_ids_.find(ToAbsl(name));
  if (it == suite_ids_.end()) {
    it = suite_ids_.emplace(std::string(name), static_cast<uint32_t>(suite_names_.size())).first;
    suite_names_.emplace_back(name);
    suite_outputs_.emplace_back();
  }
  last_suite_id_ = it->second;
  return it->second;
}

absl::Status JunitMerger::Commit(Prepared&& p, uint32_t input, bool expected) {
  if (written_) return absl::FailedPreconditionError("JunitMerger: inputs added after Write");
  Record rec;
  rec.offset = spool_->Append(p.blob);
  rec.size = static_cast<uint32_t>(p.blob.size());
  uint32_t rec_id = static_cast<uint32_t>(records_.size());
  if (p.suite_output) {
    suite_outputs_[SuiteId(p.output_suite)].push_back(rec_id);
    records_.push_back(rec);
    return absl::OkStatus();
  }
  rec.input = input;
  rec.expected = expected;
  rec.suite = SuiteId(p.output_suite);
  rec.outcome = p.outcome;
  rec.result_time = p.result_time;
  rec.n_reruns = p.n_reruns;
  rec.reruns_time = p.reruns_time;
  records_.push_back(rec);

  // No lookup here: keys are only appended, and sorted once at Write. A hash probe per case was the slowest
  // thing in the merge (a cache miss each); one sort of 24-byte keys is much cheaper.
  keys_.push_back({p.key, rec_id, expected ? kNone : input});
  if (!expected) ++summary_.cases_read;
  return absl::OkStatus();
}

absl::Status JunitMerger::FinishInput(uint32_t input, std::string_view input_name, std::string_view stage,
                                      const absl::Status& status, const JunitReadStats& stats) {
  if (status.ok()) return status;
  summary_.problems.push_back({std::string(input_name), status});
  // One entry for the file itself, so a report built from a broken or missing input can never pass.
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
  std::string_view err_stage = StageFor(stage, stats.last_suite, input_name);
  Prepared p;
  PrepareCase(err_stage, options_.suite_per == SuitePer::kInput ? input_name : err_stage, err, &p);
  TS_RETURN_IF_ERROR(Commit(std::move(p), input, false));
  return status;
}

absl::Status JunitMerger::AddStream(std::istream& in, std::string_view input_name, std::string_view stage) {
  uint32_t input = next_input_++;
  ++summary_.inputs;
  absl::Status commit_status;
  Reader reader(options_.suite_per, stage, input_name, [&](Prepared&& p) {
    absl::Status s = Commit(std::move(p), input, false);
    if (!s.ok() && commit_status.ok()) commit_status = s;
  });
  JunitReadStats stats;
  absl::Status status = ReadJunit(in, input_name, reader, options_.read, &stats);
  TS_RETURN_IF_ERROR(commit_status);
  return FinishInput(input, input_name, stage, status, stats);
}

namespace {

absl::Status OpenError(const std::string& path) {
  int err = errno;
  if (err == ENOENT) return absl::NotFoundError(absl::StrFormat("%s: no such file", path));
  if (err == EACCES) return absl::PermissionDeniedError(absl::StrFormat("%s: permission denied", path));
  return absl::UnavailableError(absl::StrFormat("%s: %s", path, std::strerror(err)));
}

}  // namespace

absl::Status JunitMerger::AddFile(const std::string& path, std::string_view stage) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    absl::Status status = OpenError(path);
    uint32_t input = next_input_++;
    ++summary_.inputs;
    return FinishInput(input, path, stage, status, JunitReadStats());
  }
  return AddStream(in, path, stage);
}

// One reader thread's output for one input, consumed in input order by the merging thread. Bounded, so a
// reader running ahead on a huge file waits instead of buffering it.
struct JunitMerger::Channel {
  static constexpr size_t kMaxPendingBytes = 8u << 20;
  absl::Mutex mu;
  std::deque<std::vector<Prepared>> batches ABSL_GUARDED_BY(mu);
  size_t pending_bytes ABSL_GUARDED_BY(mu) = 0;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::Status status ABSL_GUARDED_BY(mu);
  JunitReadStats stats ABSL_GUARDED_BY(mu);
};

std::vector<absl::Status> JunitMerger::AddFiles(const std::vector<JunitFileInput>& inputs, int threads) {
  std::vector<absl::Status> results(inputs.size());
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min<int>(threads, static_cast<int>(inputs.size()));
  if (threads <= 1) {
    for (size_t i = 0; i < inputs.size(); ++i) results[i] = AddFile(inputs[i].path, inputs[i].stage);
    return results;
  }
  std::vector<std::unique_ptr<Channel>> channels;
  for (size_t i = 0; i < inputs.size(); ++i) channels.push_back(std::make_unique<Channel>());
  std::atomic<size_t> next{0};
  SuitePer suite_per = options_.suite_per;
  JunitReadOptions read_options = options_.read;
  auto work = [&] {
    // Inputs are taken in order and each is finished before the next, so the merging thread, which drains
    // them in order, always finds its current input being read: the bounded channels cannot deadlock.
    for (size_t i = next++; i < inputs.size(); i = next++) {
      Channel& ch = *channels[i];
      std::vector<Prepared> batch;
      size_t batch_bytes = 0;
      auto flush = [&] {
        if (batch.empty()) return;
        absl::MutexLock l(&ch.mu);
        ch.mu.Await(absl::Condition(
            +[](Channel* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu) {
              return c->pending_bytes < Channel::kMaxPendingBytes;
            },
            &ch));
        ch.pending_bytes += batch_bytes;
        ch.batches.push_back(std::move(batch));
        batch.clear();
        batch_bytes = 0;
      };
      Reader reader(suite_per, inputs[i].stage, inputs[i].path, [&](Prepared&& p) {
        batch_bytes += p.blob.size() + 64;
        batch.push_back(std::move(p));
        if (batch.size() >= 512 || batch_bytes >= (1u << 20)) flush();
      });
      JunitReadStats stats;
      absl::Status status;
      std::ifstream in(inputs[i].path, std::ios::binary);
      if (!in) {
        status = OpenError(inputs[i].path);
      } else {
        status = ReadJunit(in, inputs[i].path, reader, read_options, &stats);
      }
      flush();
      absl::MutexLock l(&ch.mu);
      ch.status = status;
      ch.stats = stats;
      ch.done = true;
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);

  for (size_t i = 0; i < inputs.size(); ++i) {
    Channel& ch = *channels[i];
    uint32_t input = next_input_++;
    ++summary_.inputs;
    absl::Status commit_status;
    while (true) {
      std::vector<Prepared> batch;
      size_t bytes = 0;
      {
        absl::MutexLock l(&ch.mu);
        ch.mu.Await(absl::Condition(
            +[](Channel* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu) { return c->done || !c->batches.empty(); },
            &ch));
        if (ch.batches.empty()) break;  // done and drained
        batch = std::move(ch.batches.front());
        ch.batches.pop_front();
        for (const Prepared& p : batch) bytes += p.blob.size() + 64;
        ch.pending_bytes -= bytes;
      }
      for (Prepared& p : batch) {
        absl::Status s = Commit(std::move(p), input, false);
        if (!s.ok() && commit_status.ok()) commit_status = s;
      }
    }
    absl::Status status;
    JunitReadStats stats;
    {
      absl::MutexLock l(&ch.mu);
      status = ch.status;
      stats = ch.stats;
    }
    results[i] = commit_status.ok() ? FinishInput(input, inputs[i].path, inputs[i].stage, status, stats)
                                    : commit_status;
    channels[i].reset();  // its memory is no longer needed
  }
  for (std::thread& t : pool) t.join();
  return results;
}

absl::Status JunitMerger::AddCase(std::string_view stage, const TestCase& c, std::string_view input_name) {
  uint32_t input = next_input_++;
  std::string_view suite = options_.suite_per == SuitePer::kInput && !input_name.empty() ? input_name : stage;
  Prepared p;
  PrepareCase(stage, suite, c, &p);
  return Commit(std::move(p), input, false);
}

absl::Status JunitMerger::AddExpected(std::string_view stage, const TestCase& placeholder) {
  Prepared p;
  PrepareCase(stage, stage, placeholder, &p);
  return Commit(std::move(p), kNone, true);
}

TestCase JunitMerger::Load(uint32_t record) const {
  TestCase c;
  LoadInto(record, &c);
  return c;
}

void JunitMerger::LoadInto(uint32_t record, TestCase* c) const {
  const Record& r = records_[record];
  absl::Status s = spool_->Read(r.offset, r.size, &load_buffer_);
  c->reruns.clear();
  if (!s.ok()) {
    *c = TestCase();
    c->result.outcome = Outcome::kError;
    c->result.message = std::string(ToStd(s.message()));
    return;
  }
  Cursor cur(load_buffer_);
  cur.StrInto(&c->id);
  cur.StrInto(&c->classname);
  cur.StrInto(&c->name);
  cur.StrInto(&c->file);
  c->properties.resize(cur.U32());
  for (auto& [key, value] : c->properties) {
    cur.StrInto(&key);
    cur.StrInto(&value);
  }
  cur.AttemptInto(&c->result);
  uint32_t n = cur.U32();
  for (uint32_t i = 0; i < n; ++i) cur.AttemptInto(&c->reruns.emplace_back());
}

TestCase JunitMerger::Combine(const Test& t) const {
  std::vector<TestCase> attempts;
  uint32_t prev_input = kNone, expected = kNone;
  for (uint32_t r = t.head; r != kNone; r = next_[r]) {
    if (records_[r].expected) {
      expected = r;
      continue;
    }
    TestCase c = Load(r);
    if (!attempts.empty() && records_[r].input == prev_input) {
      MergeSameAttempt(attempts.back(), std::move(c));
    } else {
      attempts.push_back(std::move(c));
    }
    prev_input = records_[r].input;
  }
  if (attempts.empty()) return Load(expected);
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

  // Chain the records of each test: sort the keys (arrival order kept among equal ones), link each run through
  // next_, and mark its first record. Everything after walks records in arrival order, which is also the order
  // of the spool, so memory and spool are read front to back.
  SortKeys(&keys_);
  next_.assign(records_.size(), kNone);
  std::vector<bool> head(records_.size(), false);
  for (size_t i = 0; i < keys_.size();) {
    size_t j = i + 1;
    while (j < keys_.size() && keys_[j].key == keys_[i].key) ++j;
    head[keys_[i].record] = true;
    uint32_t inputs = 0, last_input = kNone;
    for (size_t k = i; k < j; ++k) {
      // Only keys_ is read here (in hash order); records_ would be a cache miss per test.
      if (k + 1 < j) next_[keys_[k].record] = keys_[k + 1].record;
      uint32_t input = keys_[k].input;
      if (input != kNone && input != last_input) {
        last_input = input;
        ++inputs;
      }
    }
    if (inputs > 1) ++summary_.retried_tests;
    i = j;
  }
  std::vector<KeyRef>().swap(keys_);
  std::vector<Test> tests;
  for (uint32_t r = 0; r < records_.size(); ++r) {
    if (head[r]) tests.push_back({r});
  }

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
  for (uint32_t ti = 0; ti < tests.size(); ++ti) {
    const Test& t = tests[ti];
    groups.clear();
    uint32_t expected = kNone;
    for (uint32_t ri = t.head; ri != kNone; ri = next_[ri]) {
      const Record& r = records_[ri];
      if (r.expected) {
        expected = ri;
        continue;
      }
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
    if (groups.empty()) {
      const Record& r = records_[expected];
      groups.push_back({r.outcome, r.result_time, r.reruns_time, r.n_reruns, r.suite, r.input});
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
    members[last.suite].push_back(ti);
  }
  for (const JunitCounts& c : counts) total.Add(c);

  // Pass 2: stream the cases back from the spool, suite by suite.
  JunitStreamWriter w(out, options_.write);
  w.Begin(total);
  for (size_t s = 0; s < n_suites; ++s) {
    if (members[s].empty() && suite_outputs_[s].empty()) continue;
    w.BeginSuite(suite_names_[s], counts[s]);
    TestCase single;  // reused: most tests have one record, which needs no combining
    for (uint32_t ti : members[s]) {
      uint32_t head = tests[ti].head;
      if (next_[head] == kNone && !records_[head].expected) {
        LoadInto(head, &single);
        w.WriteCase(single);
      } else {
        w.WriteCase(Combine(tests[ti]));
      }
    }
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
  return WriteThroughTemp(path, [this](std::ostream& out) { return Write(out); });
}

}  // namespace testshard::report

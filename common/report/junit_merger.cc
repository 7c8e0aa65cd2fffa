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
#include <filesystem>
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
// The report is formatted in blocks of this many cases (or spooled bytes), the unit handed to a thread.
// Small, so the few blocks in flight reuse a few buffers instead of faulting in fresh memory.
constexpr size_t kBlockCases = 1024;
constexpr size_t kBlockBytes = 128 << 10;

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

// Both hashes of a test's identity in one pass, over its pieces as they are (no joined copy), each piece led by its
// length so that ("ab", "c") and ("a", "bc") differ. The two lanes are independent chains, so they run side by side.
class KeyHasher {
 public:
  void Piece(std::string_view s) {
    Word(s.size());
    size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      uint64_t k;
      std::memcpy(&k, s.data() + i, 8);
      Word(k);
    }
    if (i < s.size()) {
      uint64_t k = 0;
      std::memcpy(&k, s.data() + i, s.size() - i);
      Word(k);
    }
  }
  uint64_t a() const { return Mix(a_); }
  uint64_t b() const { return Mix(b_); }

 private:
  static constexpr uint64_t kSeedA = 0x243F6A8885A308D3ULL, kSeedB = 0x13198A2E03707344ULL;
  static constexpr uint64_t kOdd = 0x9E3779B97F4A7C15ULL;
  void Word(uint64_t k) {
    a_ = (a_ ^ Mix(k + kSeedA)) * kOdd;
    b_ = (b_ ^ Mix(k + kSeedB)) * kOdd;
  }
  uint64_t a_ = kSeedA, b_ = kSeedB;
};

// ---- Spool serialisation of a TestCase: length-prefixed strings, fixed-size numbers.
// A record is written in one piece: its size summed first, the chunk's buffer grown once, the fields copied in.
// Growing the buffer field by field (each growth zeroing its bytes first) was 8% of a merge's CPU.
size_t StrBytes(std::string_view s) { return 4 + s.size(); }
size_t AttemptBytes(const TestAttempt& a) {
  return 1 + sizeof(double) + StrBytes(a.message) + StrBytes(a.type) + StrBytes(a.details) +
         StrBytes(a.system_out) + StrBytes(a.system_err);
}

class RecordWriter {
 public:
  RecordWriter(std::vector<char>* out, size_t bytes) {
    size_t at = out->size();
    out->resize(at + bytes);
    p_ = out->data() + at;
  }
  void U32(uint32_t v) {
    std::memcpy(p_, &v, 4);
    p_ += 4;
  }
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    if (!s.empty()) std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  void Attempt(const TestAttempt& a) {
    *p_++ = static_cast<char>(a.outcome);
    std::memcpy(p_, &a.time_s, sizeof(double));
    p_ += sizeof(double);
    Str(a.message);
    Str(a.type);
    Str(a.details);
    Str(a.system_out);
    Str(a.system_err);
  }

 private:
  char* p_;
};

// Reads a record back as views of the bytes it was read from.
class Cursor {
 public:
  explicit Cursor(std::string_view data) : data_(data) {}
  uint32_t U32() {
    uint32_t v;
    std::memcpy(&v, data_.data(), 4);
    data_.remove_prefix(4);
    return v;
  }
  std::string_view Str() {
    uint32_t n = U32();
    std::string_view s = data_.substr(0, n);
    data_.remove_prefix(n);
    return s;
  }
  void Attempt(TestAttemptView* a) {
    a->outcome = static_cast<Outcome>(data_[0]);
    std::memcpy(&a->time_s, data_.data() + 1, sizeof(double));
    data_.remove_prefix(1 + sizeof(double));
    a->message = Str();
    a->type = Str();
    a->details = Str();
    a->system_out = Str();
    a->system_err = Str();
  }

 private:
  std::string_view data_;
};

// Sorts by key, keeping arrival order among equal keys: a stable LSD radix sort on the top 32 bits of the key,
// then the few runs that share those (about n^2/2^33 keys) are ordered by the whole key and arrival.
template <typename KeyRef>
void SortKeys(HugeVector<KeyRef>* keys) {
  HugeVector<KeyRef> tmp(keys->size());
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

// One reader's window onto the spool file.
struct JunitMerger::SpoolWindow {
  std::vector<char> bytes;
  size_t len = 0;
  uint64_t start = 0;
};

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
  ~Spool() {
    close(fd_);
    HugePageAllocator<char>().deallocate(buf_, kCapacity);
  }
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Returns the offset of `data` in the spool. Small appends are gathered; a large one (a reader's chunk) is
  // written straight from the caller's buffer.
  uint64_t Append(std::string_view data) {
    uint64_t offset = flushed_ + used_;
    if (data.size() >= kBufferBytes / 4) {
      Flush();
      WriteAll(data);
      return offset;
    }
    std::memcpy(buf_ + used_, data.data(), data.size());  // fits: used_ < kBufferBytes before, see kCapacity
    used_ += data.size();
    if (used_ >= kBufferBytes) Flush();
    return offset;
  }

  // Reads are served from a window of the file: the writer asks for records in nearly the order they were
  // spooled, so one read syscall serves thousands of records. Call Flush first; then any number of threads can
  // read at once, each with its own window (pread moves no file offset). The view lasts until the window's
  // next use.
  absl::StatusOr<std::string_view> View(uint64_t offset, uint32_t size, SpoolWindow* w) const {
    if (offset + size > flushed_) return absl::DataLossError("spool read past its end");
    if (offset < w->start || offset + size > w->start + w->len) {
      const size_t window = std::max<size_t>(size, kWindowBytes);
      if (w->bytes.size() < window) w->bytes.resize(window);
      size_t want = std::min<uint64_t>(w->bytes.size(), flushed_ - offset);
      size_t done = 0;
      while (done < want) {
        ssize_t n = pread(fd_, w->bytes.data() + done, want - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return absl::DataLossError(absl::StrFormat("spool read failed: %s", std::strerror(errno)));
        if (n == 0) break;
        done += static_cast<size_t>(n);
      }
      w->start = offset;
      w->len = done;
      if (done < size) return absl::DataLossError("spool read past its end");
    }
    return std::string_view(w->bytes.data() + (offset - w->start), size);
  }

  void Flush() {
    WriteAll(std::string_view(buf_, used_));
    used_ = 0;
  }
  const absl::Status& status() const { return status_; }

 private:
  explicit Spool(int fd) : fd_(fd), buf_(HugePageAllocator<char>().allocate(kCapacity)) {}
  void WriteAll(std::string_view data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = write(fd_, data.data() + done, data.size() - done);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        if (status_.ok()) {
          status_ = absl::ResourceExhaustedError(absl::StrFormat("spool write failed: %s", std::strerror(errno)));
        }
        break;
      }
      done += static_cast<size_t>(n);
    }
    flushed_ += data.size();
  }

  static constexpr size_t kBufferBytes = 1 << 20;
  // Appends smaller than a quarter of kBufferBytes go through the buffer, so it never holds more than this.
  static constexpr size_t kCapacity = kBufferBytes + kBufferBytes / 4;
  static constexpr size_t kWindowBytes = 192 << 10;
  int fd_;
  uint64_t flushed_ = 0;
  // A plain array, not a vector: a vector with a custom allocator copies in byte by byte (libstdc++ turns an
  // insert into memmove only for std::allocator), and that loop was 8% of a 100,000-test merge's CPU.
  char* buf_;
  size_t used_ = 0;
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

// Test cases (and suite-level output) made ready for the index off the merging thread: keys hashed, records
// serialised back to back in one buffer that goes to the spool in one write. Producing one touches no merger
// state, so readers on other threads can; handing over a chunk of up to 1,024 cases costs one lock, not one per
// case, and allocates nothing per case. Chunks are small, on the ordinary heap, and recycled: 1 MiB
// chunks in huge pages had two of them zeroed each, a fifth of a 100,000-test merge on some VMs.
struct JunitMerger::Chunk {
  struct Item {
    Key key{0, 0};
    uint32_t offset = 0, size = 0;  // of the record in `data`
    uint32_t output_suite = 0;      // index into suites
    uint32_t n_reruns = 0;
    bool suite_output = false;
    Outcome outcome = Outcome::kError;
    double result_time = 0, reruns_time = 0;
  };
  static constexpr size_t kFullBytes = 128 << 10;
  static constexpr size_t kFullItems = 1024;

  Chunk() {
    data.reserve(kFullBytes + (16 << 10));
    items.reserve(kFullItems);
  }
  bool full() const { return data.size() >= kFullBytes || items.size() >= kFullItems; }
  bool empty() const { return items.empty(); }
  size_t bytes() const { return data.size() + items.size() * sizeof(Item); }
  uint32_t Suite(std::string_view name) {
    if (suites.empty() || suites.back() != name) suites.emplace_back(name);
    return static_cast<uint32_t>(suites.size() - 1);
  }
  void Clear() {
    data.clear();
    items.clear();
    suites.clear();
  }

  std::vector<char> data;
  std::vector<Item> items;
  std::vector<std::string> suites;  // consecutive items mostly share one, stored once per run of them
};

namespace {

std::string_view StageFor(std::string_view given, std::string_view suite, std::string_view input_name) {
  if (!given.empty()) return given;
  if (!suite.empty()) return suite;
  return input_name;
}

}  // namespace

void JunitMerger::PrepareCase(std::string_view stage, std::string_view output_suite, const TestCase& c,
                              Chunk* chunk) {
  std::string derived_classname, derived_name;
  const std::string* classname = &c.classname;
  const std::string* name = &c.name;
  if (c.classname.empty() && c.name.empty()) {
    PytestJunitNames(c.id, &derived_classname, &derived_name);
    classname = &derived_classname;
    name = &derived_name;
  }
  Chunk::Item& item = chunk->items.emplace_back();
  KeyHasher hash;
  hash.Piece(stage);
  hash.Piece(*classname);
  hash.Piece(*name);
  item.key = Key{hash.a(), hash.b()};
  size_t bytes = StrBytes(c.id) + StrBytes(*classname) + StrBytes(*name) + StrBytes(c.file) + 4 +
                 AttemptBytes(c.result) + 4;
  for (const auto& [key, value] : c.properties) bytes += StrBytes(key) + StrBytes(value);
  for (const TestAttempt& r : c.reruns) bytes += AttemptBytes(r);
  item.offset = static_cast<uint32_t>(chunk->data.size());
  item.size = static_cast<uint32_t>(bytes);
  RecordWriter w(&chunk->data, bytes);
  w.Str(c.id);
  w.Str(*classname);
  w.Str(*name);
  w.Str(c.file);
  w.U32(static_cast<uint32_t>(c.properties.size()));
  for (const auto& [key, value] : c.properties) {
    w.Str(key);
    w.Str(value);
  }
  w.Attempt(c.result);
  w.U32(static_cast<uint32_t>(c.reruns.size()));
  for (const TestAttempt& r : c.reruns) w.Attempt(r);
  item.output_suite = chunk->Suite(output_suite);
  item.outcome = c.result.outcome;
  item.result_time = c.result.time_s;
  item.n_reruns = static_cast<uint32_t>(c.reruns.size());
  for (const TestAttempt& r : c.reruns) item.reruns_time += r.time_s;
}

void JunitMerger::PrepareSuiteOutput(std::string_view output_suite, std::string_view input_name,
                                     std::string_view out, std::string_view err, Chunk* chunk) {
  Chunk::Item& item = chunk->items.emplace_back();
  item.suite_output = true;
  size_t bytes = StrBytes(input_name) + StrBytes(out) + StrBytes(err);
  item.offset = static_cast<uint32_t>(chunk->data.size());
  item.size = static_cast<uint32_t>(bytes);
  RecordWriter w(&chunk->data, bytes);
  w.Str(input_name);
  w.Str(out);
  w.Str(err);
  item.output_suite = chunk->Suite(output_suite);
}

// Reads one JUnit document into chunks, handed to `emit` in document order when full and once more by Finish.
// `emit` returns the chunk to fill next: the same one emptied (when it merged it on this thread) or another
// (when it passed the full one to the merging thread).
class JunitMerger::Reader : public JunitCaseSink {
 public:
  using Emit = std::function<std::unique_ptr<Chunk>(std::unique_ptr<Chunk>)>;
  Reader(SuitePer suite_per, std::string_view stage, std::string_view input_name, std::unique_ptr<Chunk> chunk,
         Emit emit)
      : suite_per_(suite_per), stage_(stage), input_name_(input_name), chunk_(std::move(chunk)),
        emit_(std::move(emit)) {}

  void OnCase(std::string_view suite, TestCase&& c) override {
    std::string_view stage = StageFor(stage_, suite, input_name_);
    PrepareCase(stage, OutputSuite(stage), c, chunk_.get());
    if (chunk_->full()) chunk_ = emit_(std::move(chunk_));
  }
  void OnSuiteOutput(std::string_view suite, std::string&& out, std::string&& err) override {
    PrepareSuiteOutput(OutputSuite(StageFor(stage_, suite, input_name_)), input_name_, out, err, chunk_.get());
    if (chunk_->full()) chunk_ = emit_(std::move(chunk_));
  }
  // Emits what is left; returns the chunk last returned by `emit` (or the one given, if it never ran).
  std::unique_ptr<Chunk> Finish() {
    if (!chunk_->empty()) chunk_ = emit_(std::move(chunk_));
    return std::move(chunk_);
  }
  std::string_view OutputSuite(std::string_view stage) const {
    return suite_per_ == SuitePer::kInput ? std::string_view(input_name_) : stage;
  }

 private:
  SuitePer suite_per_;
  std::string stage_;
  std::string input_name_;
  std::unique_ptr<Chunk> chunk_;
  Emit emit_;
};

absl::StatusOr<std::unique_ptr<JunitMerger>> JunitMerger::Create(JunitMergeOptions options) {
  TS_ASSIGN_OR_RETURN(std::unique_ptr<Spool> spool, Spool::Create(options.spool_dir));
  return std::unique_ptr<JunitMerger>(new JunitMerger(std::move(options), std::move(spool)));
}

JunitMerger::JunitMerger(JunitMergeOptions options, std::unique_ptr<Spool> spool)
    : options_(std::move(options)), spool_(std::move(spool)), scratch_(std::make_unique<Chunk>()) {}

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

absl::Status JunitMerger::Commit(Chunk& chunk, uint32_t input, bool expected) {
  if (written_) {
    chunk.Clear();
    return absl::FailedPreconditionError("JunitMerger: inputs added after Write");
  }
  uint64_t base = spool_->Append(std::string_view(chunk.data.data(), chunk.data.size()));
  std::vector<uint32_t> suite_ids(chunk.suites.size());
  for (size_t i = 0; i < chunk.suites.size(); ++i) suite_ids[i] = SuiteId(chunk.suites[i]);
  for (const Chunk::Item& item : chunk.items) {
    Record rec;
    rec.offset = base + item.offset;
    rec.size = item.size;
    uint32_t rec_id = static_cast<uint32_t>(records_.size());
    if (item.suite_output) {
      suite_outputs_[suite_ids[item.output_suite]].push_back(rec_id);
      records_.push_back(rec);
      continue;
    }
    rec.input = input;
    rec.expected = expected;
    rec.suite = suite_ids[item.output_suite];
    rec.outcome = item.outcome;
    rec.result_time = item.result_time;
    rec.n_reruns = item.n_reruns;
    rec.reruns_time = item.reruns_time;
    records_.push_back(rec);
    // No lookup here: keys are only appended, and sorted once at Write. A hash probe per case was the slowest
    // thing in the merge (a cache miss each); one sort of 24-byte keys is much cheaper.
    keys_.push_back({item.key, rec_id, expected ? kNone : input});
    if (!expected) ++summary_.cases_read;
  }
  chunk.Clear();
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
  PrepareCase(err_stage, options_.suite_per == SuitePer::kInput ? input_name : err_stage, err, scratch_.get());
  TS_RETURN_IF_ERROR(Commit(*scratch_, input, false));
  return status;
}

absl::Status JunitMerger::AddStream(std::istream& in, std::string_view input_name, std::string_view stage) {
  uint32_t input = next_input_++;
  ++summary_.inputs;
  absl::Status commit_status;
  Reader reader(options_.suite_per, stage, input_name, std::move(scratch_), [&](std::unique_ptr<Chunk> chunk) {
    absl::Status s = Commit(*chunk, input, false);
    if (!s.ok() && commit_status.ok()) commit_status = s;
    return chunk;
  });
  JunitReadStats stats;
  absl::Status status = ReadJunit(in, input_name, reader, options_.read, &stats);
  scratch_ = reader.Finish();
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

// The reader threads' output, consumed input by input, in order, by the merging thread. One lock for all of it,
// taken once per chunk of up to 1,024 cases. Bounded: a reader waits while its input has kMaxInputBytes pending,
// or while kMaxTotalBytes are pending in all and its input is not the one being merged. That one never waits on
// the total, so the merging thread always finds its current input moving and the bounds cannot deadlock. (With a
// bound per input alone, the readers of many small files ran ahead with as many of them as scheduling allowed:
// 2.7–9.3 MB waiting over 40 runs of the bench's 64 files, and a peak of 36 MB instead of 25.)
struct JunitMerger::Channels {
  static constexpr size_t kMaxInputBytes = 1u << 20;
  static constexpr size_t kMaxTotalBytes = 4u << 20;
  struct Input {
    std::deque<std::unique_ptr<Chunk>> batches;
    size_t pending_bytes = 0;
    bool done = false;
    absl::Status status;
    JunitReadStats stats;
  };
  explicit Channels(size_t n) : inputs(n) {}
  absl::Mutex mu;
  std::vector<Input> inputs ABSL_GUARDED_BY(mu);
  size_t total_bytes ABSL_GUARDED_BY(mu) = 0;
  size_t merging ABSL_GUARDED_BY(mu) = 0;  // the input the merging thread is on
};

std::vector<absl::Status> JunitMerger::AddFiles(const std::vector<JunitFileInput>& inputs, int threads) {
  std::vector<absl::Status> results(inputs.size());
  // Growing keys_ and records_ by doubling copied them and faulted in fresh pages at each step (a twentieth of
  // a large merge).
  // Pytest writes about 100 bytes per test case; reserving by that is address space, touched only as it fills.
  uint64_t bytes = 0;
  for (const JunitFileInput& in : inputs) {
    std::error_code ec;
    uintmax_t n = std::filesystem::file_size(in.path, ec);
    if (!ec) bytes += n;
  }
  size_t expected_cases = std::min<uint64_t>(bytes / 100, uint64_t{1} << 22);
  keys_.reserve(keys_.size() + expected_cases);
  records_.reserve(records_.size() + expected_cases);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min<int>(threads, static_cast<int>(inputs.size()));
  if (threads <= 1) {
    for (size_t i = 0; i < inputs.size(); ++i) results[i] = AddFile(inputs[i].path, inputs[i].stage);
    return results;
  }
  Channels channels(inputs.size());
  // Merged chunks go back to the readers: fresh ones would be faulted in page by page every time.
  absl::Mutex free_mu;
  std::vector<std::unique_ptr<Chunk>> free_chunks;
  auto take_chunk = [&] {
    absl::MutexLock l(&free_mu);
    if (free_chunks.empty()) return std::make_unique<Chunk>();
    std::unique_ptr<Chunk> c = std::move(free_chunks.back());
    free_chunks.pop_back();
    return c;
  };
  std::atomic<size_t> next{0};
  SuitePer suite_per = options_.suite_per;
  JunitReadOptions read_options = options_.read;
  auto work = [&] {
    // Inputs are taken in order and each is finished before the next, so the input being merged is always
    // being read or done.
    for (size_t i = next++; i < inputs.size(); i = next++) {
      Reader reader(suite_per, inputs[i].stage, inputs[i].path, take_chunk(), [&](std::unique_ptr<Chunk> full) {
        absl::MutexLock l(&channels.mu);
        auto may_send = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(channels.mu) {
          return channels.inputs[i].pending_bytes < Channels::kMaxInputBytes &&
                 (i == channels.merging || channels.total_bytes < Channels::kMaxTotalBytes);
        };
        channels.mu.Await(absl::Condition(&may_send));
        channels.inputs[i].pending_bytes += full->bytes();
        channels.total_bytes += full->bytes();
        channels.inputs[i].batches.push_back(std::move(full));
        return take_chunk();
      });
      JunitReadStats stats;
      absl::Status status;
      std::ifstream in(inputs[i].path, std::ios::binary);
      if (!in) {
        status = OpenError(inputs[i].path);
      } else {
        status = ReadJunit(in, inputs[i].path, reader, read_options, &stats);
      }
      std::unique_ptr<Chunk> last = reader.Finish();  // emptied
      {
        absl::MutexLock l(&free_mu);
        free_chunks.push_back(std::move(last));
      }
      absl::MutexLock l(&channels.mu);
      channels.inputs[i].status = status;
      channels.inputs[i].stats = stats;
      channels.inputs[i].done = true;
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);

  for (size_t i = 0; i < inputs.size(); ++i) {
    uint32_t input = next_input_++;
    ++summary_.inputs;
    absl::Status commit_status;
    {
      absl::MutexLock l(&channels.mu);
      channels.merging = i;  // its reader may now run past the total bound
    }
    while (true) {
      std::unique_ptr<Chunk> chunk;
      {
        absl::MutexLock l(&channels.mu);
        Channels::Input& in = channels.inputs[i];
        auto ready = [&in]() { return in.done || !in.batches.empty(); };
        channels.mu.Await(absl::Condition(&ready));
        if (in.batches.empty()) break;  // done and drained
        chunk = std::move(in.batches.front());
        in.batches.pop_front();
        in.pending_bytes -= chunk->bytes();
        channels.total_bytes -= chunk->bytes();
      }
      absl::Status s = Commit(*chunk, input, false);
      if (!s.ok() && commit_status.ok()) commit_status = s;
      absl::MutexLock l(&free_mu);
      free_chunks.push_back(std::move(chunk));
    }
    absl::Status status;
    JunitReadStats stats;
    {
      absl::MutexLock l(&channels.mu);
      status = channels.inputs[i].status;
      stats = channels.inputs[i].stats;
    }
    results[i] = commit_status.ok() ? FinishInput(input, inputs[i].path, inputs[i].stage, status, stats)
                                    : commit_status;
  }
  for (std::thread& t : pool) t.join();
  return results;
}

absl::Status JunitMerger::AddCase(std::string_view stage, const TestCase& c, std::string_view input_name) {
  uint32_t input = next_input_++;
  std::string_view suite = options_.suite_per == SuitePer::kInput && !input_name.empty() ? input_name : stage;
  PrepareCase(stage, suite, c, scratch_.get());
  return Commit(*scratch_, input, false);
}

absl::Status JunitMerger::AddExpected(std::string_view stage, const TestCase& placeholder) {
  PrepareCase(stage, stage, placeholder, scratch_.get());
  return Commit(*scratch_, kNone, true);
}

absl::Status JunitMerger::LoadView(uint32_t record, TestCaseView* c, SpoolWindow* w) const {
  const Record& r = records_[record];
  TS_ASSIGN_OR_RETURN(std::string_view blob, spool_->View(r.offset, r.size, w));
  Cursor cur(blob);
  c->id = cur.Str();
  c->classname = cur.Str();
  c->name = cur.Str();
  c->file = cur.Str();
  c->properties.resize(cur.U32());
  for (auto& [key, value] : c->properties) {
    key = cur.Str();
    value = cur.Str();
  }
  cur.Attempt(&c->result);
  c->reruns.resize(cur.U32());
  for (TestAttemptView& a : c->reruns) cur.Attempt(&a);
  return absl::OkStatus();
}

namespace {
TestAttempt Own(const TestAttemptView& a) {
  TestAttempt o;
  o.outcome = a.outcome;
  o.time_s = a.time_s;
  o.message = a.message;
  o.type = a.type;
  o.details = a.details;
  o.system_out = a.system_out;
  o.system_err = a.system_err;
  return o;
}
}  // namespace

TestCase JunitMerger::Load(uint32_t record, SpoolWindow* w) const {
  TestCaseView v;
  absl::Status s = LoadView(record, &v, w);
  TestCase c;
  if (!s.ok()) {
    c.result.outcome = Outcome::kError;
    c.result.message = std::string(ToStd(s.message()));
    return c;
  }
  c.id = v.id;
  c.classname = v.classname;
  c.name = v.name;
  c.file = v.file;
  for (const auto& [key, value] : v.properties) c.properties.emplace_back(key, value);
  c.result = Own(v.result);
  for (const TestAttemptView& a : v.reruns) c.reruns.push_back(Own(a));
  return c;
}

TestCase JunitMerger::Combine(const Test& t, SpoolWindow* w) const {
  std::vector<TestCase> attempts;
  uint32_t prev_input = kNone, expected = kNone;
  for (uint32_t r = t.head; r != kNone; r = next_[r]) {
    if (records_[r].expected) {
      expected = r;
      continue;
    }
    TestCase c = Load(r, w);
    if (!attempts.empty() && records_[r].input == prev_input) {
      MergeSameAttempt(attempts.back(), std::move(c));
    } else {
      attempts.push_back(std::move(c));
    }
    prev_input = records_[r].input;
  }
  if (attempts.empty()) return Load(expected, w);
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

// Formats the report's blocks on worker threads, at most two blocks per thread ahead of the writer (memory
// stays bounded), and hands them over in order. With one thread it formats each block when asked, on the
// caller's thread.
class JunitMerger::BlockFormatter {
 public:
  using Format = std::function<void(size_t block, SpoolWindow* window, std::string* out)>;
  BlockFormatter(size_t blocks, int threads, Format format) : format_(std::move(format)), slots_(blocks) {
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    threads = static_cast<int>(std::min<size_t>(threads, blocks));
    if (threads <= 1) return;
    ahead_ = 2 * static_cast<size_t>(threads);
    for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { Work(); });
  }
  ~BlockFormatter() {
    {
      absl::MutexLock l(&mu_);
      stop_ = true;
    }
    for (std::thread& t : workers_) t.join();
  }

  // Block i's text; blocks are taken in order. Valid until the next call.
  std::string_view Take(size_t i, SpoolWindow* window) {
    if (workers_.empty()) {
      format_(i, window, &current_);
      return current_;
    }
    absl::MutexLock l(&mu_);
    auto ready = [this, i]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return slots_[i].ready; };
    mu_.Await(absl::Condition(&ready));
    if (current_.capacity() > 0) spare_.push_back(std::move(current_));
    current_ = std::move(slots_[i].text);
    taken_ = i + 1;
    return current_;
  }

 private:
  struct Slot {
    bool ready = false;
    std::string text;
  };
  void Work() {
    SpoolWindow window;
    while (true) {
      size_t i;
      std::string text;
      {
        absl::MutexLock l(&mu_);
        auto can_go = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || next_ >= slots_.size() || next_ < taken_ + ahead_;
        };
        mu_.Await(absl::Condition(&can_go));
        if (stop_ || next_ >= slots_.size()) return;
        i = next_++;
        if (!spare_.empty()) {
          text = std::move(spare_.back());
          spare_.pop_back();
        }
      }
      format_(i, &window, &text);
      absl::MutexLock l(&mu_);
      slots_[i].text = std::move(text);
      slots_[i].ready = true;
    }
  }

  Format format_;
  std::string current_;
  std::vector<std::thread> workers_;
  size_t ahead_ = 0;
  absl::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> spare_ ABSL_GUARDED_BY(mu_);  // written blocks' buffers, for reuse
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;   // the next block a worker formats
  size_t taken_ ABSL_GUARDED_BY(mu_) = 0;  // blocks the writer has taken
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

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
  HugeVector<KeyRef>().swap(keys_);
  HugeVector<Test> tests;
  for (uint32_t r = 0; r < records_.size(); ++r) {
    if (head[r]) tests.push_back({r});
  }

  // Pass 1, in memory: each test's final outcome, total time and output suite, exactly as Combine will build
  // the case, so the counts written up front agree with the cases written after.
  size_t n_suites = suite_names_.size();
  std::vector<HugeVector<uint32_t>> members(n_suites);
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

  // Pass 2: the cases come back from the spool in blocks, formatted (on several threads when asked) and
  // written in order, suite by suite.
  spool_->Flush();
  TS_RETURN_IF_ERROR(spool_->status());
  struct Block {
    uint32_t suite;
    size_t begin, end;  // a range of members[suite]
  };
  std::vector<Block> blocks;
  for (uint32_t s = 0; s < n_suites; ++s) {
    size_t bytes = 0, begin = 0;
    for (size_t i = 0; i < members[s].size(); ++i) {
      bytes += records_[tests[members[s][i]].head].size;
      if (i + 1 - begin >= kBlockCases || bytes >= kBlockBytes) {
        blocks.push_back({s, begin, i + 1});
        begin = i + 1;
        bytes = 0;
      }
    }
    if (begin < members[s].size()) blocks.push_back({s, begin, members[s].size()});
  }
  auto format = [&](const Block& b, SpoolWindow* window, std::string* formatted) {
    formatted->clear();
    TestCaseView single;  // reused: most tests have one record, formatted from the spool's bytes as they are
    for (size_t i = b.begin; i < b.end; ++i) {
      const Test& t = tests[members[b.suite][i]];
      if (next_[t.head] == kNone && !records_[t.head].expected && LoadView(t.head, &single, window).ok()) {
        AppendJunitCase(single, options_.write, formatted);
      } else {  // several records to combine, or a spool read error (Load makes it the test's error)
        AppendJunitCase(Combine(t, window), options_.write, formatted);
      }
    }
  };
  BlockFormatter formatter(blocks.size(), options_.threads, [&](size_t i, SpoolWindow* window, std::string* out) {
    format(blocks[i], window, out);
  });

  SpoolWindow window;
  JunitStreamWriter w(out, options_.write);
  w.Begin(total);
  size_t next_block = 0;
  for (uint32_t s = 0; s < n_suites; ++s) {
    if (members[s].empty() && suite_outputs_[s].empty()) continue;
    w.BeginSuite(suite_names_[s], counts[s]);
    for (; next_block < blocks.size() && blocks[next_block].suite == s; ++next_block) {
      w.WriteFormatted(formatter.Take(next_block, &window));
    }
    CappedText sys_out(options_.write.max_text_bytes), sys_err(options_.write.max_text_bytes);
    for (uint32_t ri : suite_outputs_[s]) {
      TS_ASSIGN_OR_RETURN(std::string_view blob, spool_->View(records_[ri].offset, records_[ri].size, &window));
      Cursor cur(blob);
      std::string_view input = cur.Str(), o = cur.Str(), e = cur.Str();
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

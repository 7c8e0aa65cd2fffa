// Merges JUnit results from many shards (files of any dialect, or structured TestCases) into one report.
#ifndef TESTSHARD_COMMON_REPORT_JUNIT_MERGER_H_
#define TESTSHARD_COMMON_REPORT_JUNIT_MERGER_H_

#include <cstdint>
#include <istream>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/junit_writer.h"
#include "common/report/huge_pages.h"
#include "common/report/junit_reader.h"
#include "common/test_result.h"

namespace testshard::report {

// How output suites are formed: one per stage (the name given with the input, else the input's own suite
// names, so pytest shards that all call their suite "pytest" come together), or one per input.
enum class SuitePer { kStage, kInput };

struct JunitMergeOptions {
  SuitePer suite_per = SuitePer::kStage;
  JunitWriteOptions write;  // report name; output cap per text field
  JunitReadOptions read;    // input limits; read.max_text_bytes should not exceed write.max_text_bytes
  std::string spool_dir;    // where the spool file lives; "" = $TMPDIR, else /tmp
  int threads = 1;          // threads formatting the report in Write (0: one per core)
};

struct JunitFileInput {
  std::string path;
  std::string stage;  // "" = the file's own suite names
};

// One input that was not complete and well-formed. Its tests are in the report regardless.
struct JunitInputProblem {
  std::string input;
  absl::Status status;
};

struct JunitMergeSummary {
  JunitCounts counts;              // of the written report (valid after Write)
  int64_t inputs = 0;
  int64_t cases_read = 0;          // test case elements/attempts received, before de-duplication
  int64_t retried_tests = 0;       // tests reported by more than one input (attempts merged into one case)
  std::vector<JunitInputProblem> problems;
};

// Accumulates results and writes one report in which every test appears exactly once.
//
// Identity: a test is (stage, classname, name); the stage is the one given with its input, else the name of the
// suite it was read from. The same test from several inputs is one test with several attempts, in the order the
// inputs were added: the last attempt is the result, earlier failed attempts become Surefire <flakyFailure>
// (when the last passed) or <rerunFailure> children. Several records of one test within one input (pytest writes
// a second <testcase> for a teardown error) are one attempt with the most severe outcome.
//
// Memory: test cases are spooled to an unlinked temporary file as they are read; memory holds about 100 bytes per
// test case read (a 128-bit key hash, offsets, outcome and times), never the text of results, so a gigabyte of
// captured output merges in the same memory as a kilobyte. Counts and times are recomputed from the cases.
//
// Not thread-safe: one thread adds inputs and then calls Write once (AddFiles uses reader threads of its own and
// joins them before returning).
class JunitMerger {
 public:
  static absl::StatusOr<std::unique_ptr<JunitMerger>> Create(JunitMergeOptions options = {});
  ~JunitMerger();
  JunitMerger(const JunitMerger&) = delete;
  JunitMerger& operator=(const JunitMerger&) = delete;

  // Reads one JUnit file. OK when it was complete; otherwise the problem, naming the file — and the report still
  // holds its complete cases, its cut-off case as an error, and one error entry for the file itself (named after
  // the file, saying what was wrong and how many results it had), so a broken input never passes silently.
  absl::Status AddFile(const std::string& path, std::string_view stage = {});
  absl::Status AddStream(std::istream& in, std::string_view input_name, std::string_view stage = {});

  // The same as AddFile for each input in turn — same attempts order, same report — but reads up to `threads`
  // files at once (0: one per core). Returns one status per input. Memory stays bounded: readers running ahead
  // of the merge wait once 4 MiB of their results are pending.
  std::vector<absl::Status> AddFiles(const std::vector<JunitFileInput>& inputs, int threads = 0);

  // One attempt of one test from structured results (what `testshard run` has). Classname and name are derived
  // from the id (pytest's rules) when both are empty. Each call is a new attempt; `c.reruns` may already hold
  // earlier ones.
  absl::Status AddCase(std::string_view stage, const TestCase& c, std::string_view input_name = {});

  // Declares a test that should have a result: if no input reports it, `placeholder` is reported instead
  // (e.g. kError "no result: agent lost" or kNotRun "maxfail reached"). Ignored once any attempt arrives.
  absl::Status AddExpected(std::string_view stage, const TestCase& placeholder);

  // Writes the merged report. Call once, after all inputs.
  absl::Status Write(std::ostream& out);
  // Writes to `path` through a temporary file renamed into place, so readers never see half a report.
  absl::Status WriteFile(const std::string& path);

  const JunitMergeSummary& summary() const { return summary_; }

 private:
  class Spool;
  struct SpoolWindow;
  class BlockFormatter;
  class Reader;
  struct Chunk;
  struct Channels;
  struct Key {
    uint64_t a, b;
    bool operator==(const Key& o) const { return a == o.a && b == o.b; }
  };
  struct Record;
  struct Test;
  struct KeyRef {
    Key key;
    uint32_t record;
    uint32_t input;  // max for an AddExpected placeholder
  };

  explicit JunitMerger(JunitMergeOptions options, std::unique_ptr<Spool> spool);
  uint32_t SuiteId(std::string_view name);
  // Thread-safe: touch no merger state.
  static void PrepareCase(std::string_view stage, std::string_view output_suite, const TestCase& c, Chunk* chunk);
  static void PrepareSuiteOutput(std::string_view output_suite, std::string_view input_name, std::string_view out,
                                 std::string_view err, Chunk* chunk);
  // Takes the chunk's records into the spool and the index, and empties it (keeping its buffers).
  absl::Status Commit(Chunk& chunk, uint32_t input, bool expected);
  absl::Status FinishInput(uint32_t input, std::string_view input_name, std::string_view stage,
                           const absl::Status& status, const JunitReadStats& stats);
  // Thread-safe once Write has flushed the spool; each thread brings its own window.
  // A record's fields, as views valid until the window's next use.
  absl::Status LoadView(uint32_t record, TestCaseView* c, SpoolWindow* w) const;
  TestCase Load(uint32_t record, SpoolWindow* w) const;
  TestCase Combine(const Test& t, SpoolWindow* w) const;

  JunitMergeOptions options_;
  std::unique_ptr<Spool> spool_;
  HugeVector<Record> records_;
  HugeVector<KeyRef> keys_;     // one per record of a test case; consumed by Write
  HugeVector<uint32_t> next_;   // built by Write: the next record of the same test
  std::vector<std::string> suite_names_;
  absl::flat_hash_map<std::string, uint32_t> suite_ids_;
  std::vector<std::vector<uint32_t>> suite_outputs_;  // per suite: spooled suite-level output records
  uint32_t last_suite_id_ = std::numeric_limits<uint32_t>::max();
  uint32_t next_input_ = 0;
  bool written_ = false;
  JunitMergeSummary summary_;
  std::unique_ptr<Chunk> scratch_;  // for the callers that add one case at a time
};

}  // namespace testshard::report

#endif  // TESTSHARD_COMMON_REPORT_JUNIT_MERGER_H_

// The in-memory coverage model every coverage format is read into and written from, and the rules for merging
// two measurements of the same source file (formats.md §2.6). Plain values: no internal synchronisation.
#ifndef TESTSHARD_COMMON_REPORT_COVERAGE_H_
#define TESTSHARD_COMMON_REPORT_COVERAGE_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/status.h"

namespace testshard::report {

// An lcov DA checksum (base64 MD5, as geninfo and coverage.py write it), kept inline: a project has millions of
// lines and an allocation for each made merging allocation-bound. Checksums longer than 31 characters (no known
// producer writes one) are kept, compared and written as their first 31.
class LineChecksum {
 public:
  LineChecksum() = default;
  LineChecksum(std::string_view text) { assign(text); }  // NOLINT: reads like the string it holds
  void assign(std::string_view text) {
    size_ = static_cast<uint8_t>(std::min(text.size(), sizeof data_));
    std::memcpy(data_, text.data(), size_);
  }
  bool empty() const { return size_ == 0; }
  std::string_view view() const { return std::string_view(data_, size_); }
  friend bool operator==(const LineChecksum& a, const LineChecksum& b) { return a.view() == b.view(); }
  friend bool operator==(const LineChecksum& a, std::string_view b) { return a.view() == b; }
  friend std::ostream& operator<<(std::ostream& os, const LineChecksum& c) { return os << c.view(); }

 private:
  char data_[31] = {};
  uint8_t size_ = 0;
};

// One instrumented line.
struct LineCoverage {
  uint32_t line = 0;
  uint64_t hits = 0;
  LineChecksum checksum;  // when the producer wrote one
};

// The branches recorded at one line. Producers identify branches differently, so both forms are kept:
//  - by id (lcov BRDA "block,branch"): each branch's taken count, -1 when never evaluated ('-');
//  - by number (Cobertura "condition-coverage"): how many there are and how many were taken, plus the
//    destinations not taken when the producer lists them (coverage.py's missing-branches).
struct BranchLine {
  uint32_t line = 0;
  std::vector<std::pair<std::string, int64_t>> by_id;
  uint32_t counted_total = 0;
  uint32_t counted_covered = 0;
  bool has_missing = false;
  std::vector<std::string> missing;  // sorted by BranchDestinationLess


  uint32_t Total() const;
  uint32_t Covered() const;
};

struct FunctionCoverage {
  uint32_t line = 0;
  uint32_t end_line = 0;
  uint64_t hits = 0;
};

// Coverage of one source file. Lines and branch lines are kept sorted by line number.
struct FileCoverage {
  std::vector<LineCoverage> lines;
  std::vector<BranchLine> branches;
  std::map<std::string, FunctionCoverage> functions;
  // True when every contributor records only whether a line ran (coverage.py writes hits 0/1): merging then
  // takes the OR, so shards of one suite give the numbers one serial run gives. Counted data is summed.
  bool boolean_hits = false;
  std::string version;  // lcov VER, compared before merging
  std::string origin;   // the input this file first came from, for messages

  // Sorts lines and branch lines and folds duplicate entries (a file reported twice in one input).
  void Normalize();
};

// Coverage of a whole project, keyed by project-relative path. A B-tree: sorted like std::map for the writers,
// faster to search. Inserting moves values: hold no pointers into it across an insert.
struct CoverageData {
  absl::btree_map<std::string, FileCoverage> files;
};

// Totals computed bottom-up from detail, never taken from an input.
struct CoverageTotals {
  uint64_t lines_valid = 0, lines_covered = 0;
  uint64_t branches_valid = 0, branches_covered = 0;
  uint64_t functions_valid = 0, functions_covered = 0;
  void Add(const FileCoverage& f);
  void Add(const CoverageTotals& t);
};

// Checks that `from` can be merged into `into` (same source revision): returns kFailedPrecondition naming the
// file and both inputs when an lcov VER differs, a line's checksum differs, coverage.py-style data has different
// instrumented line sets, or a line's branch count differs where both producers list missing branches.
absl::Status CheckCompatible(std::string_view path, const FileCoverage& into, const FileCoverage& from);

// Merges `from` into `into`: lines united, hits summed (OR for boolean data), branches united (a branch covered
// anywhere is covered: counts summed by id, missing destinations intersected, bare counts by maximum),
// functions united by name with hits summed. REQUIRES: CheckCompatible(...) is OK and both are Normalize()d.
void MergeInto(FileCoverage& into, FileCoverage&& from);

// Orders missing-branch destinations as coverage.py writes them: line numbers numerically, then "exit".
bool BranchDestinationLess(const std::string& a, const std::string& b);

// Cobertura's rate: "1" when the denominator is 0, else up to four significant digits (coverage.py's rule).
std::string CoverageRate(uint64_t hit, uint64_t total);

}  // namespace testshard::report

#endif  // TESTSHARD_COMMON_REPORT_COVERAGE_H_

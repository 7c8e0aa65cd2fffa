// Merges coverage from many shards (lcov or Cobertura, in any mix) into one project-relative report.
#ifndef TESTSHARD_COMMON_REPORT_COVERAGE_MERGER_H_
#define TESTSHARD_COMMON_REPORT_COVERAGE_MERGER_H_

#include <cstdint>
#include <istream>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "common/report/coverage.h"
#include "common/report/coverage_formats.h"
#include "common/report/xml_stream.h"

namespace testshard::report {

enum class CoverageFormat { kUnknown, kLcov, kCobertura };

// Tells the format from the first bytes of a file: a <coverage> root is Cobertura, lcov records are lcov.
CoverageFormat DetectCoverageFormat(std::string_view head);

struct CoverageMergeOptions {
  // The project root. Absolute paths under it become relative to it; an absolute path under no known root is
  // matched by its longest suffix that names a file under this root (how a checkout in another directory is
  // recognised), and the prefix learnt is reused for the rest of that input. "" disables both.
  std::string root;
  XmlLimits xml_limits;
};

// One coverage input and what is known about where it came from.
struct CoverageInput {
  std::string path;
  // The directory the producing agent ran in; stripped from this input's absolute paths before anything else.
  std::string strip_root;
  // The source revision (e.g. a commit SHA) the input was measured at. Also read from a
  // "testshard-revision: REV" comment in the file. Inputs with different revisions are refused.
  std::string revision;
};

struct CoverageInputProblem {
  std::string input;
  absl::Status status;
};

struct CoverageMergeSummary {
  int64_t inputs = 0;
  std::vector<CoverageInputProblem> problems;
  std::vector<std::string> unmapped_paths;  // absolute paths no root could make relative (kept as they are;
                                            // the first 1000 distinct ones listed)
};

// Accumulates inputs in memory (about 50 bytes per instrumented line of the project, not per input).
//
// Path rules: Cobertura class filenames are resolved against the input's <source> entries (the first under
// which the file exists, else the first), lcov SF paths are taken as written; then separators are normalised,
// "." and ".." resolved, and roots stripped (the input's strip_root, then options.root, then suffix matching).
// Relative paths are kept as they are: they are already relative to where the producer ran.
//
// Revision rules: an input whose revision (given or marked in the file) differs from an earlier input's is
// refused whole. Otherwise each file is checked against what is already merged (CheckCompatible: lcov VER,
// per-line checksums, coverage.py statement sets, branch counts); one conflicting file refuses the whole input,
// so a report never mixes two revisions of a file.
//
// Not thread-safe: one thread adds inputs, then writes.
class CoverageMerger {
 public:
  explicit CoverageMerger(CoverageMergeOptions options = {});

  // Reads `input.path` (format detected from content) and merges it. Returns OK, or the problem naming the
  // file: kFailedPrecondition when refused (nothing of it merged); kInvalidArgument/kResourceExhausted when
  // malformed or truncated (its complete records merged); kNotFound when missing.
  absl::Status AddFile(const CoverageInput& input);
  absl::Status AddStream(std::istream& in, const CoverageInput& input, CoverageFormat format);
  // Merges data already read (e.g. received from an agent).
  absl::Status AddRaw(RawCoverage raw, const CoverageInput& input, CoverageFormat format);

  const CoverageData& data() const { return data_; }
  const std::string& revision() const { return revision_; }
  const CoverageMergeSummary& summary() const { return summary_; }
  CoverageTotals Totals() const;

  absl::Status WriteLcov(std::ostream& out) const;
  absl::Status WriteCobertura(std::ostream& out) const;
  // Through a temporary file renamed into place.
  absl::Status WriteLcovFile(const std::string& path) const;
  absl::Status WriteCoberturaFile(const std::string& path) const;

 private:
  // What path mapping learnt about one input.
  struct PathCache {
    std::vector<std::string> learned_prefixes;
    absl::flat_hash_set<std::string> unmatched_dirs;
  };
  std::string MapPath(std::string_view raw, const RawCoverage& in, const CoverageInput& input, CoverageFormat format,
                      PathCache* cache);

  CoverageMergeOptions options_;
  std::string root_;  // normalised options_.root
  CoverageData data_;
  std::string revision_, revision_origin_;
  CoverageMergeSummary summary_;
  absl::flat_hash_set<std::string> unmapped_seen_;
};

// Lexical normalisation: '\' to '/', duplicate separators, "." and ".." resolved ("a/./b/../c" -> "a/c").
std::string NormalizePath(std::string_view path);

}  // namespace testshard::report

#endif  // TESTSHARD_COMMON_REPORT_COVERAGE_MERGER_H_

#include "common/report/coverage.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace testshard::report {
namespace {

uint64_t SaturatingAdd(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

// Taken counts for one lcov branch: '-' (never evaluated, -1) plus n is n.
int64_t AddTaken(int64_t a, int64_t b) {
  if (a < 0) return b;
  if (b < 0) return a;
  return a + b;
}

void MergeBranchLine(BranchLine& into, BranchLine&& from) {
  for (auto& [id, taken] : from.by_id) {
    auto it = std::find_if(into.by_id.begin(), into.by_id.end(), [&](const auto& p) { return p.first == id; });
    if (it == into.by_id.end()) {
      into.by_id.emplace_back(std::move(id), taken);
    } else {
      it->second = AddTaken(it->second, taken);
    }
  }
  if (into.has_missing && from.has_missing) {
    // coverage.py: a destination is missing in the merge only if every shard missed it.
    std::vector<std::string> both;
    std::set_intersection(into.missing.begin(), into.missing.end(), from.missing.begin(), from.missing.end(),
                          std::back_inserter(both), BranchDestinationLess);
    into.missing = std::move(both);
    into.counted_total = std::max(into.counted_total, from.counted_total);
    into.counted_covered = into.counted_total - static_cast<uint32_t>(into.missing.size());
  } else if (from.counted_total == 0 && !from.has_missing) {
    // Nothing counted on the other side.
  } else if (into.counted_total == 0 && !into.has_missing) {
    into.counted_total = from.counted_total;
    into.counted_covered = from.counted_covered;
    into.has_missing = from.has_missing;
    into.missing = std::move(from.missing);
  } else {
    // Only counts are known on one side (gcovr): which branches were taken is not said, so the union is taken
    // to be the larger of the two — a lower bound, never an overstatement.
    into.has_missing = false;
    into.missing.clear();
    into.counted_total = std::max(into.counted_total, from.counted_total);
    into.counted_covered = std::min(into.counted_total, std::max(into.counted_covered, from.counted_covered));
  }
}

template <typename T, typename Merge>
void MergeSorted(std::vector<T>& into, std::vector<T>&& from, Merge merge) {
  if (into.empty()) {
    into = std::move(from);
    return;
  }
  std::vector<T> out;
  out.reserve(std::max(into.size(), from.size()));
  size_t i = 0, j = 0;
  while (i < into.size() || j < from.size()) {
    if (j == from.size() || (i < into.size() && into[i].line < from[j].line)) {
      out.push_back(std::move(into[i++]));
    } else if (i == into.size() || from[j].line < into[i].line) {
      out.push_back(std::move(from[j++]));
    } else {
      merge(into[i], std::move(from[j]));
      out.push_back(std::move(into[i]));
      ++i;
      ++j;
    }
  }
  into = std::move(out);
}

}  // namespace

uint32_t BranchLine::Total() const {
  uint32_t by_id_total = static_cast<uint32_t>(by_id.size());
  return std::max(by_id_total, counted_total);
}

uint32_t BranchLine::Covered() const {
  uint32_t taken = 0;
  for (const auto& [id, count] : by_id) taken += count > 0 ? 1 : 0;
  if (by_id.size() >= counted_total) return taken;
  return std::max(taken, counted_covered);
}

void FileCoverage::Normalize() {
  auto by_line = [](const auto& a, const auto& b) { return a.line < b.line; };
  auto same_line = [](const auto& a, const auto& b) { return a.line == b.line; };
  if (!std::is_sorted(lines.begin(), lines.end(), by_line)) std::stable_sort(lines.begin(), lines.end(), by_line);
  if (std::adjacent_find(lines.begin(), lines.end(), same_line) == lines.end() &&
      std::is_sorted(branches.begin(), branches.end(), by_line) &&
      std::adjacent_find(branches.begin(), branches.end(), same_line) == branches.end()) {
    return;  // the usual case: already sorted, nothing to fold
  }
  std::vector<LineCoverage> folded;
  folded.reserve(lines.size());
  for (LineCoverage& l : lines) {
    if (!folded.empty() && folded.back().line == l.line) {
      LineCoverage& f = folded.back();
      f.hits = boolean_hits ? std::max(f.hits, l.hits) : SaturatingAdd(f.hits, l.hits);
      if (f.checksum.empty()) f.checksum = l.checksum;
    } else {
      folded.push_back(std::move(l));
    }
  }
  lines = std::move(folded);
  if (!std::is_sorted(branches.begin(), branches.end(), by_line)) {
    std::stable_sort(branches.begin(), branches.end(), by_line);
  }
  std::vector<BranchLine> bfolded;
  for (BranchLine& b : branches) {
    if (!bfolded.empty() && bfolded.back().line == b.line) {
      MergeBranchLine(bfolded.back(), std::move(b));
    } else {
      bfolded.push_back(std::move(b));
    }
  }
  branches = std::move(bfolded);
}

void CoverageTotals::Add(const FileCoverage& f) {
  lines_valid += f.lines.size();
  for (const LineCoverage& l : f.lines) lines_covered += l.hits > 0 ? 1 : 0;
  for (const BranchLine& b : f.branches) {
    branches_valid += b.Total();
    branches_covered += b.Covered();
  }
  functions_valid += f.functions.size();
  for (const auto& [name, fn] : f.functions) functions_covered += fn.hits > 0 ? 1 : 0;
}

void CoverageTotals::Add(const CoverageTotals& t) {
  lines_valid += t.lines_valid;
  lines_covered += t.lines_covered;
  branches_valid += t.branches_valid;
  branches_covered += t.branches_covered;
  functions_valid += t.functions_valid;
  functions_covered += t.functions_covered;
}

absl::Status CheckCompatible(std::string_view path, const FileCoverage& into, const FileCoverage& from) {
  auto refuse = [&](const std::string& why) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: %s and %s measured different source revisions (%s); refusing to merge them", path, into.origin,
        from.origin, why));
  };
  if (!into.version.empty() && !from.version.empty() && into.version != from.version) {
    return refuse(absl::StrFormat("lcov VER '%s' vs '%s'", into.version, from.version));
  }
  // Walk the common lines once: checksums must agree, and boolean (coverage.py) data must have the same
  // statements, which are static for one revision of the file.
  bool compare_sets = into.boolean_hits && from.boolean_hits && !into.lines.empty() && !from.lines.empty();
  size_t i = 0, j = 0;
  while (i < into.lines.size() && j < from.lines.size()) {
    const LineCoverage& a = into.lines[i];
    const LineCoverage& b = from.lines[j];
    if (a.line == b.line) {
      if (!a.checksum.empty() && !b.checksum.empty() && a.checksum != b.checksum) {
        return refuse(absl::StrFormat("line %d checksum %s vs %s", a.line, std::string(a.checksum.view()),
                                      std::string(b.checksum.view())));
      }
      ++i;
      ++j;
    } else if (compare_sets) {
      return refuse(absl::StrFormat("line %d is a statement in only one of them", std::min(a.line, b.line)));
    } else if (a.line < b.line) {
      ++i;
    } else {
      ++j;
    }
  }
  if (compare_sets && (i < into.lines.size() || j < from.lines.size())) {
    uint32_t line = i < into.lines.size() ? into.lines[i].line : from.lines[j].line;
    return refuse(absl::StrFormat("line %d is a statement in only one of them", line));
  }
  i = j = 0;
  while (i < into.branches.size() && j < from.branches.size()) {
    const BranchLine& a = into.branches[i];
    const BranchLine& b = from.branches[j];
    if (a.line < b.line) {
      ++i;
    } else if (b.line < a.line) {
      ++j;
    } else {
      if (a.has_missing && b.has_missing && a.counted_total != b.counted_total) {
        return refuse(absl::StrFormat("line %d has %d branches vs %d", a.line, a.counted_total, b.counted_total));
      }
      ++i;
      ++j;
    }
  }
  return absl::OkStatus();
}

void MergeInto(FileCoverage& into, FileCoverage&& from) {
  bool boolean = into.boolean_hits && from.boolean_hits;
  if (into.lines.empty() && into.branches.empty() && into.functions.empty()) boolean = from.boolean_hits;
  MergeSorted(into.lines, std::move(from.lines), [boolean](LineCoverage& a, LineCoverage&& b) {
    a.hits = boolean ? std::max(a.hits, b.hits) : SaturatingAdd(a.hits, b.hits);
    if (a.checksum.empty()) a.checksum = b.checksum;
  });
  MergeSorted(into.branches, std::move(from.branches),
              [](BranchLine& a, BranchLine&& b) { MergeBranchLine(a, std::move(b)); });
  for (auto& [name, fn] : from.functions) {
    auto [it, inserted] = into.functions.try_emplace(name, fn);
    if (inserted) continue;
    FunctionCoverage& f = it->second;
    f.hits = boolean ? std::max(f.hits, fn.hits) : SaturatingAdd(f.hits, fn.hits);
    if (f.line == 0 || (fn.line != 0 && fn.line < f.line)) f.line = fn.line;
    f.end_line = std::max(f.end_line, fn.end_line);
  }
  into.boolean_hits = boolean;
  if (into.version.empty()) into.version = std::move(from.version);
  if (into.origin.empty()) into.origin = std::move(from.origin);
}

bool BranchDestinationLess(const std::string& a, const std::string& b) {
  bool a_num = !a.empty() && std::all_of(a.begin(), a.end(), [](char c) { return c >= '0' && c <= '9'; });
  bool b_num = !b.empty() && std::all_of(b.begin(), b.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (a_num != b_num) return a_num;
  if (a_num && a.size() != b.size()) return a.size() < b.size();
  return a < b;
}

std::string CoverageRate(uint64_t hit, uint64_t total) {
  if (total == 0) return "1";
  return absl::StrFormat("%.4g", static_cast<double>(hit) / static_cast<double>(total));
}

}  // namespace testshard::report

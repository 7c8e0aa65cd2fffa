#include "common/report/coverage_merger.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>

#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "common/report/xml_stream.h"
#include "common/status.h"

namespace testshard::report {
namespace {

bool IsAbsolute(std::string_view p) { return !p.empty() && p[0] == '/'; }

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool StripPrefixDir(std::string_view path, std::string_view root, std::string* out) {
  if (root.empty()) return false;
  if (root == "/") {
    *out = std::string(path.substr(1));
    return true;
  }
  if (path.size() > root.size() && path.substr(0, root.size()) == root && path[root.size()] == '/') {
    *out = std::string(path.substr(root.size() + 1));
    return true;
  }
  return false;
}

}  // namespace

std::string NormalizePath(std::string_view path) {
  std::string p(path);
  for (char& c : p) {
    if (c == '\\') c = '/';
  }
  bool absolute = IsAbsolute(p);
  std::vector<std::string_view> parts;
  std::string_view rest(p);
  while (!rest.empty()) {
    size_t slash = rest.find('/');
    std::string_view part = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty() && parts.back() != "..") {
        parts.pop_back();
        continue;
      }
      if (absolute) continue;  // "/.." is "/"
    }
    parts.push_back(part);
  }
  std::string out = absolute ? "/" : "";
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += '/';
    out += parts[i];
  }
  if (out.empty()) out.push_back('.');  // an absolute path is at least "/"
  return out;
}

CoverageFormat DetectCoverageFormat(std::string_view head) {
  std::string root = SniffRootElement(head);
  if (root == "coverage") return CoverageFormat::kCobertura;
  if (!root.empty()) return CoverageFormat::kUnknown;
  // lcov: the first non-blank line is a record ("TN:", "SF:") or a comment.
  size_t i = 0;
  while (i < head.size() && (head[i] == '\n' || head[i] == '\r' || head[i] == ' ')) ++i;
  std::string_view rest = head.substr(i);
  if (rest.substr(0, 3) == "TN:" || rest.substr(0, 3) == "SF:" || rest.substr(0, 1) == "#") {
    return CoverageFormat::kLcov;
  }
  return CoverageFormat::kUnknown;
}

CoverageMerger::CoverageMerger(CoverageMergeOptions options)
    : options_(std::move(options)), root_(options_.root.empty() ? "" : NormalizePath(options_.root)) {}

std::string CoverageMerger::MapPath(std::string_view raw, const RawCoverage& in, const CoverageInput& input,
                                    CoverageFormat format, PathCache* cache) {
  std::string p(raw);
  if (format == CoverageFormat::kCobertura && !IsAbsolute(p) && !in.sources.empty()) {
    const std::string* chosen = &in.sources[0];
    if (in.sources.size() > 1) {
      for (const std::string& s : in.sources) {
        if (Exists(s + "/" + p)) {
          chosen = &s;
          break;
        }
      }
    }
    if (!chosen->empty()) p = *chosen + "/" + p;
  }
  p = NormalizePath(p);
  if (!IsAbsolute(p)) return p;
  std::string out;
  if (!input.strip_root.empty() && StripPrefixDir(p, NormalizePath(input.strip_root), &out)) return out;
  if (StripPrefixDir(p, root_, &out)) return out;
  for (const std::string& prefix : cache->learned_prefixes) {
    if (StripPrefixDir(p, prefix, &out)) return out;
  }
  size_t last_slash = p.rfind('/');
  std::string dir = p.substr(0, last_slash);
  if (!root_.empty() && !cache->unmatched_dirs.contains(dir)) {
    // The agent's checkout was elsewhere: the longest suffix of the path that exists under our root wins, and
    // its prefix is reused for the rest of the input. A directory that matched nothing is not searched again.
    for (size_t slash = p.find('/', 1); slash != std::string::npos; slash = p.find('/', slash + 1)) {
      std::string suffix = p.substr(slash + 1);
      if (!suffix.empty() && Exists(root_ + "/" + suffix)) {
        cache->learned_prefixes.push_back(p.substr(0, slash));
        return suffix;
      }
    }
    cache->unmatched_dirs.insert(dir);
  }
  if (summary_.unmapped_paths.size() < 1000 && unmapped_seen_.insert(p).second) summary_.unmapped_paths.push_back(p);
  return p;
}

absl::Status CoverageMerger::AddRaw(RawCoverage raw, const CoverageInput& input, CoverageFormat format) {
  std::string revision = !input.revision.empty() ? input.revision : raw.revision;
  if (!revision.empty() && !revision_.empty() && revision != revision_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: measured at source revision %s, but %s was measured at %s; refusing to merge different revisions",
        input.path, revision, revision_origin_, revision_));
  }
  // Map and fold this input's files first, then check every file before merging any, so a refused input leaves
  // no trace.
  CoverageData mine;
  PathCache cache;
  for (auto& [raw_path, file] : raw.files) {
    std::string path = MapPath(raw_path, raw, input, format, &cache);
    file.origin = input.path;
    auto [it, inserted] = mine.files.try_emplace(path);
    if (inserted) {
      it->second = std::move(file);
    } else {
      MergeInto(it->second, std::move(file));
    }
  }
  // One lookup per file: check against what is there, then merge into it, and only then insert the new files
  // (an insert would invalidate the pointers held).
  std::vector<std::pair<FileCoverage*, FileCoverage*>> existing;
  std::vector<std::pair<const std::string*, FileCoverage*>> fresh;
  for (auto& [path, file] : mine.files) {
    auto it = data_.files.find(path);
    if (it == data_.files.end()) {
      fresh.emplace_back(&path, &file);
      continue;
    }
    TS_RETURN_IF_ERROR(CheckCompatible(path, it->second, file));
    existing.emplace_back(&it->second, &file);
  }
  for (auto& [into, from] : existing) MergeInto(*into, std::move(*from));
  for (auto& [path, file] : fresh) data_.files.try_emplace(*path, std::move(*file));
  if (!revision.empty() && revision_.empty()) {
    revision_ = revision;
    revision_origin_ = input.path;
  }
  return absl::OkStatus();
}

absl::Status CoverageMerger::AddStream(std::istream& in, const CoverageInput& input, CoverageFormat format) {
  ++summary_.inputs;
  RawCoverage raw;
  absl::Status read;
  if (format == CoverageFormat::kCobertura) {
    read = ReadCobertura(in, input.path, &raw, options_.xml_limits);
  } else if (format == CoverageFormat::kLcov) {
    read = ReadLcov(in, input.path, &raw);
  } else {
    read = absl::InvalidArgumentError(absl::StrFormat("%s: neither an lcov tracefile nor a Cobertura report",
                                                      input.path));
  }
  absl::Status merged = AddRaw(std::move(raw), input, format);
  absl::Status result = !merged.ok() ? merged : read;
  if (!result.ok()) summary_.problems.push_back({input.path, result});
  return result;
}

absl::Status CoverageMerger::AddFile(const CoverageInput& input) {
  std::ifstream in(input.path, std::ios::binary);
  if (!in) {
    ++summary_.inputs;
    absl::Status s = errno == ENOENT ? absl::NotFoundError(absl::StrFormat("%s: no such file", input.path))
                                     : absl::UnavailableError(absl::StrFormat("%s: %s", input.path, std::strerror(errno)));
    summary_.problems.push_back({input.path, s});
    return s;
  }
  char head[4096];
  in.read(head, sizeof head);
  std::string_view h(head, static_cast<size_t>(in.gcount()));
  CoverageFormat format = DetectCoverageFormat(h);
  if (format == CoverageFormat::kUnknown && h.empty()) {
    // An empty file: say so in the words of the format its name suggests.
    format = absl::EndsWith(ToAbsl(input.path), ".xml") ? CoverageFormat::kCobertura : CoverageFormat::kLcov;
  }
  in.clear();
  in.seekg(0);
  return AddStream(in, input, format);
}

CoverageTotals CoverageMerger::Totals() const {
  CoverageTotals t;
  for (const auto& [path, f] : data_.files) t.Add(f);
  return t;
}

absl::Status CoverageMerger::WriteLcov(std::ostream& out) const { return report::WriteLcov(data_, out); }

absl::Status CoverageMerger::WriteCobertura(std::ostream& out) const {
  CoverageWriteOptions o;
  o.source_root = root_.empty() ? "." : root_;
  o.revision = revision_;
  return report::WriteCobertura(data_, out, o);
}

absl::Status CoverageMerger::WriteLcovFile(const std::string& path) const {
  return WriteThroughTemp(path, [this](std::ostream& out) { return WriteLcov(out); });
}

absl::Status CoverageMerger::WriteCoberturaFile(const std::string& path) const {
  return WriteThroughTemp(path, [this](std::ostream& out) { return WriteCobertura(out); });
}

}  // namespace testshard::report

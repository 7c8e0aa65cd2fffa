#include "common/report/coverage_formats.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace testshard::report {
namespace {

constexpr std::string_view kRevisionMarker = "testshard-revision:";
constexpr std::string_view kBooleanMarker = "testshard: boolean hits";

template <typename T>
bool ParseNumber(std::string_view s, T* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Hit counts: lcov allows negative values from gcov overflow and coverage.py writes plain integers; anything
// negative reads as 0, anything unparseable is an error.
bool ParseHits(std::string_view s, uint64_t* out) {
  int64_t v;
  if (ParseNumber(s, &v)) {
    *out = v < 0 ? 0 : static_cast<uint64_t>(v);
    return true;
  }
  double d;  // some producers write "1.0"
  char* end = nullptr;
  std::string copy(s);
  d = std::strtod(copy.c_str(), &end);
  if (end == copy.c_str() || *end != '\0') return false;
  *out = d < 0 ? 0 : static_cast<uint64_t>(d);
  return true;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// ---- lcov

class LcovParser {
 public:
  LcovParser(std::string_view input_name, RawCoverage* out) : name_(input_name), out_(out) {}

  void Line(std::string_view line) {
    ++line_no_;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) return;
    if (line == "end_of_record") {
      EndRecord();
      return;
    }
    if (line[0] == '#') {
      size_t m = line.find(kRevisionMarker);
      if (m != std::string_view::npos) {
        out_->revision = std::string(ToStd(absl::StripAsciiWhitespace(ToAbsl(line.substr(m + kRevisionMarker.size())))));
      }
      return;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon > 8 ||
        !std::all_of(line.begin(), line.begin() + colon, [](char c) { return c >= 'A' && c <= 'Z'; })) {
      Bad("not an lcov record");
      return;
    }
    std::string_view tag = line.substr(0, colon), value = line.substr(colon + 1);
    if (tag == "SF") {
      if (in_record_) EndRecord();  // lenient: a missing end_of_record between records
      StartRecord(value);
      return;
    }
    if (!in_record_) return;  // TN and anything else outside a record
    if (tag == "DA") {
      Da(value);
    } else if (tag == "BRDA") {
      Brda(value);
    } else if (tag == "FN") {
      Fn(value);
    } else if (tag == "FNDA") {
      Fnda(value);
    } else if (tag == "FNL") {
      Fnl(value);
    } else if (tag == "FNA") {
      Fna(value);
    } else if (tag == "VER") {
      file_.version = std::string(value);
    }
    // LF, LH, BRF, BRH, FNF, FNH are recomputed; MCDC, MCF, MCH are not merged.
  }

  absl::Status Finish(uint64_t bytes) {
    if (bytes == 0) return absl::InvalidArgumentError(absl::StrFormat("%s: empty file (0 bytes)", name_));
    if (in_record_) {
      // Reported even over an earlier malformed line: a cut-off last line is a symptom of the truncation.
      first_error_ = absl::InvalidArgumentError(absl::StrFormat(
          "%s: line %d: the record for %s has no end_of_record (the file is truncated); its data is dropped",
          name_, line_no_, path_));
    }
    if (first_error_.ok() && !saw_record_) {
      first_error_ = absl::InvalidArgumentError(absl::StrFormat("%s: not an lcov tracefile (no SF: record)", name_));
    }
    return first_error_;
  }

 private:
  void Bad(const std::string& what) {
    if (first_error_.ok()) {
      first_error_ = absl::InvalidArgumentError(absl::StrFormat("%s: line %d: %s", name_, line_no_, what));
    }
  }

  void StartRecord(std::string_view path) {
    in_record_ = true;
    saw_record_ = true;
    path_ = std::string(path);
    file_ = FileCoverage();
    file_.origin = name_;
    python_ = EndsWith(path, ".py");
    file_.boolean_hits = python_;
    fnl_.clear();
    py_branch_seen_.clear();
  }

  void EndRecord() {
    if (!in_record_) return;
    file_.Normalize();
    out_->files.emplace_back(std::move(path_), std::move(file_));
    in_record_ = false;
  }

  void Da(std::string_view v) {
    size_t c1 = v.find(',');
    if (c1 == std::string_view::npos) return Bad("malformed DA");
    size_t c2 = v.find(',', c1 + 1);
    LineCoverage l;
    if (!ParseNumber(v.substr(0, c1), &l.line) ||
        !ParseHits(v.substr(c1 + 1, c2 == std::string_view::npos ? std::string_view::npos : c2 - c1 - 1), &l.hits)) {
      return Bad("malformed DA");
    }
    if (c2 != std::string_view::npos) l.checksum.assign(v.substr(c2 + 1));
    file_.lines.push_back(std::move(l));
  }

  void Brda(std::string_view v) {
    size_t first = v.find(','), last = v.rfind(',');
    if (first == std::string_view::npos || last == first) return Bad("malformed BRDA");
    uint32_t line;
    if (!ParseNumber(v.substr(0, first), &line)) return Bad("malformed BRDA");
    std::string_view taken_text = v.substr(last + 1);
    int64_t taken = -1;
    if (taken_text != "-") {
      uint64_t t;
      if (!ParseHits(taken_text, &t)) return Bad("malformed BRDA");
      taken = static_cast<int64_t>(t);
    }
    std::string id(v.substr(first + 1, last - first - 1));
    if (python_) {
      // coverage.py 6 numbers a block's branches missing-first, so the same arc has different numbers in
      // different runs; its line field is the destination. Key by (line, block, position among equal ones).
      std::string block = id.substr(0, id.find(','));
      int& seen = py_branch_seen_[{line, block}];
      id = block + "," + std::to_string(seen++);
    }
    if (file_.branches.empty() || file_.branches.back().line != line) {
      file_.branches.emplace_back();
      file_.branches.back().line = line;
    }
    BranchLine& b = file_.branches.back();
    for (auto& [bid, count] : b.by_id) {
      if (bid == id) {  // the same branch twice in one record (several TN sections): add
        count = count < 0 ? taken : (taken < 0 ? count : count + taken);
        return;
      }
    }
    b.by_id.emplace_back(std::move(id), taken);
  }

  void Fn(std::string_view v) {
    // FN:<line>,<name> or lcov 2's FN:<line>,<end>,<name>. Function names never start with a digit.
    size_t c1 = v.find(',');
    uint32_t line;
    if (c1 == std::string_view::npos || !ParseNumber(v.substr(0, c1), &line)) return Bad("malformed FN");
    std::string_view rest = v.substr(c1 + 1);
    uint32_t end = 0;
    size_t c2 = rest.find(',');
    if (c2 != std::string_view::npos && ParseNumber(rest.substr(0, c2), &end)) rest = rest.substr(c2 + 1);
    FunctionCoverage& f = file_.functions[std::string(rest)];
    f.line = line;
    f.end_line = end;
  }

  void Fnda(std::string_view v) {
    size_t c = v.find(',');
    uint64_t hits;
    if (c == std::string_view::npos || !ParseHits(v.substr(0, c), &hits)) return Bad("malformed FNDA");
    FunctionCoverage& f = file_.functions[std::string(v.substr(c + 1))];
    f.hits = file_.boolean_hits ? std::max(f.hits, hits) : f.hits + hits;
  }

  void Fnl(std::string_view v) {  // lcov >= 2.2: FNL:<index>,<line>[,<end>]
    size_t c1 = v.find(',');
    uint32_t idx, line, end = 0;
    if (c1 == std::string_view::npos || !ParseNumber(v.substr(0, c1), &idx)) return Bad("malformed FNL");
    std::string_view rest = v.substr(c1 + 1);
    size_t c2 = rest.find(',');
    if (!ParseNumber(rest.substr(0, c2), &line)) return Bad("malformed FNL");
    if (c2 != std::string_view::npos) ParseNumber(rest.substr(c2 + 1), &end);
    fnl_[idx] = {line, end};
  }

  void Fna(std::string_view v) {  // FNA:<index>,<count>,<name>
    size_t c1 = v.find(','), c2 = c1 == std::string_view::npos ? c1 : v.find(',', c1 + 1);
    uint32_t idx;
    uint64_t hits;
    if (c2 == std::string_view::npos || !ParseNumber(v.substr(0, c1), &idx) ||
        !ParseHits(v.substr(c1 + 1, c2 - c1 - 1), &hits)) {
      return Bad("malformed FNA");
    }
    FunctionCoverage& f = file_.functions[std::string(v.substr(c2 + 1))];
    f.line = fnl_[idx].first;
    f.end_line = fnl_[idx].second;
    f.hits += hits;
  }

  std::string name_;
  RawCoverage* out_;
  uint64_t line_no_ = 0;
  bool in_record_ = false, saw_record_ = false, python_ = false;
  std::string path_;
  FileCoverage file_;
  std::map<uint32_t, std::pair<uint32_t, uint32_t>> fnl_;
  std::map<std::pair<uint32_t, std::string>, int> py_branch_seen_;
  absl::Status first_error_;
};

// ---- Cobertura

const char* Attr(const char** attributes, const char* name) {
  for (const char** a = attributes; *a; a += 2) {
    if (std::strcmp(a[0], name) == 0) return a[1];
  }
  return nullptr;
}

class CoberturaHandler : public XmlHandler {
 public:
  CoberturaHandler(std::string_view input_name, RawCoverage* out) : name_(input_name), out_(out) {
    want_text = false;  // only <source> has text worth reading
  }

  void StartElement(std::string_view name, const char** attributes) override {
    ++depth_;
    if (depth_ == 1 && name != "coverage") {
      stop_status = absl::InvalidArgumentError(
          absl::StrFormat("not a Cobertura report: the root element is <%s>, not <coverage>", name));
      return;
    }
    if (name == "source") {
      in_source_ = true;
      want_text = true;
      source_.clear();
    } else if (name == "class") {
      const char* filename = Attr(attributes, "filename");
      if (filename == nullptr) {
        stop_status = absl::InvalidArgumentError("<class> without a filename attribute");
        return;
      }
      out_->files.emplace_back(filename, FileCoverage());
      file_ = &out_->files.back().second;
      file_->origin = name_;
      file_->boolean_hits = boolean_;
    } else if (name == "method" && file_) {
      const char* n = Attr(attributes, "name");
      const char* sig = Attr(attributes, "signature");
      method_ = std::string(n ? n : "") + (sig && *sig ? sig : "");
      in_method_ = true;
      method_has_line_ = false;
      file_->functions.try_emplace(method_);
    } else if (name == "line" && file_) {
      Line(attributes);
    }
  }

  void EndElement(std::string_view name) override {
    --depth_;
    if (name == "source") {
      in_source_ = false;
      want_text = false;
      out_->sources.push_back(std::string(ToStd(absl::StripAsciiWhitespace(ToAbsl(source_)))));
    } else if (name == "class" && file_) {
      file_->lines.assign(lines_.begin(), lines_.end());  // one allocation of the right size
      lines_.clear();
      file_->Normalize();
      file_ = nullptr;
    } else if (name == "method") {
      in_method_ = false;
    }
  }

  // Whether a <class> was open when the input ended: its data is incomplete.
  bool in_class() const { return file_ != nullptr; }

  void Text(std::string_view text) override {
    if (in_source_ && source_.size() < 4096) source_.append(text);
  }

  void Comment(std::string_view text) override {
    if (text.find("coverage.py") != std::string_view::npos || text.find(kBooleanMarker) != std::string_view::npos) {
      boolean_ = true;
    }
    size_t m = text.find(kRevisionMarker);
    if (m != std::string_view::npos) {
      out_->revision =
          std::string(ToStd(absl::StripAsciiWhitespace(ToAbsl(text.substr(m + kRevisionMarker.size())))));
    }
  }

 private:
  void Line(const char** attributes) {
    uint32_t number;
    uint64_t hits = 0;
    // One pass over the attributes: there are millions of <line>s.
    const char *n = nullptr, *h = nullptr, *branch = nullptr, *cc = nullptr, *mb = nullptr;
    for (const char** a = attributes; *a; a += 2) {
      const char* k = a[0];
      if (k[0] == 'n' && std::strcmp(k, "number") == 0) n = a[1];
      else if (k[0] == 'h' && std::strcmp(k, "hits") == 0) h = a[1];
      else if (k[0] == 'b' && std::strcmp(k, "branch") == 0) branch = a[1];
      else if (k[0] == 'c' && std::strcmp(k, "condition-coverage") == 0) cc = a[1];
      else if (k[0] == 'm' && std::strcmp(k, "missing-branches") == 0) mb = a[1];
    }
    if (n == nullptr || !ParseNumber(std::string_view(n), &number) || (h && !ParseHits(h, &hits))) {
      stop_status = absl::InvalidArgumentError("<line> with a missing or malformed number or hits");
      return;
    }
    if (in_method_) {
      if (!method_has_line_) {
        FunctionCoverage& f = file_->functions[method_];
        f.line = number;
        f.hits = hits;
        method_has_line_ = true;
      }
      return;
    }
    lines_.push_back({number, hits, {}});
    if (branch == nullptr || std::strcmp(branch, "true") != 0) return;
    BranchLine b;
    b.line = number;
    if (cc != nullptr) {
      // "50% (1/2)"
      std::string_view s(cc);
      size_t open = s.find('('), slash = s.find('/'), close = s.find(')');
      if (open != std::string_view::npos && slash != std::string_view::npos && close != std::string_view::npos) {
        ParseNumber(s.substr(open + 1, slash - open - 1), &b.counted_covered);
        ParseNumber(s.substr(slash + 1, close - slash - 1), &b.counted_total);
      }
    }
    if (b.counted_covered > b.counted_total) b.counted_covered = b.counted_total;
    // coverage.py lists the destinations it did not take; no attribute there means none were missed.
    b.has_missing = boolean_;
    if (mb != nullptr) {
      std::string_view s(mb);
      while (!s.empty()) {
        size_t comma = s.find(',');
        b.missing.emplace_back(s.substr(0, comma));
        if (comma == std::string_view::npos) break;
        s.remove_prefix(comma + 1);
      }
      std::sort(b.missing.begin(), b.missing.end(), BranchDestinationLess);
      b.has_missing = true;
    }
    file_->branches.push_back(std::move(b));
  }

  std::string name_;
  RawCoverage* out_;
  std::vector<LineCoverage> lines_;  // of the class being read
  size_t depth_ = 0;
  bool boolean_ = false;
  bool in_source_ = false;
  std::string source_;
  FileCoverage* file_ = nullptr;
  bool in_method_ = false, method_has_line_ = false;
  std::string method_;
};

// ---- writers

class Buffered {
 public:
  explicit Buffered(std::ostream& out) : out_(out) { buf_.reserve(1 << 20); }
  std::string& buf() { return buf_; }
  void MaybeFlush() {
    if (buf_.size() >= (1u << 20)) Flush();
  }
  void Flush() {
    out_.write(buf_.data(), static_cast<std::streamsize>(buf_.size()));
    buf_.clear();
  }
  absl::Status Finish(std::string_view what) {
    Flush();
    out_.flush();
    if (!out_) return absl::DataLossError(absl::StrFormat("could not write the %s report", what));
    return absl::OkStatus();
  }

 private:
  std::ostream& out_;
  std::string buf_;
};

void AppendNumber(std::string* s, uint64_t v) {
  char tmp[24];
  auto [p, ec] = std::to_chars(tmp, tmp + sizeof tmp, v);
  s->append(tmp, p);
}

void AppendAttrText(std::string* s, std::string_view text) {
  for (char c : text) {
    switch (c) {
      case '<': *s += "&lt;"; break;
      case '>': *s += "&gt;"; break;
      case '&': *s += "&amp;"; break;
      case '"': *s += "&quot;"; break;
      default: s->push_back(c);
    }
  }
}

std::string DirName(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string(".") : std::string(path.substr(0, slash));
}

}  // namespace

absl::Status ReadLcov(std::istream& in, std::string_view input_name, RawCoverage* out) {
  LcovParser parser(input_name, out);
  std::string buf(1 << 20, '\0');
  std::string carry;
  uint64_t total = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    size_t got = static_cast<size_t>(in.gcount());
    if (got == 0) break;
    total += got;
    std::string_view chunk(buf.data(), got);
    size_t start = 0;
    while (true) {
      size_t nl = chunk.find('\n', start);
      if (nl == std::string_view::npos) break;
      if (!carry.empty()) {
        carry.append(chunk.substr(start, nl - start));
        parser.Line(carry);
        carry.clear();
      } else {
        parser.Line(chunk.substr(start, nl - start));
      }
      start = nl + 1;
    }
    carry.append(chunk.substr(start));
    if (carry.size() > (64u << 20)) {
      return absl::ResourceExhaustedError(absl::StrFormat("%s: a line longer than 64 MiB", input_name));
    }
  }
  if (in.bad()) return absl::DataLossError(absl::StrFormat("%s: read error", input_name));
  if (!carry.empty()) parser.Line(carry);
  return parser.Finish(total);
}

absl::Status ReadCobertura(std::istream& in, std::string_view input_name, RawCoverage* out,
                           const XmlLimits& limits) {
  CoberturaHandler handler(input_name, out);
  absl::Status s = ParseXml(in, handler, limits);
  if (!s.ok()) {
    // A class cut off by the error is incomplete: drop it rather than merge part of a file.
    if (handler.in_class()) out->files.pop_back();
    return Annotate(s, input_name);
  }
  return s;
}

absl::Status WriteLcov(const CoverageData& data, std::ostream& out) {
  Buffered w(out);
  std::string& s = w.buf();
  for (const auto& [path, f] : data.files) {
    s += "TN:\nSF:";
    s += path;
    s += '\n';
    if (!f.version.empty()) s += "VER:" + f.version + "\n";
    // Functions sorted by line, as geninfo writes them.
    std::vector<std::pair<uint32_t, const std::string*>> fns;
    for (const auto& [name, fn] : f.functions) fns.emplace_back(fn.line, &name);
    std::sort(fns.begin(), fns.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first < b.first : *a.second < *b.second;
    });
    uint64_t fnh = 0;
    for (const auto& [line, name] : fns) {
      s += "FN:";
      AppendNumber(&s, line);
      s += ',' + *name + '\n';
    }
    for (const auto& [line, name] : fns) {
      uint64_t hits = f.functions.at(*name).hits;
      fnh += hits > 0;
      s += "FNDA:";
      AppendNumber(&s, hits);
      s += ',' + *name + '\n';
    }
    if (!fns.empty()) s += absl::StrFormat("FNF:%d\nFNH:%d\n", fns.size(), fnh);
    uint64_t brf = 0, brh = 0;
    for (const BranchLine& b : f.branches) {
      if (b.by_id.size() >= b.counted_total && !b.by_id.empty()) {
        for (const auto& [id, taken] : b.by_id) {
          s += "BRDA:";
          AppendNumber(&s, b.line);
          s += ',' + id + ',';
          if (taken < 0) {
            s += '-';
          } else {
            AppendNumber(&s, static_cast<uint64_t>(taken));
          }
          s += '\n';
          ++brf;
          brh += taken > 0;
        }
      } else {
        // Known only by number (Cobertura): which branch was taken is not recorded, so the first `covered`
        // are written as taken once.
        uint32_t covered = b.Covered();
        for (uint32_t i = 0; i < b.counted_total; ++i) {
          s += absl::StrFormat("BRDA:%d,0,%d,%d\n", b.line, i, i < covered ? 1 : 0);
          ++brf;
          brh += i < covered;
        }
      }
    }
    if (brf > 0) s += absl::StrFormat("BRF:%d\nBRH:%d\n", brf, brh);
    uint64_t lh = 0;
    for (const LineCoverage& l : f.lines) {
      s += "DA:";
      AppendNumber(&s, l.line);
      s += ',';
      AppendNumber(&s, l.hits);
      if (!l.checksum.empty()) {
        s += ',';
        s += l.checksum.view();
      }
      s += '\n';
      lh += l.hits > 0;
    }
    s += "LF:";
    AppendNumber(&s, f.lines.size());
    s += "\nLH:";
    AppendNumber(&s, lh);
    s += "\nend_of_record\n";
    w.MaybeFlush();
  }
  return w.Finish("lcov");
}

absl::Status WriteCobertura(const CoverageData& data, std::ostream& out, const CoverageWriteOptions& options) {
  // Group files into packages (directories, dotted, as coverage.py names them) and total bottom-up.
  std::map<std::string, std::vector<const std::pair<const std::string, FileCoverage>*>> packages;
  CoverageTotals total;
  bool any_branches = false;
  bool all_boolean = !data.files.empty();
  for (const auto& entry : data.files) {
    std::string dir = DirName(entry.first);
    std::replace(dir.begin(), dir.end(), '/', '.');
    packages[dir].push_back(&entry);
    total.Add(entry.second);
    any_branches = any_branches || !entry.second.branches.empty();
    all_boolean = all_boolean && entry.second.boolean_hits;
  }
  auto branch_rate = [&](uint64_t hit, uint64_t n) { return any_branches ? CoverageRate(hit, n) : "0"; };

  Buffered w(out);
  std::string& s = w.buf();
  s += "<?xml version=\"1.0\" ?>\n";
  s += absl::StrFormat(
      "<coverage version=\"testshard 0.1.0\" timestamp=\"%d\" lines-valid=\"%d\" lines-covered=\"%d\" "
      "line-rate=\"%s\" branches-valid=\"%d\" branches-covered=\"%d\" branch-rate=\"%s\" complexity=\"0\">\n",
      options.timestamp_ms, total.lines_valid, total.lines_covered, CoverageRate(total.lines_covered, total.lines_valid),
      total.branches_valid, total.branches_covered, branch_rate(total.branches_covered, total.branches_valid));
  s += "\t<!-- Generated by testshard merge -->\n";
  if (all_boolean) s += absl::StrFormat("\t<!-- %s (lines were recorded as run or not run) -->\n", kBooleanMarker);
  if (!options.revision.empty()) {
    s += "\t<!-- " + std::string(kRevisionMarker) + " ";
    AppendAttrText(&s, options.revision);
    s += " -->\n";
  }
  s += "\t<sources>\n\t\t<source>";
  AppendAttrText(&s, options.source_root);
  s += "</source>\n\t</sources>\n\t<packages>\n";
  for (const auto& [package, files] : packages) {
    CoverageTotals pt;
    for (const auto* f : files) pt.Add(f->second);
    s += "\t\t<package name=\"";
    AppendAttrText(&s, package);
    s += absl::StrFormat("\" line-rate=\"%s\" branch-rate=\"%s\" complexity=\"0\">\n\t\t\t<classes>\n",
                         CoverageRate(pt.lines_covered, pt.lines_valid),
                         branch_rate(pt.branches_covered, pt.branches_valid));
    for (const auto* entry : files) {
      const std::string& path = entry->first;
      const FileCoverage& f = entry->second;
      CoverageTotals ft;
      ft.Add(f);
      size_t slash = path.rfind('/');
      s += "\t\t\t\t<class name=\"";
      AppendAttrText(&s, slash == std::string::npos ? path : path.substr(slash + 1));
      s += "\" filename=\"";
      AppendAttrText(&s, path);
      s += absl::StrFormat("\" complexity=\"0\" line-rate=\"%s\" branch-rate=\"%s\">\n",
                           CoverageRate(ft.lines_covered, ft.lines_valid),
                           branch_rate(ft.branches_covered, ft.branches_valid));
      if (f.functions.empty()) {
        s += "\t\t\t\t\t<methods/>\n";
      } else {
        s += "\t\t\t\t\t<methods>\n";
        for (const auto& [name, fn] : f.functions) {
          s += "\t\t\t\t\t\t<method name=\"";
          AppendAttrText(&s, name);
          s += absl::StrFormat(
              "\" signature=\"\" line-rate=\"%s\" branch-rate=\"0\" complexity=\"0\">\n\t\t\t\t\t\t\t<lines>\n"
              "\t\t\t\t\t\t\t\t<line number=\"%d\" hits=\"%d\"/>\n\t\t\t\t\t\t\t</lines>\n\t\t\t\t\t\t</method>\n",
              fn.hits > 0 ? "1" : "0", fn.line, fn.hits);
        }
        s += "\t\t\t\t\t</methods>\n";
      }
      if (f.lines.empty()) {
        s += "\t\t\t\t\t<lines/>\n";
      } else {
        s += "\t\t\t\t\t<lines>\n";
        size_t bi = 0;
        for (const LineCoverage& l : f.lines) {
          s += "\t\t\t\t\t\t<line number=\"";
          AppendNumber(&s, l.line);
          s += "\" hits=\"";
          AppendNumber(&s, l.hits);
          s += '"';
          while (bi < f.branches.size() && f.branches[bi].line < l.line) ++bi;
          if (bi < f.branches.size() && f.branches[bi].line == l.line) {
            const BranchLine& b = f.branches[bi];
            uint32_t n = b.Total(), k = b.Covered();
            if (n > 0) {
              s += absl::StrFormat(" branch=\"true\" condition-coverage=\"%d%% (%d/%d)\"", 100 * k / n, k, n);
              if (b.has_missing && !b.missing.empty()) {
                s += " missing-branches=\"";
                for (size_t i = 0; i < b.missing.size(); ++i) {
                  if (i) s += ',';
                  AppendAttrText(&s, b.missing[i]);
                }
                s += '"';
              }
            }
          }
          s += "/>\n";
        }
        s += "\t\t\t\t\t</lines>\n";
      }
      s += "\t\t\t\t</class>\n";
      w.MaybeFlush();
    }
    s += "\t\t\t</classes>\n\t\t</package>\n";
  }
  s += "\t</packages>\n</coverage>\n";
  return w.Finish("Cobertura");
}

}  // namespace testshard::report

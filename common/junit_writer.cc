#include "common/junit_writer.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "common/ascii_scan.h"

namespace testshard {
namespace {

// Decodes one UTF-8 sequence at text[i]; returns its length, or 0 when it is not valid UTF-8.
size_t Utf8Length(std::string_view text, size_t i, uint32_t* cp) {
  auto c = static_cast<unsigned char>(text[i]);
  size_t len;
  uint32_t value;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if ((c & 0xE0) == 0xC0) {
    len = 2;
    value = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3;
    value = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4;
    value = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > text.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    auto cc = static_cast<unsigned char>(text[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    value = (value << 6) | (cc & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are invalid.
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (value < kMin[len] || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return 0;
  *cp = value;
  return len;
}

bool XmlAllowed(uint32_t cp) {
  return cp == 0x9 || cp == 0xA || cp == 0xD || (cp >= 0x20 && cp <= 0xD7FF) || (cp >= 0xE000 && cp <= 0xFFFD) ||
         (cp >= 0x10000 && cp <= 0x10FFFF);
}

constexpr size_t kFlushBytes = 256 * 1024;

std::string CountAttributes(const JunitCounts& c) {
  return absl::StrFormat(R"(tests="%d" failures="%d" errors="%d" skipped="%d" time="%s")", c.tests, c.failures,
                         c.errors, c.skipped, FormatSeconds(c.time_s));
}

template <typename Case>
double TotalTime(const Case& c) {
  double time = c.result.time_s;
  for (const auto& r : c.reruns) time += r.time_s;
  return time;
}

TestAttemptView View(const TestAttempt& a) {
  return {a.outcome, a.time_s, a.message, a.type, a.details, a.system_out, a.system_err};
}

TestCaseView View(const TestCase& c) {
  TestCaseView v{c.id, c.classname, c.name, c.file, {}, View(c.result), {}};
  v.properties.assign(c.properties.begin(), c.properties.end());
  for (const TestAttempt& r : c.reruns) v.reruns.push_back(View(r));
  return v;
}

}  // namespace

void AppendSeconds(std::string* out, double s) {
  if (!(s > 0) || !std::isfinite(s)) s = 0;  // negative, NaN and infinite times say nothing
  char buf[64];
  // The same digits as to_chars(fixed, 3), the correctly rounded decimal of the exact binary value, from integer
  // arithmetic; to_chars was a twentieth of a merge's CPU. Below 10^12 ms, s * 1000 is within 2^-13 of the exact
  // product, so a product further than 10^-3 from a rounding tie rounds the same way as the exact one.
  double ms = s * 1000;
  if (ms < 1e12) {
    double whole = std::floor(ms);
    double frac = ms - whole;  // exact
    if (std::abs(frac - 0.5) > 1e-3) {
      uint64_t n = static_cast<uint64_t>(whole) + (frac > 0.5 ? 1 : 0);
      char* end = std::to_chars(buf, buf + sizeof buf, n / 1000).ptr;
      unsigned milli = static_cast<unsigned>(n % 1000);
      *end++ = '.';
      *end++ = static_cast<char>('0' + milli / 100);
      *end++ = static_cast<char>('0' + milli / 10 % 10);
      *end++ = static_cast<char>('0' + milli % 10);
      out->append(buf, end);
      return;
    }
  }
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, s, std::chars_format::fixed, 3);
  if (ec != std::errc()) {
    out->append(absl::StrFormat("%.3f", s));  // beyond 10^60 s
    return;
  }
  out->append(buf, end);
}

std::string FormatSeconds(double s) {
  std::string out;
  AppendSeconds(&out, s);
  return out;
}

void JunitCounts::Add(Outcome final_outcome, double total_time_s, bool is_flaky) {
  ++tests;
  time_s += total_time_s;
  if (is_flaky) ++flaky;
  switch (final_outcome) {
    case Outcome::kFailed: ++failures; break;
    case Outcome::kError: ++errors; break;
    case Outcome::kSkipped:
    case Outcome::kNotRun: ++skipped; break;
    case Outcome::kPassed: break;
  }
}

void JunitCounts::Add(const TestCase& c) { Add(c.result.outcome, TotalTime(c), c.flaky()); }

void JunitCounts::Add(const JunitCounts& o) {
  tests += o.tests;
  failures += o.failures;
  errors += o.errors;
  skipped += o.skipped;
  flaky += o.flaky;
  time_s += o.time_s;
}

// Per byte: whether it is copied as it is (printable ASCII needing no escape; tab and newline outside attributes).
struct VerbatimTable {
  bool text[256] = {}, attribute[256] = {};
  constexpr VerbatimTable() {
    for (int c = 0x20; c < 0x80; ++c) text[c] = attribute[c] = c != '<' && c != '>' && c != '&' && c != '"';
    text['\n'] = text['\t'] = true;
  }
};
constexpr VerbatimTable kVerbatim;

void AppendXmlEscaped(std::string* out, std::string_view text, bool attribute) {
  const bool* verbatim = attribute ? kVerbatim.attribute : kVerbatim.text;
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t run = 0;  // start of the pending run of bytes copied verbatim
  auto is_verbatim = [verbatim](unsigned char c) { return verbatim[c]; };
  for (size_t i = 0; i < text.size();) {
    i = SkipPlain<'<', '>', '&', '"'>(bytes, i, text.size(), is_verbatim);
    if (i == text.size()) break;
    uint32_t cp = 0;
    size_t len = Utf8Length(text, i, &cp);
    if (len > 1 && XmlAllowed(cp)) {
      i += len;
      continue;
    }
    out->append(text.data() + run, i - run);
    if (len == 0 || !XmlAllowed(cp)) {
      out->append("\xEF\xBF\xBD");  // U+FFFD for a byte that is not valid UTF-8 or a forbidden character
    } else if (cp == '<') {
      out->append("&lt;");
    } else if (cp == '>') {
      out->append("&gt;");
    } else if (cp == '&') {
      out->append("&amp;");
    } else if (cp == '"') {
      out->append("&quot;");
    } else if (cp == '\r') {
      out->append("&#13;");  // kept: a bare CR would be normalised away by parsers
    } else if (attribute && cp == '\n') {
      out->append("&#10;");
    } else if (attribute && cp == '\t') {
      out->append("&#9;");
    } else {
      out->push_back(static_cast<char>(cp));  // tab or newline in text
    }
    i += len == 0 ? 1 : len;
    run = i;
  }
  out->append(text.data() + run, text.size() - run);
}

std::string XmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  AppendXmlEscaped(&out, text, false);
  return out;
}

std::string TrimMiddle(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes || max_bytes < 64) return std::string(text);
  size_t head = max_bytes / 2, tail = max_bytes / 2;
  // Back off to UTF-8 boundaries so the cut does not split a character.
  while (head > 0 && (static_cast<unsigned char>(text[head]) & 0xC0) == 0x80) --head;
  size_t tail_start = text.size() - tail;
  while (tail_start < text.size() && (static_cast<unsigned char>(text[tail_start]) & 0xC0) == 0x80) ++tail_start;
  return absl::StrFormat("%s\n... [testshard: %d bytes trimmed] ...\n%s", std::string(text.substr(0, head)),
                         tail_start - head, std::string(text.substr(tail_start)));
}

JunitStreamWriter::JunitStreamWriter(std::ostream& out, JunitWriteOptions options)
    : out_(out), options_(std::move(options)) {
  buf_.reserve(kFlushBytes + 4096);
}

void JunitStreamWriter::Flush() {
  out_.write(buf_.data(), static_cast<std::streamsize>(buf_.size()));
  buf_.clear();
}

namespace {

// Formats elements into a caller's buffer: the stream writer's own, or one a merge fills on another thread.
class CaseFormatter {
 public:
  CaseFormatter(std::string& buf, const JunitWriteOptions& options) : buf_(buf), options_(options) {}
  void Case(const TestCaseView& c);
  // indent<tag>text</tag>after, with text escaped and capped; nothing when text is empty.
  void Element(std::string_view indent, std::string_view tag, std::string_view text, std::string_view after);

 private:
  void Text(std::string_view text);
  void Problem(std::string_view tag, const TestAttemptView& a, bool rerun_form);

  std::string& buf_;
  const JunitWriteOptions& options_;
};

}  // namespace

void CaseFormatter::Text(std::string_view text) {
  if (text.size() > options_.max_text_bytes) {
    AppendXmlEscaped(&buf_, TrimMiddle(text, options_.max_text_bytes));
  } else {
    AppendXmlEscaped(&buf_, text);
  }
}

void CaseFormatter::Element(std::string_view indent, std::string_view tag, std::string_view text,
                                std::string_view after) {
  if (text.empty()) return;  // an empty element says nothing; leaving it out keeps the report small
  buf_.append(indent).append("<").append(tag).append(">");
  Text(text);
  buf_.append("</").append(tag).append(">").append(after);
}

void JunitStreamWriter::Begin(const JunitCounts& total) {
  buf_ += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"";
  AppendXmlEscaped(&buf_, options_.report_name, true);
  buf_ += "\" " + CountAttributes(total) + ">\n";
}

void JunitStreamWriter::BeginSuite(std::string_view name, const JunitCounts& counts,
                                   const std::vector<std::pair<std::string, std::string>>& properties) {
  buf_ += "  <testsuite name=\"";
  AppendXmlEscaped(&buf_, name, true);
  buf_ += "\" " + CountAttributes(counts) + ">\n";
  if (!properties.empty()) {
    buf_ += "    <properties>\n";
    for (const auto& [key, value] : properties) {
      buf_ += "      <property name=\"";
      AppendXmlEscaped(&buf_, key, true);
      buf_ += "\" value=\"";
      AppendXmlEscaped(&buf_, value, true);
      buf_ += "\"/>\n";
    }
    buf_ += "    </properties>\n";
  }
}

// <tag message=".." type="..">details</tag>; Surefire's rerun forms nest the trace and output of the attempt.
void CaseFormatter::Problem(std::string_view tag, const TestAttemptView& a, bool rerun_form) {
  buf_ += "      <";
  buf_ += tag;
  buf_ += " message=\"";
  if (a.message.size() > 1024) {
    AppendXmlEscaped(&buf_, TrimMiddle(a.message, 1024), true);
  } else {
    AppendXmlEscaped(&buf_, a.message, true);
  }
  buf_ += "\"";
  if (!a.type.empty()) {
    buf_ += " type=\"";
    AppendXmlEscaped(&buf_, a.type, true);
    buf_ += "\"";
  }
  bool has_body = !a.details.empty() || (rerun_form && (!a.system_out.empty() || !a.system_err.empty()));
  if (!has_body) {
    buf_ += "/>\n";
    return;
  }
  buf_ += ">";
  if (rerun_form) {
    Element("", "stackTrace", a.details, "");
    Element("", "system-out", a.system_out, "");
    Element("", "system-err", a.system_err, "");
  } else {
    Text(a.details);
  }
  buf_ += "</";
  buf_ += tag;
  buf_ += ">\n";
}

void CaseFormatter::Case(const TestCaseView& c) {
  std::string derived_classname, derived_name;
  std::string_view classname = c.classname, name = c.name;
  if (c.classname.empty() && c.name.empty()) {
    PytestJunitNames(c.id, &derived_classname, &derived_name);
    classname = derived_classname;
    name = derived_name;
  }
  buf_ += "    <testcase classname=\"";
  AppendXmlEscaped(&buf_, classname, true);
  buf_ += "\" name=\"";
  AppendXmlEscaped(&buf_, name, true);
  buf_ += "\"";
  if (!c.file.empty()) {
    buf_ += " file=\"";
    AppendXmlEscaped(&buf_, c.file, true);
    buf_ += "\"";
  }
  buf_ += " time=\"";
  AppendSeconds(&buf_, TotalTime(c));
  buf_ += "\">\n";
  size_t no_children = buf_.size();
  if (!c.properties.empty()) {
    buf_ += "      <properties>\n";
    for (const auto& [key, value] : c.properties) {
      buf_ += "        <property name=\"";
      AppendXmlEscaped(&buf_, key, true);
      buf_ += "\" value=\"";
      AppendXmlEscaped(&buf_, value, true);
      buf_ += "\"/>\n";
    }
    buf_ += "      </properties>\n";
  }
  const TestAttemptView& r = c.result;
  switch (r.outcome) {
    case Outcome::kFailed: Problem("failure", r, false); break;
    case Outcome::kError: Problem("error", r, false); break;
    case Outcome::kSkipped: Problem("skipped", r, false); break;
    case Outcome::kNotRun: {
      std::string message = "not run: " + std::string(r.message);
      TestAttemptView not_run = r;
      not_run.message = message;
      not_run.type = "testshard.NotRun";
      Problem("skipped", not_run, false);
      break;
    }
    case Outcome::kPassed: break;
  }
  bool passed = r.outcome == Outcome::kPassed;
  for (const TestAttemptView& rerun : c.reruns) {
    bool error = rerun.outcome == Outcome::kError;
    std::string_view tag = passed ? (error ? "flakyError" : "flakyFailure") : (error ? "rerunError" : "rerunFailure");
    Problem(tag, rerun, true);
  }
  Element("      ", "system-out", r.system_out, "\n");
  Element("      ", "system-err", r.system_err, "\n");
  if (buf_.size() == no_children) {
    buf_.resize(no_children - 2);  // a passed test without output: <testcase .../>
    buf_ += "/>\n";
  } else {
    buf_ += "    </testcase>\n";
  }
}

void JunitStreamWriter::WriteCase(const TestCase& c) {
  CaseFormatter(buf_, options_).Case(View(c));
  if (buf_.size() >= kFlushBytes) Flush();
}

void JunitStreamWriter::WriteFormatted(std::string_view cases) {
  if (buf_.size() + cases.size() >= kFlushBytes) {
    Flush();
    out_.write(cases.data(), static_cast<std::streamsize>(cases.size()));
    return;
  }
  buf_.append(cases);
}

void AppendJunitCase(const TestCase& c, const JunitWriteOptions& options, std::string* out) {
  CaseFormatter(*out, options).Case(View(c));
}

void AppendJunitCase(const TestCaseView& c, const JunitWriteOptions& options, std::string* out) {
  CaseFormatter(*out, options).Case(c);
}

void JunitStreamWriter::EndSuite(std::string_view system_out, std::string_view system_err) {
  CaseFormatter f(buf_, options_);
  f.Element("    ", "system-out", system_out, "\n");
  f.Element("    ", "system-err", system_err, "\n");
  buf_ += "  </testsuite>\n";
  if (buf_.size() >= kFlushBytes) Flush();
}

absl::Status JunitStreamWriter::Finish() {
  buf_ += "</testsuites>\n";
  Flush();
  out_.flush();
  if (!out_) return absl::DataLossError("could not write the JUnit report");
  return absl::OkStatus();
}

absl::Status WriteJunit(const std::vector<TestSuite>& suites, std::ostream& out, const JunitWriteOptions& options) {
  JunitCounts total;
  std::vector<JunitCounts> per_suite(suites.size());
  for (size_t i = 0; i < suites.size(); ++i) {
    for (const TestCase& c : suites[i].cases) per_suite[i].Add(c);
    total.Add(per_suite[i]);
  }
  JunitStreamWriter w(out, options);
  w.Begin(total);
  for (size_t i = 0; i < suites.size(); ++i) {
    w.BeginSuite(suites[i].name, per_suite[i]);
    for (const TestCase& c : suites[i].cases) w.WriteCase(c);
    w.EndSuite();
  }
  return w.Finish();
}

}  // namespace testshard

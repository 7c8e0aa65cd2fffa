#include "common/junit_writer.h"

#include <cstdint>
#include <cstdio>

#include "absl/strings/str_format.h"

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

std::string Seconds(double s) { return absl::StrFormat("%.3f", s < 0 ? 0.0 : s); }

struct Counts {
  int tests = 0, failures = 0, errors = 0, skipped = 0;
  double time = 0;
  void Add(const TestCase& c) {
    ++tests;
    time += c.result.time_s;
    for (const TestAttempt& r : c.reruns) time += r.time_s;
    switch (c.result.outcome) {
      case Outcome::kFailed: ++failures; break;
      case Outcome::kError: ++errors; break;
      case Outcome::kSkipped:
      case Outcome::kNotRun: ++skipped; break;
      case Outcome::kPassed: break;
    }
  }
  void Add(const Counts& o) {
    tests += o.tests;
    failures += o.failures;
    errors += o.errors;
    skipped += o.skipped;
    time += o.time;
  }
  std::string Attributes() const {
    return absl::StrFormat(R"(tests="%d" failures="%d" errors="%d" skipped="%d" time="%s")", tests, failures, errors,
                           skipped, Seconds(time));
  }
};

class Writer {
 public:
  Writer(std::ostream& out, const JunitWriteOptions& options) : out_(out), options_(options) {}

  void Text(std::string_view text) { out_ << XmlEscape(TrimMiddle(text, options_.max_text_bytes)); }

  // <tag message=".." type="..">details</tag>, with optional output children for Surefire's rerun forms.
  void Problem(std::string_view tag, const TestAttempt& a, bool with_output) {
    out_ << "      <" << tag << " message=\"" << XmlEscape(TrimMiddle(a.message, 1024)) << "\"";
    if (!a.type.empty()) out_ << " type=\"" << XmlEscape(a.type) << "\"";
    bool has_body = !a.details.empty() || (with_output && (!a.system_out.empty() || !a.system_err.empty()));
    if (!has_body) {
      out_ << "/>\n";
      return;
    }
    out_ << ">";
    if (with_output) {
      // Surefire nests the trace and output of a rerun inside the rerun element.
      if (!a.details.empty()) {
        out_ << "<stackTrace>";
        Text(a.details);
        out_ << "</stackTrace>";
      }
      if (!a.system_out.empty()) {
        out_ << "<system-out>";
        Text(a.system_out);
        out_ << "</system-out>";
      }
      if (!a.system_err.empty()) {
        out_ << "<system-err>";
        Text(a.system_err);
        out_ << "</system-err>";
      }
    } else {
      Text(a.details);
    }
    out_ << "</" << tag << ">\n";
  }

  void Case(const TestCase& c) {
    std::string classname = c.classname, name = c.name;
    if (classname.empty() && name.empty()) PytestJunitNames(c.id, &classname, &name);
    double time = c.result.time_s;
    for (const TestAttempt& r : c.reruns) time += r.time_s;
    out_ << "    <testcase classname=\"" << XmlEscape(classname) << "\" name=\"" << XmlEscape(name) << "\"";
    if (!c.file.empty()) out_ << " file=\"" << XmlEscape(c.file) << "\"";
    out_ << " time=\"" << Seconds(time) << "\">\n";
    if (!c.properties.empty()) {
      out_ << "      <properties>\n";
      for (const auto& [name, value] : c.properties) {
        out_ << "        <property name=\"" << XmlEscape(name) << "\" value=\"" << XmlEscape(value) << "\"/>\n";
      }
      out_ << "      </properties>\n";
    }
    const TestAttempt& r = c.result;
    switch (r.outcome) {
      case Outcome::kFailed: Problem("failure", r, false); break;
      case Outcome::kError: Problem("error", r, false); break;
      case Outcome::kSkipped: Problem("skipped", r, false); break;
      case Outcome::kNotRun: {
        TestAttempt not_run = r;
        not_run.message = "not run: " + r.message;
        not_run.type = "testshard.NotRun";
        Problem("skipped", not_run, false);
        break;
      }
      case Outcome::kPassed: break;
    }
    bool passed = r.outcome == Outcome::kPassed;
    for (const TestAttempt& rerun : c.reruns) {
      bool error = rerun.outcome == Outcome::kError;
      std::string tag = passed ? (error ? "flakyError" : "flakyFailure") : (error ? "rerunError" : "rerunFailure");
      Problem(tag, rerun, true);
    }
    if (!r.system_out.empty()) {
      out_ << "      <system-out>";
      Text(r.system_out);
      out_ << "</system-out>\n";
    }
    if (!r.system_err.empty()) {
      out_ << "      <system-err>";
      Text(r.system_err);
      out_ << "</system-err>\n";
    }
    out_ << "    </testcase>\n";
  }

 private:
  std::ostream& out_;
  const JunitWriteOptions& options_;
};

}  // namespace

std::string XmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    size_t len = Utf8Length(text, i, &cp);
    if (len == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD for a byte that is not valid UTF-8
      ++i;
      continue;
    }
    if (!XmlAllowed(cp)) {
      out += "\xEF\xBF\xBD";
    } else if (cp == '<') {
      out += "&lt;";
    } else if (cp == '>') {
      out += "&gt;";
    } else if (cp == '&') {
      out += "&amp;";
    } else if (cp == '"') {
      out += "&quot;";
    } else if (cp == '\r') {
      out += "&#13;";  // kept: a bare CR would be normalised away by parsers
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
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

absl::Status WriteJunit(const std::vector<TestSuite>& suites, std::ostream& out, const JunitWriteOptions& options) {
  Counts total;
  std::vector<Counts> per_suite(suites.size());
  for (size_t i = 0; i < suites.size(); ++i) {
    for (const TestCase& c : suites[i].cases) per_suite[i].Add(c);
    total.Add(per_suite[i]);
  }
  out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out << "<testsuites name=\"" << XmlEscape(options.report_name) << "\" " << total.Attributes() << ">\n";
  Writer w(out, options);
  for (size_t i = 0; i < suites.size(); ++i) {
    out << "  <testsuite name=\"" << XmlEscape(suites[i].name) << "\" " << per_suite[i].Attributes() << ">\n";
    for (const TestCase& c : suites[i].cases) w.Case(c);
    out << "  </testsuite>\n";
  }
  out << "</testsuites>\n";
  out.flush();
  if (!out) return absl::DataLossError("could not write the JUnit report");
  return absl::OkStatus();
}

}  // namespace testshard

#include "common/report/junit_reader.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace testshard::report {
namespace {

bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Per test case; a file with more is hostile or broken, and the rest are not worth the memory.
constexpr size_t kMaxProperties = 1000;

const char* Attr(const char** attributes, const char* name) {
  for (const char** a = attributes; *a; a += 2) {
    if (std::strcmp(a[0], name) == 0) return a[1];
  }
  return nullptr;
}

std::string AttrOr(const char** attributes, const char* name, std::string_view fallback = {}) {
  const char* v = Attr(attributes, name);
  return v ? std::string(v) : std::string(fallback);
}

// "12.345": digits with an optional point. Read exactly when there are at most 16 digits making at most 2^53: the
// integer they make and the power of ten dividing it are then exact doubles, and IEEE division rounds correctly,
// so the result is from_chars' (Clinger's fast path). from_chars was 2% of a merge's CPU.
std::optional<double> ParsePlainDecimal(std::string_view t) {
  uint64_t mantissa = 0;
  int digits = 0, after_point = -1;
  for (char c : t) {
    if (c == '.' && after_point < 0) {
      after_point = 0;
    } else if (c >= '0' && c <= '9' && digits < 16) {
      mantissa = mantissa * 10 + static_cast<uint64_t>(c - '0');
      ++digits;
      if (after_point >= 0) ++after_point;
    } else {
      return std::nullopt;
    }
  }
  if (digits == 0 || mantissa > (uint64_t{1} << 53)) return std::nullopt;
  static constexpr double kPow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                      1e12, 1e13, 1e14, 1e15, 1e16};
  return static_cast<double>(mantissa) / kPow10[std::max(after_point, 0)];
}

// JUnit times are seconds; Surefire allows thousands separators ("1,234.5"). Garbage and negatives read as 0.
double ParseSeconds(const char* text) {
  if (text == nullptr) return 0;
  std::string_view t(text);
  if (std::optional<double> v = ParsePlainDecimal(t)) return *v;
  std::string without_commas;
  if (t.find(',') != std::string_view::npos) {
    for (char c : t) {
      if (c != ',') without_commas.push_back(c);
    }
    t = without_commas;
  }
  double v = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || !std::isfinite(v) || v < 0) return 0;
  return v;
}

// What text currently being read belongs to.
enum class Field { kNone, kDetails, kOut, kErr, kRerunDetails, kRerunOut, kRerunErr, kSuiteOut, kSuiteErr };

struct SuiteFrame {
  std::string name;
  size_t depth;
  CappedText out, err;
};

class JunitHandler : public XmlHandler {
 public:
  JunitHandler(std::string_view input_name, JunitCaseSink& sink, const JunitReadOptions& options,
               JunitReadStats& stats)
      : input_name_(input_name), sink_(sink), options_(options), stats_(stats),
        details_(options.max_text_bytes), out_(options.max_text_bytes), err_(options.max_text_bytes),
        rerun_details_(options.max_text_bytes), rerun_out_(options.max_text_bytes),
        rerun_err_(options.max_text_bytes) {}

  void StartElement(std::string_view name, const char** attributes) override {
    Start(name, attributes);
    want_text = field_ != Field::kNone;
  }
  void EndElement(std::string_view name) override {
    End(name);
    want_text = field_ != Field::kNone;
  }

  void Start(std::string_view name, const char** attributes) {
    ++depth_;
    if (depth_ == 1) {
      if (name != "testsuites" && name != "testsuite") {
        stop_status = absl::InvalidArgumentError(
            absl::StrFormat("not a JUnit report: the root element is <%s>, not <testsuites> or <testsuite>", name));
        return;
      }
    }
    if (in_case_) {
      CaseChild(name, attributes);
      return;
    }
    if (name == "testsuite") {
      SuiteFrame frame{AttrOr(attributes, "name"), depth_, CappedText(options_.max_text_bytes),
                       CappedText(options_.max_text_bytes)};
      // Nested suites without a name of their own keep their parent's.
      if (frame.name.empty() && !suites_.empty()) frame.name = suites_.back().name;
      if (suites_.empty()) {
        if (const char* tests = Attr(attributes, "tests")) {
          if (stats_.declared_tests < 0) stats_.declared_tests = 0;
          stats_.declared_tests += std::strtoll(tests, nullptr, 10);
        }
      }
      stats_.last_suite = frame.name;
      suites_.push_back(std::move(frame));
    } else if (name == "testcase") {
      StartCase(attributes);
    } else if (name == "system-out" && !suites_.empty() && depth_ == suites_.back().depth + 1) {
      field_ = Field::kSuiteOut;
    } else if (name == "system-err" && !suites_.empty() && depth_ == suites_.back().depth + 1) {
      field_ = Field::kSuiteErr;
    }
  }

  void End(std::string_view name) {
    --depth_;
    if (in_case_) {
      if (depth_ == case_depth_ - 1) {
        FinishCase();
      } else {
        EndCaseChild(name);
      }
      return;
    }
    if (field_ == Field::kSuiteOut || field_ == Field::kSuiteErr) {
      field_ = Field::kNone;
      return;
    }
    if (name == "testsuite" && !suites_.empty()) {
      SuiteFrame& s = suites_.back();
      if (!s.out.empty() || !s.err.empty()) sink_.OnSuiteOutput(s.name, s.out.Take(), s.err.Take());
      suites_.pop_back();
    }
  }

  void Text(std::string_view text) override {
    switch (field_) {
      case Field::kNone: return;
      case Field::kDetails: details_.Append(text); return;
      case Field::kOut: out_.Append(text); return;
      case Field::kErr: err_.Append(text); return;
      case Field::kRerunDetails: rerun_details_.Append(text); return;
      case Field::kRerunOut: rerun_out_.Append(text); return;
      case Field::kRerunErr: rerun_err_.Append(text); return;
      case Field::kSuiteOut: suites_.back().out.Append(text); return;
      case Field::kSuiteErr: suites_.back().err.Append(text); return;
    }
  }

  // After a parse error: the case being read is reported as an error rather than lost, and suite output read so
  // far is kept.
  void Abandon(const absl::Status& problem) {
    if (in_case_) {
      field_ = Field::kNone;
      if (in_rerun_) EndRerun();
      FlushResultText();
      TestAttempt& r = case_.result;
      std::string partial;
      if (r.outcome != Outcome::kPassed || !r.message.empty()) {
        partial = absl::StrFormat("before the cut the case had: %s %s\n", OutcomeName(r.outcome), r.message);
      }
      r.outcome = Outcome::kError;
      r.type = "testshard.IncompleteResult";
      r.message = absl::StrFormat("incomplete result: %s", problem.message());
      r.details = partial + r.details;
      in_case_ = false;
      sink_.OnCase(CurrentSuite(), std::move(case_));
    }
    for (SuiteFrame& s : suites_) {
      if (!s.out.empty() || !s.err.empty()) sink_.OnSuiteOutput(s.name, s.out.Take(), s.err.Take());
    }
    suites_.clear();
  }

 private:
  std::string CurrentSuite() const { return suites_.empty() ? std::string() : suites_.back().name; }

  void StartCase(const char** attributes) {
    in_case_ = true;
    case_depth_ = depth_;
    // Reset in place: the strings keep their capacity from the last case (the sink only reads it).
    case_.id.clear();
    // One pass over the attributes: looking each name up in turn was a twentieth of a merge's CPU.
    const char *name = nullptr, *classname = nullptr, *file = nullptr, *time = nullptr, *status = nullptr,
               *result = nullptr;
    for (const char** a = attributes; *a; a += 2) {
      std::string_view key(a[0]);
      if (key == "name") name = a[1];
      else if (key == "classname") classname = a[1];
      else if (key == "file") file = a[1];
      else if (key == "time") time = a[1];
      else if (key == "status") status = a[1];
      else if (key == "result") result = a[1];
    }
    case_.name.assign(name ? name : "");
    if (classname) {
      case_.classname.assign(classname);
    } else {
      case_.classname = CurrentSuite();
    }
    case_.file.assign(file ? file : "");
    case_.reruns.clear();
    case_.properties.clear();
    in_properties_ = false;
    case_.result.message.clear();
    case_.result.type.clear();
    case_.result.outcome = Outcome::kPassed;
    case_.result.time_s = ParseSeconds(time);
    // GoogleTest: status="notrun" result="suppressed" (disabled); ctest: status="disabled". Neither has a child.
    auto is = [](const char* v, std::string_view want) { return v != nullptr && want == v; };
    disabled_ = is(status, "notrun") || is(status, "disabled") || is(result, "suppressed");
    has_result_child_ = false;
  }

  void SetResult(Outcome o, const char** attributes) {
    TestAttempt& r = case_.result;
    std::string message = AttrOr(attributes, "message"), type = AttrOr(attributes, "type");
    if (!has_result_child_ || OutcomeSeverity(o) > OutcomeSeverity(r.outcome)) {
      // The most severe element sets the outcome and leads the message.
      if (has_result_child_ && !r.message.empty()) extra_messages_.push_back(r.message);
      r.outcome = o;
      r.message = std::move(message);
      r.type = std::move(type);
    } else if (!message.empty()) {
      extra_messages_.push_back(std::move(message));
    }
    has_result_child_ = true;
  }

  void CaseChild(std::string_view name, const char** attributes) {
    if (in_rerun_) {
      if (name == "stackTrace") field_ = Field::kRerunDetails;
      else if (name == "system-out") field_ = Field::kRerunOut;
      else if (name == "system-err") field_ = Field::kRerunErr;
      else field_ = Field::kNone;
      return;
    }
    if (depth_ != case_depth_ + 1) {
      // pytest's record_property, Surefire's and Bazel's per-test properties: <properties><property name value>.
      if (in_properties_ && depth_ == case_depth_ + 2 && name == "property" &&
          case_.properties.size() < kMaxProperties) {
        const char* key = Attr(attributes, "name");
        std::string value = AttrOr(attributes, "value");
        if (value.size() > options_.max_text_bytes) value.resize(options_.max_text_bytes);
        if (key != nullptr) case_.properties.emplace_back(key, std::move(value));
      }
      field_ = Field::kNone;
      return;
    }
    if (name == "failure") {
      SetResult(Outcome::kFailed, attributes);
      StartDetails();
    } else if (name == "error") {
      SetResult(Outcome::kError, attributes);
      StartDetails();
    } else if (name == "skipped") {
      SetResult(Outcome::kSkipped, attributes);
      StartDetails();
    } else if (name == "properties") {
      in_properties_ = true;
      field_ = Field::kNone;
    } else if (name == "system-out") {
      field_ = Field::kOut;
    } else if (name == "system-err") {
      field_ = Field::kErr;
    } else if (name == "flakyFailure" || name == "rerunFailure" || name == "flakyError" || name == "rerunError") {
      in_rerun_ = true;
      rerun_depth_ = depth_;
      rerun_ = TestAttempt();
      rerun_.outcome = (name == "flakyError" || name == "rerunError") ? Outcome::kError : Outcome::kFailed;
      rerun_.message = AttrOr(attributes, "message");
      rerun_.type = AttrOr(attributes, "type");
      rerun_.time_s = ParseSeconds(Attr(attributes, "time"));
      field_ = Field::kRerunDetails;  // Surefire also writes the trace as direct text
    } else {
      field_ = Field::kNone;
    }
  }

  void StartDetails() {
    // Several result elements (GoogleTest writes one <failure> per failed assertion) are joined.
    if (!details_.empty()) details_.Append("\n\n");
    field_ = Field::kDetails;
  }

  void EndCaseChild(std::string_view name) {
    if (in_rerun_ && depth_ == rerun_depth_ - 1) {
      EndRerun();
      return;
    }
    if (depth_ == case_depth_) in_properties_ = false;
    field_ = Field::kNone;
  }

  void EndRerun() {
    rerun_.details = std::string(ToStd(absl::StripAsciiWhitespace(ToAbsl(rerun_details_.Take()))));
    rerun_.system_out = rerun_out_.Take();
    rerun_.system_err = rerun_err_.Take();
    case_.reruns.push_back(std::move(rerun_));
    in_rerun_ = false;
    field_ = Field::kNone;
  }

  void FlushResultText() {
    TestAttempt& r = case_.result;
    details_.TakeInto(&r.details);
    out_.TakeInto(&r.system_out);
    err_.TakeInto(&r.system_err);
    for (const std::string& m : extra_messages_) {
      if (m != r.message) r.details += (r.details.empty() ? "" : "\n") + m;
    }
    extra_messages_.clear();
  }

  void FinishCase() {
    field_ = Field::kNone;
    FlushResultText();
    if (!has_result_child_ && disabled_) {
      case_.result.outcome = Outcome::kSkipped;
      case_.result.type = "disabled";
      case_.result.message = "disabled";
    }
    in_case_ = false;
    ++stats_.complete_cases;
    sink_.OnCase(CurrentSuite(), std::move(case_));
  }

  std::string input_name_;
  JunitCaseSink& sink_;
  const JunitReadOptions& options_;
  JunitReadStats& stats_;

  size_t depth_ = 0;
  std::vector<SuiteFrame> suites_;
  Field field_ = Field::kNone;

  bool in_case_ = false;
  size_t case_depth_ = 0;
  TestCase case_;
  bool disabled_ = false;
  bool has_result_child_ = false;
  bool in_properties_ = false;
  std::vector<std::string> extra_messages_;
  CappedText details_, out_, err_;

  bool in_rerun_ = false;
  size_t rerun_depth_ = 0;
  TestAttempt rerun_;
  CappedText rerun_details_, rerun_out_, rerun_err_;
};

}  // namespace

void CappedText::Append(std::string_view piece) {
  total_ += piece.size();
  if (head_.size() < half_) {
    size_t take = std::min(half_ - head_.size(), piece.size());
    head_.append(piece.substr(0, take));
    piece.remove_prefix(take);
  }
  if (piece.empty()) return;
  tail_.append(piece);
  // Amortised: let the tail grow to twice what is kept before cutting it back.
  if (tail_.size() > 2 * half_ + 4096) tail_.erase(0, tail_.size() - half_ - 4);
}

void CappedText::TakeInto(std::string* out) {
  if (total_ == head_.size() + tail_.size()) {
    out->assign(head_);
    out->append(tail_);
    total_ = 0;
    head_.clear();
    tail_.clear();
    return;
  }
  *out = Take();
}

std::string CappedText::Take() {
  std::string result;
  if (total_ == head_.size() + tail_.size()) {
    result = std::move(head_);
    result += tail_;
  } else {
    size_t head = head_.size();
    while (head > 0 && head < head_.size() && IsContinuation(head_[head])) --head;
    size_t start = tail_.size() > half_ ? tail_.size() - half_ : 0;
    while (start < tail_.size() && IsContinuation(tail_[start])) ++start;
    uint64_t kept = head + (tail_.size() - start);
    result = head_.substr(0, head);
    result += absl::StrFormat("\n... [testshard: %d bytes trimmed] ...\n", total_ - kept);
    result.append(tail_, start, std::string::npos);
  }
  total_ = 0;
  head_.clear();
  tail_.clear();
  return result;
}

absl::Status ReadJunit(std::istream& in, std::string_view input_name, JunitCaseSink& sink,
                       const JunitReadOptions& options, JunitReadStats* stats) {
  JunitReadStats local;
  JunitReadStats& st = stats ? *stats : local;
  JunitHandler handler(input_name, sink, options, st);
  absl::Status status = ParseXml(in, handler, options.limits);
  if (status.ok()) return status;
  absl::Status named = Annotate(status, input_name);
  handler.Abandon(named);
  return named;
}

}  // namespace testshard::report

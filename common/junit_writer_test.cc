#include "common/junit_writer.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pugixml.hpp"

namespace testshard {
namespace {

using ::testing::HasSubstr;

TestCase Case(std::string id, Outcome o, double t = 0.5) {
  TestCase c;
  c.id = std::move(id);
  c.result.outcome = o;
  c.result.time_s = t;
  return c;
}

pugi::xml_document Write(const std::vector<TestSuite>& suites, std::string* text = nullptr) {
  std::ostringstream out;
  EXPECT_TRUE(WriteJunit(suites, out).ok());
  pugi::xml_document doc;
  auto parsed = doc.load_string(out.str().c_str());
  EXPECT_TRUE(parsed) << parsed.description() << "\n" << out.str();
  if (text) *text = out.str();
  return doc;
}

TEST(JunitWriterTest, CountsAreRecomputedFromCases) {
  TestSuite s{"unit", {Case("a.py::t1", Outcome::kPassed), Case("a.py::t2", Outcome::kFailed),
                       Case("a.py::t3", Outcome::kError), Case("a.py::t4", Outcome::kSkipped),
                       Case("a.py::t5", Outcome::kNotRun)}};
  TestSuite s2{"security", {Case("b.py::t1", Outcome::kPassed, 1.25)}};
  pugi::xml_document doc = Write({s, s2});
  pugi::xml_node root = doc.child("testsuites");
  EXPECT_EQ(root.attribute("tests").as_int(), 6);
  EXPECT_EQ(root.attribute("failures").as_int(), 1);
  EXPECT_EQ(root.attribute("errors").as_int(), 1);
  EXPECT_EQ(root.attribute("skipped").as_int(), 2);
  EXPECT_STREQ(root.attribute("time").value(), "3.750");
  pugi::xml_node unit = root.child("testsuite");
  EXPECT_STREQ(unit.attribute("name").value(), "unit");
  EXPECT_EQ(unit.attribute("tests").as_int(), 5);
  EXPECT_STREQ(unit.next_sibling("testsuite").attribute("time").value(), "1.250");
}

TEST(JunitWriterTest, NamesDerivedFromPytestIds) {
  pugi::xml_document doc = Write({{"s", {Case("tests/test_a.py::TestX::test_y[1-2]", Outcome::kPassed)}}});
  pugi::xml_node tc = doc.child("testsuites").child("testsuite").child("testcase");
  EXPECT_STREQ(tc.attribute("classname").value(), "tests.test_a.TestX");
  EXPECT_STREQ(tc.attribute("name").value(), "test_y[1-2]");
}

TEST(JunitWriterTest, ForbiddenCharactersAndBadUtf8AreReplaced) {
  TestCase c = Case("a.py::t[\x01\xff<&\"]", Outcome::kFailed);
  c.result.message = "bad \x1b[31m";
  c.result.details = std::string("nul\0here", 8);
  std::string text;
  pugi::xml_document doc = Write({{"s", {c}}}, &text);
  pugi::xml_node tc = doc.child("testsuites").child("testsuite").child("testcase");
  EXPECT_STREQ(tc.attribute("name").value(), "t[\xEF\xBF\xBD\xEF\xBF\xBD<&\"]");
  EXPECT_THAT(std::string(tc.child("failure").text().get()), HasSubstr("nul\xEF\xBF\xBDhere"));
}

TEST(JunitWriterTest, FlakyPassUsesSurefireFlakyFailure) {
  TestCase c = Case("a.py::t", Outcome::kPassed, 0.1);
  TestAttempt first;
  first.outcome = Outcome::kFailed;
  first.message = "AssertionError";
  first.details = "trace";
  first.time_s = 0.2;
  c.reruns.push_back(first);
  pugi::xml_document doc = Write({{"s", {c}}});
  pugi::xml_node suite = doc.child("testsuites").child("testsuite");
  EXPECT_EQ(suite.attribute("failures").as_int(), 0);
  pugi::xml_node tc = suite.child("testcase");
  EXPECT_STREQ(tc.child("flakyFailure").attribute("message").value(), "AssertionError");
  EXPECT_STREQ(tc.child("flakyFailure").child("stackTrace").text().get(), "trace");
  EXPECT_STREQ(tc.attribute("time").value(), "0.300");
}

TEST(JunitWriterTest, NotRunIsSkippedWithReason) {
  TestCase c = Case("a.py::t", Outcome::kNotRun);
  c.result.message = "maxfail reached";
  pugi::xml_document doc = Write({{"s", {c}}});
  pugi::xml_node skipped = doc.child("testsuites").child("testsuite").child("testcase").child("skipped");
  EXPECT_STREQ(skipped.attribute("message").value(), "not run: maxfail reached");
}

TEST(JunitWriterTest, TimesAlwaysHaveThreeDecimals) {
  EXPECT_EQ(FormatSeconds(3), "3.000");
  EXPECT_EQ(FormatSeconds(0.0004), "0.000");
  EXPECT_EQ(FormatSeconds(1234.5678), "1234.568");
  EXPECT_EQ(FormatSeconds(-1), "0.000");
  EXPECT_EQ(FormatSeconds(std::numeric_limits<double>::infinity()), "0.000");
  EXPECT_EQ(FormatSeconds(std::nan("")), "0.000");
  EXPECT_EQ(FormatSeconds(0.0005), "0.001");  // the double is a little above 0.0005
  EXPECT_EQ(FormatSeconds(2.0625), "2.062");  // an exact tie rounds to even, as to_chars does
  EXPECT_EQ(FormatSeconds(1e300).size(), 305u);
}

// The integer fast path must give to_chars' digits exactly, including next to rounding ties.
TEST(JunitWriterTest, TimesMatchToChars) {
  std::mt19937_64 rng(7);
  auto reference = [](double s) {
    char buf[400];
    return std::string(buf, std::to_chars(buf, buf + sizeof buf, s, std::chars_format::fixed, 3).ptr);
  };
  std::vector<double> values;
  for (int i = 0; i < 200000; ++i) {
    double magnitude = std::pow(10.0, std::uniform_real_distribution<double>(-6, 13)(rng));
    values.push_back(magnitude * std::uniform_real_distribution<double>(0, 1)(rng));
    // Next to a tie: k + 0.5 milliseconds, and the doubles on either side of it.
    double tie = (static_cast<double>(rng() % 100000000) + 0.5) / 1000;
    values.push_back(tie);
    values.push_back(std::nextafter(tie, 0.0));
    values.push_back(std::nextafter(tie, 1e300));
  }
  for (double s : {0.0, 1e-300, 0.0005, 0.0015, 999999999.9995, 1e9, 1e12, 4503599627370.4995}) values.push_back(s);
  for (double s : values) ASSERT_EQ(FormatSeconds(s), reference(s)) << std::hexfloat << s;
}

// Escaping skips plain runs sixteen bytes at a time; it must give what escaping byte by byte gives, wherever the
// bytes that need a decision fall relative to those blocks. The reference is the rule, one byte at a time.
std::string EscapeByteByByte(std::string_view text, bool attribute) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    uint32_t cp = len == 1 ? c : len == 0 ? 0 : c & (0xFF >> (len + 1));
    for (size_t k = 1; len > 1 && k < len; ++k) {
      if (i + k >= text.size() || (static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) {
        len = 0;
        break;
      }
      cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (len > 1 && (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) len = 0;
    bool allowed = len > 0 && (cp == 0x9 || cp == 0xA || cp == 0xD || (cp >= 0x20 && cp <= 0xD7FF) ||
                               (cp >= 0xE000 && cp <= 0xFFFD) || cp >= 0x10000);
    if (!allowed) out += "\xEF\xBF\xBD";
    else if (cp == '<') out += "&lt;";
    else if (cp == '>') out += "&gt;";
    else if (cp == '&') out += "&amp;";
    else if (cp == '"') out += "&quot;";
    else if (cp == '\r') out += "&#13;";
    else if (attribute && cp == '\n') out += "&#10;";
    else if (attribute && cp == '\t') out += "&#9;";
    else out.append(text.substr(i, len));
    i += len == 0 ? 1 : len;
  }
  return out;
}

TEST(JunitWriterTest, EscapingMatchesTheByteByByteRule) {
  std::mt19937_64 rng(11);
  const std::vector<std::string> pieces = {"<", ">", "&", "\"", "'", "\n", "\t", "\r", std::string(1, '\0'),
                                           "\x7F", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xEF\xBF\xBE",
                                           "\xC3", "\x80", "\xED\xA0\x80", "\xC0\xAF", "\xF5\x80\x80\x80"};
  for (int round = 0; round < 20000; ++round) {
    std::string text;
    size_t parts = rng() % 6;
    for (size_t p = 0; p < parts; ++p) {
      text += std::string(rng() % 40, static_cast<char>('a' + rng() % 26));  // runs across 16-byte blocks
      text += pieces[rng() % pieces.size()];
    }
    for (bool attribute : {false, true}) {
      std::string got;
      AppendXmlEscaped(&got, text, attribute);
      ASSERT_EQ(got, EscapeByteByByte(text, attribute)) << "attribute=" << attribute << " text=" << text;
    }
  }
}

TEST(JunitWriterTest, LongOutputKeepsHeadAndTail) {
  std::string big = "HEAD" + std::string(200000, 'x') + "TAIL";
  std::string trimmed = TrimMiddle(big, 1000);
  EXPECT_LT(trimmed.size(), 1200u);
  EXPECT_EQ(trimmed.substr(0, 4), "HEAD");
  EXPECT_EQ(trimmed.substr(trimmed.size() - 4), "TAIL");
  EXPECT_THAT(trimmed, HasSubstr("bytes trimmed"));
}

}  // namespace
}  // namespace testshard

// The fast path must be invisible: for every document, ParseXml with it gives the handler the same events and
// returns the same status and message as expat alone. These tests compare the two on hand-picked documents, on
// every prefix of a realistic one (every possible truncation) and on thousands of seeded byte mutations, each
// read in several chunk sizes so constructs are cut at every boundary.
#include "common/report/xml_fast_path.h"

#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/report/xml_stream.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::report {
namespace {

// Records every event; text pieces are joined, since how text is cut into pieces is not part of the contract.
class EventLog : public XmlHandler {
 public:
  // stop_at: stop the parse in the n-th start (n > 0) or end (n < 0) element event, counting from 1.
  // text_in: when set, text is wanted only inside elements of that name (as the JUnit reader does).
  EventLog(int stop_at, std::string text_in) : stop_at_(stop_at), text_in_(std::move(text_in)) {
    want_text = text_in_.empty();
  }
  void StartElement(std::string_view name, const char** attributes) override {
    log_ += "<" + std::string(name);
    for (const char** a = attributes; *a; a += 2) log_ += std::string(" ") + a[0] + "=[" + a[1] + "]";
    log_ += ">";
    if (++starts_ == stop_at_) stop_status = absl::InvalidArgumentError("stopped at a start");
    if (!text_in_.empty()) want_text = name == text_in_;
  }
  void EndElement(std::string_view name) override {
    log_ += "</" + std::string(name) + ">";
    if (++ends_ == -stop_at_) stop_status = absl::InvalidArgumentError("stopped at an end");
    if (!text_in_.empty()) want_text = false;
  }
  void Text(std::string_view text) override {
    if (!want_text) log_ += "{text delivered while unwanted}";
    log_ += text;
  }
  void Comment(std::string_view text) override { log_ += "<!--" + std::string(text) + "-->"; }
  const std::string& log() const { return log_; }

 private:
  int stop_at_;
  std::string text_in_;
  int starts_ = 0, ends_ = 0;
  std::string log_;
};

struct Outcome {
  std::string log;
  std::string status;
};

Outcome Run(const std::string& doc, bool fast, size_t chunk, int stop_at, const std::string& text_in) {
  XmlLimits limits;
  limits.fast_path = fast;
  limits.chunk_bytes = chunk;
  limits.max_depth = 6;
  std::istringstream in(doc);
  EventLog log(stop_at, text_in);
  absl::Status s = ParseXml(in, log, limits);
  return {log.log(), s.ToString()};
}

// Compares the two parsers on `doc` in several chunk sizes and handler behaviours.
void ExpectSameAsExpat(const std::string& doc, const std::vector<size_t>& chunks = {1, 3, 7, 64, 256 << 10}) {
  struct Handler {
    int stop_at;
    std::string text_in;
  };
  for (const Handler& h : {Handler{0, ""}, Handler{0, "t"}, Handler{2, ""}, Handler{-1, "t"}, Handler{-3, ""}}) {
    for (size_t chunk : chunks) {
      Outcome expat = Run(doc, false, chunk, h.stop_at, h.text_in);
      Outcome fast = Run(doc, true, chunk, h.stop_at, h.text_in);
      ASSERT_EQ(fast.status, expat.status)
          << "document: " << doc << "\nchunk " << chunk << ", stop " << h.stop_at << ", text in " << h.text_in;
      ASSERT_EQ(fast.log, expat.log)
          << "document: " << doc << "\nchunk " << chunk << ", stop " << h.stop_at << ", text in " << h.text_in;
    }
  }
}

FastPathResult Scan(const std::string& doc) {
  std::istringstream in(doc);
  EventLog log(0, "");
  return ScanXmlFast(in, log, XmlLimits());
}

// A pytest report with what real ones hold: references, multi-byte text and names in attributes, a traceback,
// CDATA, a comment, attributes in both quote styles and with whitespace in them; and runs of plain text long enough
// for the scanner's sixteen-byte steps in each kind of content.
const std::string kReport =
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- by pytest -->\n<!DOCTYPE testsuites SYSTEM 'junit.dtd'>\n"
    "<testsuites><testsuite name=\"pytest\" errors=\"0\" tests=\"3\">\n"
    "  <testcase classname=\"tests.test_\xC3\xA9t\xC3\xA9\" name=\"test_a[caf\xC3\xA9-\xF0\x9F\x98\x80]\" "
    "time='0.5'>\n"
    "    <failure message=\"assert 1 &lt; 0&#10;tab&#x9;&quot;x&quot;\tend\">def test_a():\n"
    ">       assert 1 &lt; 0 &amp;&amp; x &gt; 2 ]] ok\nE   \xE2\x9C\x97 failed</failure>\n"
    "    <system-out><![CDATA[raw <b> & ]] ]> stuff]]></system-out>\n"
    "  </testcase>\n"
    "  <long a=\"an attribute value long enough for two blocks\"><!-- a comment long enough for two blocks -->"
    "<![CDATA[cdata long enough for two blocks of sixteen]]>text long enough to span two blocks of sixteen\tand\n"
    "more text after a tab and a newline in it</long>\n"
    "  <testcase classname=\"t\" name=\"b\"/><t>wanted &apos;text&apos;</t><t/>\n"
    "</testsuite></testsuites>\n";

TEST(XmlFastPathTest, CompletesAPlainReportItself) {
  FastPathResult r = Scan(kReport);
  EXPECT_EQ(r.kind, FastPathResult::kComplete) << "handed back at " << r.offset << ": " << kReport.substr(r.offset, 20);
  EXPECT_EQ(r.bytes_read, kReport.size());
  ExpectSameAsExpat(kReport);
}

TEST(XmlFastPathTest, HandsBackWhereItStopsUnderstanding) {
  const std::string doctype = "<?xml version=\"1.0\"?><!DOCTYPE a [<!ATTLIST a b CDATA \"default\">]><a/>";
  EXPECT_EQ(Scan(doctype).kind, FastPathResult::kHandBack);
  EXPECT_EQ(Scan(doctype).offset, doctype.find("<!DOCTYPE"));
  // A byte expat's path repairs: handed back at the start of the text token holding it (after its last newline).
  const std::string bad_byte = "<a><b x=\"1\">ok</b>line\ntext \xFF more</a>";
  EXPECT_EQ(Scan(bad_byte).kind, FastPathResult::kHandBack);
  EXPECT_EQ(Scan(bad_byte).offset, bad_byte.find("text"));
  const std::string truncated = "<a><b>text";
  EXPECT_EQ(Scan(truncated).kind, FastPathResult::kHandBack);
  EXPECT_EQ(Scan(truncated).offset, truncated.size());
  EXPECT_EQ(Scan("").kind, FastPathResult::kHandBack);
}

TEST(XmlFastPathTest, SameAsExpatOnDocumentsItHandsBack) {
  const std::vector<std::string> docs = {
      "",
      " ",
      // A repaired byte, then "]]>" in the same text token: expat refuses the whole token, even its part before.
      "<a>![CDATA[cdata long eno\x01gh for two blocks]]>text\nmore</a>",
      "<a>x\ny \xC3 z]]>w</a>",
      "<a>x\ry \x01 z</a>",
      "\xEF\xBB\xBF<a>bom</a>",
      "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>caf\xE9</a>",
      "<?xml version=\"1.1\"?><a/>",
      "<?xml version=\"1.0\" encoding=\"utf8\"?><a/>",
      "<?xml version=\"1.0\" standalone=\"yes\" ?><a/>",
      "<?xml version=\"1.0\" foo=\"bar\"?><a/>",
      "<?xmlfoo?><a/>",
      "<?pi data?><a><?pi in?>x</a>",
      " <?xml version=\"1.0\"?><a/>",
      "<!DOCTYPE a [<!ENTITY e \"boom\">]><a>&e;</a>",
      "<!DOCTYPE a SYSTEM \"http://example.invalid/a.dtd\"><a/>",
      "<?xml version=\"1.0\"?>\n<!DOCTYPE coverage SYSTEM 'http://cobertura.sourceforge.net/xml/coverage-04.dtd'>\n"
      "<coverage><x>&amp;</x></coverage>",
      "<!DOCTYPE a PUBLIC \"-//X//DTD Y 1.0//EN\" \"y.dtd\" ><a>&unknown;</a>",
      "<!DOCTYPE a PUBLIC \"bad{id}\" \"y.dtd\"><a/>",
      "<!DOCTYPE a PUBLIC \"id\"><a/>",
      "<!DOCTYPE a SYSTEM\"x\"><a/>",
      "<!DOCTYPE a><!DOCTYPE a><a/>",
      "<!DOCTYPE a SYSTEM \"x\" [<!ATTLIST a b CDATA \"default\">]><a/>",
      "<!DOCTYPE a [<!ATTLIST a b CDATA \"default\">]><a/>",
      "<!DOCTYPEa><a/>",
      "<!DOCTYPE a><a/><!DOCTYPE a>",
      "<a/><!DOCTYPE a>",
      "<!DOCTYPE b><a/>",
      "<a>&unknown;</a>",
      "<a>&#27;escape &#0; &#xD800; &#13;cr</a>",
      "<a x=\"&#27;\">&#65;&#x42;&#x1F600;</a>",
      "<a>crlf\r\nline\rlone</a>",
      "<a x=\"cr\rin attr\" y=\"tab\tnl\nend\"/>",
      "<a>\x01 control</a>",
      "<a>\xC3</a>",
      "<a>\xED\xA0\x80 surrogate \xEF\xBF\xBE nonchar</a>",
      "<a x=\"\xFF\"/>",
      "<a><!-- bad -- comment --></a>",
      "<a><!-- fine - comment --></a><!-- after -->",
      "<!---->\n<a/>",
      "<a><!---></a>",
      "<a>]]></a>",
      "<a>]]]></a>",
      "<a><![CDATA[x]]]]><![CDATA[>]]></a>",
      "<![CDATA[outside]]><a/>",
      "<a x=\"1\" x=\"2\"/>",
      "<a x=\"1\"y=\"2\"/>",
      "<a x=1/>",
      "<a x=\"<\"/>",
      "<a x='it\"s' y=\"it's\"/>",
      "<a  x = \"1\"  >t</a >",
      "<a></b>",
      "</a>",
      "<a/><b/>",
      "<a/>junk",
      "<a/>\n\n  \n",
      "text<a/>",
      "<a>",
      "<a x=\"1",
      "<a><b><c><d><e><f><g>deep</g></f></e></d></c></b></a>",
      "<a><b><c><d><e><f>six</f></e></d></c></b></a>",
      "<\xC3\xA9l\xC3\xA9ment attr=\"v\">non-ASCII name</\xC3\xA9l\xC3\xA9ment>",
      "<a \xC3\xA9=\"v\"/>",
      "<ns:a xmlns:ns=\"urn:x\" ns:b=\"c\"/>",
      "<a>x</a><!-- trailing --> ",
      "\x00<\x00a\x00/\x00>\x00",
      "\xFF\xFE<\0a\0/\0>\0",
      "<a>line1\nline2 <b>\xE2\x82\xAC\xE2\x82\xAC</b> t\xC3\xA9xt &amp; more</a>",
  };
  for (const std::string& doc : docs) ExpectSameAsExpat(doc);
}

TEST(XmlFastPathTest, SameAsExpatOnEveryTruncation) {
  for (size_t n = 0; n <= kReport.size(); ++n) ExpectSameAsExpat(kReport.substr(0, n), {1, 5, 256 << 10});
}

// XML_FAST_PATH_SEED and XML_FAST_PATH_MUTATIONS run other or more mutations by hand.
TEST(XmlFastPathTest, SameAsExpatOnSeededMutations) {
  const char* seed = std::getenv("XML_FAST_PATH_SEED");
  const char* mutations = std::getenv("XML_FAST_PATH_MUTATIONS");
  std::mt19937 rng(seed ? static_cast<unsigned>(std::atol(seed)) : 20261129u);
  const std::string alphabet = "<>/&;#x!?-[]=\"' \t\n\rab\xC3\xA9\x01\xFF";
  const int n = mutations ? std::atoi(mutations) : 3000;
  for (int i = 0; i < n; ++i) {
    std::string doc = kReport;
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % doc.size();
      char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0: doc[at] = c; break;
        case 1: doc.insert(doc.begin() + static_cast<std::ptrdiff_t>(at), c); break;
        default: doc.erase(at, 1 + rng() % 4); break;
      }
    }
    ExpectSameAsExpat(doc, {7, 256 << 10});
    if (::testing::Test::HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace testshard::report

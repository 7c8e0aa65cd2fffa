#include "common/report/xml_stream.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::report {
namespace {

using ::testing::HasSubstr;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

// Records the document as "<a>text</a>" so tests can compare what the handler saw.
class Recorder : public XmlHandler {
 public:
  void StartElement(std::string_view name, const char** attributes) override {
    seen += "<" + std::string(name);
    for (const char** a = attributes; *a; a += 2) seen += std::string(" ") + a[0] + "=" + a[1];
    seen += ">";
  }
  void EndElement(std::string_view name) override { seen += "</" + std::string(name) + ">"; }
  void Text(std::string_view text) override { seen += text; }
  std::string seen;
};

absl::Status Parse(const std::string& doc, Recorder* r, XmlLimits limits = {}) {
  std::istringstream in(doc);
  return ParseXml(in, *r, limits);
}

TEST(XmlStreamTest, WellFormedDocumentIsDelivered) {
  Recorder r;
  EXPECT_THAT(Parse("<?xml version=\"1.0\"?><a x=\"1\">hi<![CDATA[<raw>]]></a>", &r), IsOk());
  EXPECT_EQ(r.seen, "<a x=1>hi<raw></a>");
}

TEST(XmlStreamTest, BillionLaughsIsRefused) {
  std::string doc = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">";
  for (int i = 1; i < 10; ++i) {
    doc += "<!ENTITY lol" + std::to_string(i) + " \"";
    for (int k = 0; k < 10; ++k) doc += "&lol" + (i == 1 ? std::string() : std::to_string(i - 1)) + ";";
    doc += "\">";
  }
  doc += "]><lolz>&lol9;</lolz>";
  Recorder r;
  EXPECT_THAT(Parse(doc, &r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("entity declaration")));
  EXPECT_THAT(r.seen, Not(HasSubstr("lollol")));
}

TEST(XmlStreamTest, ExternalEntityIsNeverLoaded) {
  Recorder r;
  absl::Status s = Parse(
      "<!DOCTYPE t [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><testsuite name=\"&xxe;\"/>", &r);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("entity")));
  EXPECT_THAT(r.seen, Not(HasSubstr("root:")));
}

TEST(XmlStreamTest, ExternalDtdReferenceIsIgnoredNotFetched) {
  // gcovr writes this DOCTYPE; the DTD must not be loaded and the document must still parse.
  Recorder r;
  EXPECT_THAT(Parse("<?xml version=\"1.0\"?>\n<!DOCTYPE coverage SYSTEM "
                    "'http://cobertura.sourceforge.net/xml/coverage-04.dtd'>\n<coverage/>",
                    &r),
              IsOk());
  EXPECT_EQ(r.seen, "<coverage></coverage>");
}

TEST(XmlStreamTest, DeepNestingIsStopped) {
  std::string doc;
  for (int i = 0; i < 5000; ++i) doc += "<a>";
  Recorder r;
  EXPECT_THAT(Parse(doc, &r), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("nested deeper than 256")));
}

TEST(XmlStreamTest, HugeAttributeHitsTheParserMemoryLimit) {
  std::string doc = "<a x=\"" + std::string(8 << 20, 'x') + "\"/>";
  Recorder r;
  XmlLimits limits;
  limits.max_parser_bytes = 1 << 20;
  EXPECT_THAT(Parse(doc, &r, limits), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("MiB")));
}

TEST(XmlStreamTest, HugeTextIsStreamedWithinTheLimit) {
  std::string doc = "<a>" + std::string(8 << 20, 'x') + "</a>";
  class Counter : public XmlHandler {
   public:
    void StartElement(std::string_view, const char**) override {}
    void EndElement(std::string_view) override {}
    void Text(std::string_view t) override { bytes += t.size(); }
    size_t bytes = 0;
  } counter;
  XmlLimits limits;
  limits.max_parser_bytes = 2 << 20;
  std::istringstream in(doc);
  EXPECT_THAT(ParseXml(in, counter, limits), IsOk());
  EXPECT_EQ(counter.bytes, size_t{8} << 20);
}

TEST(XmlStreamTest, EmptyInputIsAnError) {
  Recorder r;
  EXPECT_THAT(Parse("", &r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty file")));
}

TEST(XmlStreamTest, BinaryGarbageIsAnError) {
  std::string garbage;
  for (int i = 0; i < 4096; ++i) garbage.push_back(static_cast<char>((i * 7919) & 0xFF));
  Recorder r;
  EXPECT_THAT(Parse(garbage, &r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 1")));
}

TEST(XmlStreamTest, TruncatedDocumentSaysSo) {
  Recorder r;
  EXPECT_THAT(Parse("<testsuite><testcase name=\"a\"/><testcase na", &r),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
  EXPECT_THAT(r.seen, HasSubstr("<testcase name=a></testcase>"));
}

TEST(XmlStreamTest, InvalidUtf8AndControlCharactersAreReplaced) {
  Recorder r;
  EXPECT_THAT(Parse("<a>bad\xff\xfe byte \x01 ctl \xc3\xa9</a>", &r), IsOk());
  EXPECT_EQ(r.seen, "<a>bad\xEF\xBF\xBD\xEF\xBF\xBD byte \xEF\xBF\xBD ctl \xc3\xa9</a>");
}

TEST(XmlStreamTest, ReferencesToForbiddenCharactersAreReplaced) {
  // Surefire writes ANSI colour codes as "&#27;"; XML 1.0 forbids them and expat would reject the whole file.
  Recorder r;
  EXPECT_THAT(Parse("<a m=\"&#x1b;x\">c&#27;[0m &#65;&#x42;&amp;&#0;</a>", &r), IsOk());
  EXPECT_EQ(r.seen, "<a m=\xEF\xBF\xBDx>c\xEF\xBF\xBD[0m AB&\xEF\xBF\xBD</a>");
}

TEST(XmlStreamTest, ReferenceSplitAcrossChunksIsRepaired) {
  for (size_t chunk = 3; chunk < 12; ++chunk) {
    Recorder r;
    XmlLimits limits;
    limits.chunk_bytes = chunk;
    EXPECT_THAT(Parse("<a>xy&#27;z&amp;&#66;</a>", &r, limits), IsOk()) << chunk;
    EXPECT_EQ(r.seen, "<a>xy\xEF\xBF\xBDz&B</a>") << chunk;
  }
}

TEST(XmlStreamTest, MultibyteCharacterSplitAcrossChunksIsKept) {
  std::string text;
  for (int i = 0; i < 50; ++i) text += "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";  // é € 😀
  Recorder r;
  XmlLimits limits;
  limits.chunk_bytes = 7;
  EXPECT_THAT(Parse("<a>" + text + "</a>", &r, limits), IsOk());
  EXPECT_EQ(r.seen, "<a>" + text + "</a>");
}

TEST(XmlStreamTest, HandlerCanStopTheParse) {
  class Stopper : public XmlHandler {
   public:
    void StartElement(std::string_view name, const char**) override {
      if (name == "coverage") stop_status = absl::InvalidArgumentError("not a JUnit report");
    }
    void EndElement(std::string_view) override {}
    void Text(std::string_view) override {}
  } stopper;
  std::istringstream in("<coverage><x/></coverage>");
  EXPECT_THAT(ParseXml(in, stopper), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a JUnit report")));
}

TEST(SniffRootElementTest, SkipsDeclarationCommentsAndDoctype) {
  EXPECT_EQ(SniffRootElement("\xEF\xBB\xBF<?xml version=\"1.0\"?>\n<!-- hi -->\n<!DOCTYPE coverage SYSTEM 'x'>"
                             "<coverage version=\"1\">"),
            "coverage");
  EXPECT_EQ(SniffRootElement("<testsuites>"), "testsuites");
  EXPECT_EQ(SniffRootElement("TN:\nSF:a.c\n"), "");
  EXPECT_EQ(SniffRootElement(""), "");
}

// The report path as a reader sees it: the old report, then the whole new one; never a part, and no leftovers.
class WriteThroughTempTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ts-wtt-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static absl::Status Write(const std::string& path, const std::string& text) {
    return WriteThroughTemp(path, [&](std::ostream& out) {
      out << text;
      return absl::OkStatus();
    });
  }
  std::string dir_;
};

TEST_F(WriteThroughTempTest, ReplacesAnOldReportWhole) {
  const std::string path = dir_ + "/report.xml";
  ASSERT_THAT(Write(path, "old report"), IsOk());
  ASSERT_THAT(Write(path, "new report"), IsOk());
  EXPECT_EQ(Read(path), "new report");
  EXPECT_FALSE(std::filesystem::exists(path + ".testshard-tmp"));
}

TEST_F(WriteThroughTempTest, FailedWriteLeavesTheOldReport) {
  const std::string path = dir_ + "/report.xml";
  ASSERT_THAT(Write(path, "old report"), IsOk());
  absl::Status s = WriteThroughTemp(path, [](std::ostream& out) {
    out << "half a rep";
    return absl::InternalError("the merge failed");
  });
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInternal, HasSubstr("the merge failed")));
  EXPECT_EQ(Read(path), "old report");
  EXPECT_FALSE(std::filesystem::exists(path + ".testshard-tmp"));
}

// Even an empty one: the old report is unlinked before the rename, and unlink (unlike remove) leaves directories.
TEST_F(WriteThroughTempTest, DirectoryInTheWayIsAnErrorAndStays) {
  const std::string path = dir_ + "/report.xml";
  std::filesystem::create_directory(path);
  EXPECT_THAT(Write(path, "report"), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot rename")));
  EXPECT_TRUE(std::filesystem::is_directory(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".testshard-tmp"));
}

}  // namespace
}  // namespace testshard::report

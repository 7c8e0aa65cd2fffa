#include "common/report/xml_fast_path.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/ascii_scan.h"
#include "common/report/xml_chars.h"

namespace testshard::report {
namespace {

// Byte classes, looked up once per byte in the loops that carry the work.
enum : uint8_t {
  kPlain = 0,
  kSpecial = 1,  // needs a look: markup, a reference, a quote, a possible "]]>", whitespace to normalise
  kBad = 2,      // a control character or carriage return: handed back (repair or newline normalisation)
  kHigh = 3,     // leads or continues a multi-byte sequence: validated
};

struct Tables {
  std::array<uint8_t, 256> text{}, attr{}, cdata{}, comment{};
  std::array<bool, 256> name_start{}, name{};
  constexpr Tables() {
    for (int c = 0; c < 256; ++c) {
      uint8_t cls = c >= 0x80 ? kHigh : (c < 0x20 && c != '\t' && c != '\n') ? kBad : kPlain;
      text[c] = attr[c] = cdata[c] = comment[c] = cls;
      bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
      name_start[c] = alpha || c == '_' || c == ':';
      name[c] = name_start[c] || (c >= '0' && c <= '9') || c == '.' || c == '-';
    }
    text['<'] = text['&'] = text[']'] = kSpecial;
    cdata[']'] = kSpecial;
    comment['-'] = kSpecial;
    attr['<'] = attr['&'] = attr['"'] = attr['\''] = attr['\t'] = attr['\n'] = kSpecial;
  }
};
constexpr Tables kTables;

bool IsSpace(unsigned char c) { return c == ' ' || c == '\t' || c == '\n'; }

class Scanner {
 public:
  Scanner(std::istream& in, XmlHandler& handler, const XmlLimits& limits)
      : in_(in), handler_(handler), limits_(limits),
        chunk_(std::max<size_t>(limits.chunk_bytes, 1)),
        max_carry_(std::min<size_t>(limits.max_parser_bytes, size_t{1} << 20)) {}

  FastPathResult Run() {
    bool eof = false;
    while (true) {
      Step s = Parse(eof);
      if (s == Step::kDone) return Result(FastPathResult::kComplete, base_ + end_);
      if (s == Step::kStopped) return Result(FastPathResult::kStopped, stop_at_);
      if (s == Step::kHandBack) return Result(FastPathResult::kHandBack, base_ + hand_back_at_);
      // kNeedMore: what is left from begin_ is an unfinished construct.
      if (eof || end_ - begin_ > max_carry_) return Result(FastPathResult::kHandBack, base_ + begin_);
      if (end_ > begin_) std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);  // none yet: no buffer
      base_ += begin_;
      end_ -= begin_;
      begin_ = 0;
      if (buf_.size() < end_ + chunk_) buf_.resize(end_ + chunk_);
      in_.read(buf_.data() + end_, static_cast<std::streamsize>(chunk_));
      if (in_.bad()) return Result(FastPathResult::kReadError, base_ + end_);
      size_t got = static_cast<size_t>(in_.gcount());
      end_ += got;
      bytes_read_ += got;
      eof = got < chunk_;
    }
  }

 private:
  enum class Step { kProgress, kNeedMore, kHandBack, kStopped, kDone };

  FastPathResult Result(FastPathResult::Kind kind, uint64_t offset) const {
    FastPathResult r;
    r.kind = kind;
    r.offset = offset;
    r.bytes_read = bytes_read_;
    return r;
  }
  const unsigned char* b() const { return reinterpret_cast<const unsigned char*>(buf_.data()); }
  Step HandBack(size_t at) {
    hand_back_at_ = at;
    return Step::kHandBack;
  }
  // After an event: whether the handler stopped the parse, remembering where the event ended (where expat
  // reports a stop).
  bool Stopped(size_t event_end) {
    if (handler_.stop_status.ok()) return false;
    stop_at_ = base_ + event_end;
    return true;
  }

  Step Parse(bool eof) {
    while (begin_ < end_) {
      Step s;
      if (in_cdata_) {
        s = Cdata();
      } else if (buf_[begin_] == '<') {
        s = Markup();
      } else if (open_.empty()) {
        s = OutsideRoot();
      } else {
        s = Text();
      }
      if (s != Step::kProgress) return s;
    }
    return eof && root_closed_ ? Step::kDone : Step::kNeedMore;
  }

  // Before and after the root element only whitespace may stand between markup.
  Step OutsideRoot() {
    size_t j = SkipSpace(begin_);
    begin_ = j;
    return j == end_ || buf_[j] == '<' ? Step::kProgress : HandBack(j);
  }

  size_t SkipSpace(size_t j) const {
    while (j < end_ && IsSpace(b()[j])) ++j;
    return j;
  }

  // Hands text [from, to) to the handler when it wants text. False when the handler stopped.
  bool Deliver(size_t from, size_t to) {
    if (to == from || !handler_.want_text) return true;
    handler_.Text(std::string_view(buf_.data() + from, to - from));
    return !Stopped(to);
  }

  // Validates the multi-byte sequence at j: its length, 0 to hand back, or -1 when it runs past the buffer.
  int Sequence(size_t j) const {
    size_t n = LeadLength(b()[j]);
    if (n < 2) return 0;
    if (j + n > end_) return -1;
    return ValidXmlSequence(b() + j, n) ? static_cast<int>(n) : 0;
  }

  enum class Stop { kSpecial, kEnd, kInvalid };
  // Advances *j over plain bytes of class table `cls` and valid multi-byte sequences, to a kSpecial byte, the end
  // of the buffer (possibly inside a sequence), or a byte to hand back (kBad, or an invalid sequence). kStops are
  // the table's kSpecial bytes that are printable ASCII, so whole blocks of other printable bytes are skipped at
  // once; a byte-by-byte loop here was a fifth of the scanner's time.
  template <char... kStops>
  Stop Advance(const std::array<uint8_t, 256>& cls, size_t* j) const {
    while (true) {
      *j = SkipPlain<kStops...>(b(), *j, end_, [&cls](unsigned char c) { return cls[c] == kPlain; });
      if (*j == end_) return Stop::kEnd;
      uint8_t c = cls[b()[*j]];
      if (c == kSpecial) return Stop::kSpecial;
      if (c == kBad) return Stop::kInvalid;
      int n = Sequence(*j);
      if (n < 0) return Stop::kEnd;
      if (n == 0) return Stop::kInvalid;
      *j += static_cast<size_t>(n);
    }
  }

  // Character data up to the next markup; references are decoded and delivered as pieces of their own.
  Step Text() {
    size_t j = begin_;
    while (true) {
      Stop stop = Advance<'<', '&', ']'>(kTables.text, &j);
      if (stop == Stop::kEnd) break;
      if (stop == Stop::kInvalid) {
        // Repaired or normalised by expat's path. A carriage return ends expat's data token there; a repaired
        // byte does not, and the token it continues may yet hold "]]>", refused whole: deliver only up to the
        // token's start.
        return DeliverAndHandBack(b()[j] == '\r' ? j : TokenStart(j));
      }
      unsigned char c = b()[j];
      if (c == '<') break;
      if (c == '&') {
        if (!Deliver(begin_, j)) return Step::kStopped;
        begin_ = j;
        std::string_view decoded;
        size_t len = 0;
        Step s = Reference(j, &decoded, &len);
        if (s != Step::kProgress) return s;
        if (handler_.want_text) {
          handler_.Text(decoded);
          if (Stopped(j + len)) return Step::kStopped;
        }
        begin_ = j = j + len;
        continue;
      }
      if (c == ']') {
        if (j + 2 >= end_) break;  // decided once more arrives
        if (b()[j + 1] == ']' && b()[j + 2] == '>') {
          // Expat refuses the whole data token holding "]]>" and delivers none of it.
          return DeliverAndHandBack(TokenStart(j));
        }
        ++j;
        continue;
      }
    }
    if (!Deliver(begin_, j)) return Step::kStopped;
    begin_ = j;
    return j < end_ && buf_[j] == '<' ? Step::kProgress : Step::kNeedMore;
  }

  // Where expat's data token holding j starts: after the last newline before it (newlines end tokens; so does the
  // markup or reference that began this run of text at begin_).
  size_t TokenStart(size_t j) const {
    const void* nl = memrchr(buf_.data() + begin_, '\n', j - begin_);
    return nl ? static_cast<size_t>(static_cast<const char*>(nl) - buf_.data()) + 1 : begin_;
  }

  Step DeliverAndHandBack(size_t j) {
    if (!Deliver(begin_, j)) return Step::kStopped;
    begin_ = j;
    return HandBack(j);
  }

  // The reference at j ("&...;"): its replacement text and its length in the input.
  Step Reference(size_t j, std::string_view* decoded, size_t* len) {
    size_t limit = std::min(end_, j + 12);
    size_t semi = j + 1;
    while (semi < limit && buf_[semi] != ';') ++semi;
    if (semi == limit) return limit == end_ ? Step::kNeedMore : HandBack(j);
    std::string_view ref(buf_.data() + j, semi + 1 - j);
    *len = ref.size();
    if (ref == "&amp;") {
      *decoded = "&";
    } else if (ref == "&lt;") {
      *decoded = "<";
    } else if (ref == "&gt;") {
      *decoded = ">";
    } else if (ref == "&quot;") {
      *decoded = "\"";
    } else if (ref == "&apos;") {
      *decoded = "'";
    } else if (ref.size() > 3 && ref[1] == '#') {
      int64_t cp = CharReference(ref);
      // Carriage returns by reference are kept by expat but rare enough to leave to it.
      if (cp < 0 || !XmlCharAllowed(static_cast<uint64_t>(cp)) || cp == '\r') return HandBack(j);
      char* o = ref_utf8_;
      auto u = static_cast<uint32_t>(cp);
      if (u < 0x80) {
        *o++ = static_cast<char>(u);
      } else if (u < 0x800) {
        *o++ = static_cast<char>(0xC0 | (u >> 6));
        *o++ = static_cast<char>(0x80 | (u & 0x3F));
      } else if (u < 0x10000) {
        *o++ = static_cast<char>(0xE0 | (u >> 12));
        *o++ = static_cast<char>(0x80 | ((u >> 6) & 0x3F));
        *o++ = static_cast<char>(0x80 | (u & 0x3F));
      } else {
        *o++ = static_cast<char>(0xF0 | (u >> 18));
        *o++ = static_cast<char>(0x80 | ((u >> 12) & 0x3F));
        *o++ = static_cast<char>(0x80 | ((u >> 6) & 0x3F));
        *o++ = static_cast<char>(0x80 | (u & 0x3F));
      }
      *decoded = std::string_view(ref_utf8_, static_cast<size_t>(o - ref_utf8_));
    } else {
      return HandBack(j);  // an entity no DTD of ours declares: expat words the error
    }
    return Step::kProgress;
  }

  Step Cdata() {
    size_t j = begin_;
    while (true) {
      Stop stop = Advance<']'>(kTables.cdata, &j);
      if (stop == Stop::kEnd) break;
      if (stop == Stop::kInvalid) return DeliverAndHandBack(j);
      // The one special byte here is ']', perhaps the start of "]]>".
      if (j + 2 >= end_) break;
      if (b()[j + 1] == ']' && b()[j + 2] == '>') {
        if (!Deliver(begin_, j)) return Step::kStopped;
        begin_ = j + 3;
        in_cdata_ = false;
        return Step::kProgress;
      }
      ++j;
    }
    if (!Deliver(begin_, j)) return Step::kStopped;
    begin_ = j;
    return Step::kNeedMore;
  }

  bool StartsWith(size_t j, std::string_view s) const {
    return end_ - j >= s.size() && std::memcmp(buf_.data() + j, s.data(), s.size()) == 0;
  }
  // Whether the buffer ends within a prefix of `s` starting at j (more input could still make it `s`).
  bool CouldBe(size_t j, std::string_view s) const {
    size_t n = end_ - j;
    return n < s.size() && std::memcmp(buf_.data() + j, s.data(), n) == 0;
  }

  Step Markup() {
    size_t j = begin_;
    if (j + 1 >= end_) return Step::kNeedMore;
    char c = buf_[j + 1];
    if (c == '/') return EndTag();
    if (c == '!') {
      if (StartsWith(j, "<!--")) return Comment();
      if (StartsWith(j, "<![CDATA[") && !open_.empty()) {
        in_cdata_ = true;
        begin_ = j + 9;
        return Step::kProgress;
      }
      if (StartsWith(j, "<!DOCTYPE") && open_.empty() && !root_closed_ && !seen_doctype_) return Doctype();
      if (CouldBe(j, "<!--") || CouldBe(j, "<![CDATA[") || CouldBe(j, "<!DOCTYPE")) return Step::kNeedMore;
      return HandBack(j);  // an internal DTD subset, or something malformed
    }
    if (c == '?') return base_ + j == 0 ? XmlDeclaration() : HandBack(j);
    return StartTag();
  }

  // A name at j of ASCII name characters. Returns the end; `need_more` when the buffer ends inside it; 0 when
  // there is no name (or a non-ASCII one, left to expat).
  size_t Name(size_t j, bool* need_more) const {
    *need_more = false;
    if (j >= end_) {
      *need_more = true;
      return 0;
    }
    if (!kTables.name_start[b()[j]]) return 0;
    size_t k = j + 1;
    while (k < end_ && kTables.name[b()[k]]) ++k;
    if (k == end_) {
      *need_more = true;
      return 0;
    }
    if (b()[k] >= 0x80) return 0;
    return k;
  }

  Step StartTag() {
    if (root_closed_) return HandBack(begin_);  // a second root element
    bool more;
    size_t j = begin_ + 1;
    size_t name_end = Name(j, &more);
    if (more) return Step::kNeedMore;
    if (name_end == 0) return HandBack(begin_);
    attrs_.clear();
    attr_starts_.clear();
    j = name_end;
    bool empty;
    while (true) {
      size_t before = j;
      j = SkipSpace(j);
      bool space = j > before;
      if (j == end_) return Step::kNeedMore;
      if (buf_[j] == '>') {
        empty = false;
        ++j;
        break;
      }
      if (buf_[j] == '/') {
        if (j + 1 == end_) return Step::kNeedMore;
        if (buf_[j + 1] != '>') return HandBack(begin_);
        empty = true;
        j += 2;
        break;
      }
      if (!space) return HandBack(begin_);
      Step s = Attribute(&j);
      if (s != Step::kProgress) return s;
    }
    if (open_.size() + 1 > limits_.max_depth) return HandBack(begin_);  // expat words the limit

    pointers_.clear();
    for (size_t start : attr_starts_) pointers_.push_back(attrs_.data() + start);
    pointers_.push_back(nullptr);
    std::string_view name(buf_.data() + begin_ + 1, name_end - begin_ - 1);
    open_.emplace_back(name);
    handler_.StartElement(name, pointers_.data());
    // An empty element's end comes with its start, even when the start stopped the parse (as in expat).
    bool stopped = Stopped(j);
    if (empty && CloseElement(j) == Step::kStopped) return Step::kStopped;
    if (stopped) return Step::kStopped;
    begin_ = j;
    return Step::kProgress;
  }

  // One name="value" at *j; appends name and value, each NUL-terminated, to attrs_.
  Step Attribute(size_t* pos) {
    bool more;
    size_t j = *pos;
    size_t name_end = Name(j, &more);
    if (more) return Step::kNeedMore;
    if (name_end == 0) return HandBack(begin_);
    std::string_view name(buf_.data() + j, name_end - j);
    for (size_t k = 0; k < attr_starts_.size(); k += 2) {
      if (name == attrs_.data() + attr_starts_[k]) return HandBack(begin_);  // duplicate attribute
    }
    attr_starts_.push_back(attrs_.size());
    attrs_.append(name);
    attrs_.push_back('\0');
    j = name_end;
    j = SkipSpace(j);
    if (j == end_) return Step::kNeedMore;
    if (buf_[j] != '=') return HandBack(begin_);
    ++j;
    j = SkipSpace(j);
    if (j == end_) return Step::kNeedMore;
    char quote = buf_[j];
    if (quote != '"' && quote != '\'') return HandBack(begin_);
    ++j;
    attr_starts_.push_back(attrs_.size());
    size_t run = j;
    while (true) {
      Stop stop = Advance<'<', '&', '"', '\''>(kTables.attr, &j);
      if (stop == Stop::kEnd) return Step::kNeedMore;
      if (stop == Stop::kInvalid) return HandBack(begin_);
      unsigned char c = b()[j];
      if (c == static_cast<unsigned char>(quote)) break;
      if (c == '"' || c == '\'') {
        ++j;
        continue;
      }
      attrs_.append(buf_.data() + run, j - run);
      if (c == '\t' || c == '\n') {  // attribute-value normalisation (XML 1.0, 3.3.3)
        attrs_.push_back(' ');
        run = ++j;
        continue;
      }
      if (c == '&') {
        std::string_view decoded;
        size_t len = 0;
        Step s = Reference(j, &decoded, &len);
        if (s == Step::kHandBack) return HandBack(begin_);
        if (s != Step::kProgress) return s;
        attrs_.append(decoded);
        run = j = j + len;
        continue;
      }
      return HandBack(begin_);  // '<'
    }
    attrs_.append(buf_.data() + run, j - run);
    attrs_.push_back('\0');
    *pos = j + 1;
    return Step::kProgress;
  }

  Step EndTag() {
    bool more;
    size_t j = begin_ + 2;
    size_t name_end = Name(j, &more);
    if (more) return Step::kNeedMore;
    if (name_end == 0 || open_.empty()) return HandBack(begin_);
    if (std::string_view(buf_.data() + j, name_end - j) != open_.back()) return HandBack(begin_);
    j = name_end;
    j = SkipSpace(j);
    if (j == end_) return Step::kNeedMore;
    if (buf_[j] != '>') return HandBack(begin_);
    Step s = CloseElement(j + 1);
    if (s != Step::kProgress) return s;
    begin_ = j + 1;
    return Step::kProgress;
  }

  Step CloseElement(size_t event_end) {
    handler_.EndElement(open_.back());
    if (Stopped(event_end)) return Step::kStopped;
    open_.pop_back();
    if (open_.empty()) root_closed_ = true;
    return Step::kProgress;
  }

  Step Comment() {
    size_t from = begin_ + 4;
    size_t j = from;
    while (true) {
      Stop stop = Advance<'-'>(kTables.comment, &j);
      if (stop == Stop::kEnd) return Step::kNeedMore;
      if (stop == Stop::kInvalid) return HandBack(begin_);
      // The one special byte here is '-'.
      if (j + 2 >= end_) return Step::kNeedMore;
      if (b()[j + 1] != '-') {
        ++j;
        continue;
      }
      if (b()[j + 2] != '>') return HandBack(begin_);  // "--" inside a comment
      break;
    }
    handler_.Comment(std::string_view(buf_.data() + from, j - from));
    begin_ = j + 3;
    return Step::kProgress;
  }

  // <!DOCTYPE name [SYSTEM "uri" | PUBLIC "id" "uri"]> without an internal subset, as gcovr writes. The external
  // DTD is never read (nor by expat), so it changes nothing here: an entity it might declare is unknown to both,
  // and the scanner hands any entity but the five predefined ones back to expat.
  Step Doctype() {
    size_t j = begin_ + 9;
    auto space = [&] {
      size_t k = j;
      j = SkipSpace(j);
      return j > k;
    };
    // A quoted literal of printable ASCII; `pubid` limits it to XML's PubidChar set.
    auto literal = [&](bool pubid) -> Step {
      if (j == end_) return Step::kNeedMore;
      char quote = buf_[j];
      if (quote != '"' && quote != '\'') return HandBack(begin_);
      for (++j; j < end_ && buf_[j] != quote; ++j) {
        unsigned char c = b()[j];
        if (c < 0x20 || c >= 0x7F) return HandBack(begin_);
        if (pubid && !(std::isalnum(c) || std::strchr(" -'()+,./:=?;!*#@$_%", c))) return HandBack(begin_);
      }
      if (j == end_) return Step::kNeedMore;
      ++j;
      return Step::kProgress;
    };
    if (!space()) return j == end_ ? Step::kNeedMore : HandBack(begin_);
    bool more;
    size_t name_end = Name(j, &more);
    if (more) return Step::kNeedMore;
    if (name_end == 0) return HandBack(begin_);
    j = name_end;
    bool spaced = space();
    if (j == end_) return Step::kNeedMore;
    if (buf_[j] != '>') {
      if (!spaced) return HandBack(begin_);
      bool is_public = StartsWith(j, "PUBLIC");
      if (!is_public && !StartsWith(j, "SYSTEM")) {
        return CouldBe(j, "PUBLIC") || CouldBe(j, "SYSTEM") ? Step::kNeedMore : HandBack(begin_);
      }
      j += 6;
      if (!space()) return j == end_ ? Step::kNeedMore : HandBack(begin_);
      Step s = literal(is_public);
      if (s != Step::kProgress) return s;
      if (is_public) {
        if (!space()) return j == end_ ? Step::kNeedMore : HandBack(begin_);
        s = literal(false);
        if (s != Step::kProgress) return s;
      }
      space();
      if (j == end_) return Step::kNeedMore;
      if (buf_[j] != '>') return HandBack(begin_);  // an internal subset, or malformed
    }
    seen_doctype_ = true;
    begin_ = j + 1;
    return Step::kProgress;
  }

  // <?xml version="1.0" [encoding="UTF-8"] [standalone="yes|no"] ?> at the very start, nothing else.
  Step XmlDeclaration() {
    if (CouldBe(0, "<?xml ")) return Step::kNeedMore;
    if (!StartsWith(0, "<?xml") || !IsSpace(b()[5])) return HandBack(0);
    size_t close = std::string_view(buf_.data(), end_).find("?>");
    if (close == std::string_view::npos) return end_ > 200 ? HandBack(0) : Step::kNeedMore;
    std::string_view d(buf_.data() + 5, close - 5);
    auto pseudo = [&d](std::string_view name, std::string_view* value) {
      size_t i = 0;
      while (i < d.size() && IsSpace(static_cast<unsigned char>(d[i]))) ++i;
      if (i == 0 || d.substr(i, name.size()) != name) return false;
      i += name.size();
      while (i < d.size() && IsSpace(static_cast<unsigned char>(d[i]))) ++i;
      if (i == d.size() || d[i] != '=') return false;
      ++i;
      while (i < d.size() && IsSpace(static_cast<unsigned char>(d[i]))) ++i;
      if (i == d.size() || (d[i] != '"' && d[i] != '\'')) return false;
      size_t end = d.find(d[i], i + 1);
      if (end == std::string_view::npos) return false;
      *value = d.substr(i + 1, end - i - 1);
      d.remove_prefix(end + 1);
      return true;
    };
    std::string_view v;
    if (!pseudo("version", &v) || v != "1.0") return HandBack(0);
    std::string_view rest = d;
    if (pseudo("encoding", &v)) {
      if (v != "UTF-8" && v != "utf-8") return HandBack(0);
      rest = d;
    } else {
      d = rest;
    }
    if (pseudo("standalone", &v)) {
      if (v != "yes" && v != "no") return HandBack(0);
    } else {
      d = rest;
    }
    for (char c : d) {
      if (!IsSpace(static_cast<unsigned char>(c))) return HandBack(0);
    }
    begin_ = close + 2;
    return Step::kProgress;
  }

  std::istream& in_;
  XmlHandler& handler_;
  const XmlLimits& limits_;
  const size_t chunk_;
  const size_t max_carry_;
  std::vector<char> buf_;
  uint64_t base_ = 0;     // offset in the stream of buf_[0]
  size_t begin_ = 0;      // the first byte not yet consumed
  size_t end_ = 0;        // the end of what was read
  uint64_t bytes_read_ = 0;
  size_t hand_back_at_ = 0;
  uint64_t stop_at_ = 0;
  bool in_cdata_ = false;
  bool root_closed_ = false;
  bool seen_doctype_ = false;
  std::vector<std::string> open_;  // names of the open elements
  std::string attrs_;              // the current tag's names and values, each NUL-terminated
  std::vector<size_t> attr_starts_;
  std::vector<const char*> pointers_;
  char ref_utf8_[4];
};

}  // namespace

FastPathResult ScanXmlFast(std::istream& in, XmlHandler& handler, const XmlLimits& limits) {
  return Scanner(in, handler, limits).Run();
}

}  // namespace testshard::report

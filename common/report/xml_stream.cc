#include "common/report/xml_stream.h"

#include <expat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "common/report/xml_chars.h"
#include "common/report/xml_fast_path.h"
#include "common/status.h"

namespace testshard::report {
namespace {

// ---- Memory accounting: expat's memory suite has no user pointer, so the tracker of the parse running on this
// thread is found through a thread_local. Each block carries its size in a header so free() can account for it.

struct MemoryTracker {
  size_t used = 0;
  size_t limit = 0;
  bool exceeded = false;
};
thread_local MemoryTracker* t_tracker = nullptr;
constexpr size_t kHeader = alignof(std::max_align_t);

void* TrackedMalloc(size_t n) {
  MemoryTracker* t = t_tracker;
  if (t->used + n > t->limit) {
    t->exceeded = true;
    return nullptr;
  }
  auto* p = static_cast<char*>(std::malloc(n + kHeader));
  if (p == nullptr) return nullptr;
  std::memcpy(p, &n, sizeof n);
  t->used += n;
  return p + kHeader;
}

void TrackedFree(void* ptr) {
  if (ptr == nullptr) return;
  char* p = static_cast<char*>(ptr) - kHeader;
  size_t n;
  std::memcpy(&n, p, sizeof n);
  t_tracker->used -= n;
  std::free(p);
}

void* TrackedRealloc(void* ptr, size_t n) {
  if (ptr == nullptr) return TrackedMalloc(n);
  MemoryTracker* t = t_tracker;
  char* p = static_cast<char*>(ptr) - kHeader;
  size_t old;
  std::memcpy(&old, p, sizeof old);
  if (n > old && t->used + (n - old) > t->limit) {
    t->exceeded = true;
    return nullptr;
  }
  auto* q = static_cast<char*>(std::realloc(p, n + kHeader));
  if (q == nullptr) return nullptr;
  std::memcpy(q, &n, sizeof n);
  t->used = t->used - old + n;
  return q + kHeader;
}

const XML_Memory_Handling_Suite kMemorySuite = {TrackedMalloc, TrackedRealloc, TrackedFree};

// ---- UTF-8 repair, applied before expat sees the bytes.

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Whether `data` is plain ASCII text XML accepts as is (printable, tab, newline, carriage return): the common
// case, checked eight bytes at a time so clean input is handed to expat without a copy.
bool CleanAscii(std::string_view data) {
  const char* p = data.data();
  size_t n = data.size(), i = 0;
  constexpr uint64_t kHigh = 0x8080808080808080ULL, kSpace = 0x2020202020202020ULL;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w & kHigh) return false;
    if (((w - kSpace) & ~w & kHigh) == 0) continue;  // no byte below 0x20
    for (size_t k = i; k < i + 8; ++k) {
      char c = p[k];
      if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t' && c != '\r') return false;
    }
  }
  for (; i < n; ++i) {
    auto c = static_cast<unsigned char>(p[i]);
    if (c >= 0x80 || (c < 0x20 && c != '\n' && c != '\t' && c != '\r')) return false;
  }
  // Character references are checked by the slow path (a "&" at the end may start one in the next chunk).
  for (const char* amp = static_cast<const char*>(std::memchr(p, '&', n)); amp != nullptr;
       amp = static_cast<const char*>(std::memchr(amp + 1, '&', static_cast<size_t>(p + n - amp - 1)))) {
    if (amp + 1 == p + n || amp[1] == '#') return false;
  }
  return true;
}

// Streaming sanitiser: invalid UTF-8, forbidden control characters and character references to them ("&#27;", as
// Surefire writes for ANSI colour codes) become U+FFFD. A sequence cut by the chunk boundary is held back until the
// next chunk (or replaced at the end of input).
class Utf8Repair {
 public:
  bool has_carry() const { return !carry_.empty(); }

  // Appends the repaired form of `carry_ + data` to `out`.
  void Process(std::string_view data, bool final, std::string* out) {
    std::string joined;
    if (!carry_.empty()) {
      joined = carry_ + std::string(data);
      carry_.clear();
      data = joined;
    }
    auto* s = reinterpret_cast<const unsigned char*>(data.data());
    size_t n = data.size(), i = 0, run = 0;
    out->reserve(out->size() + n + 16);
    while (i < n) {
      unsigned char c = s[i];
      if ((c >= 0x20 && c < 0x80 && c != '&') || c == '\n' || c == '\t' || c == '\r') {
        ++i;
        continue;
      }
      if (c == '&') {
        if (i + 1 >= n) {
          if (final) break;
          out->append(data.data() + run, i - run);
          carry_.assign(data.substr(i));
          return;
        }
        if (s[i + 1] != '#') {
          ++i;
          continue;
        }
        size_t end = i + 2, limit = std::min(n, i + 14);
        while (end < limit && s[end] != ';') ++end;
        if (end == limit) {
          if (limit == n && !final) {
            out->append(data.data() + run, i - run);
            carry_.assign(data.substr(i));
            return;
          }
          ++i;  // not a reference expat accepts either: it reports it
          continue;
        }
        int64_t cp = CharReference(data.substr(i, end + 1 - i));
        if (cp >= 0 && !XmlCharAllowed(static_cast<uint64_t>(cp))) {
          out->append(data.data() + run, i - run);
          out->append("&#xFFFD;");
          run = i = end + 1;
        } else {
          i = end + 1;
        }
        continue;
      }
      out->append(data.data() + run, i - run);
      size_t len = LeadLength(c);
      if (len == 1) {  // a control character XML 1.0 forbids
        out->append(kReplacement);
        run = ++i;
        continue;
      }
      if (len > 1 && i + len > n && !final) {
        // Possibly a sequence cut by the chunk boundary: decide when the rest arrives. A prefix that is already
        // wrong is replaced now.
        bool prefix_ok = true;
        for (size_t k = i + 1; k < n; ++k) prefix_ok = prefix_ok && (s[k] & 0xC0) == 0x80;
        if (prefix_ok) {
          carry_.assign(data.substr(i));
          return;
        }
      }
      if (len > 1 && i + len <= n && ValidXmlSequence(s + i, len)) {
        out->append(data.data() + i, len);
        i += len;
      } else {
        out->append(kReplacement);
        ++i;
      }
      run = i;
    }
    out->append(data.data() + run, n - run);
  }

 private:
  std::string carry_;
};

// Whether the document is UTF-8 (no BOM of another encoding, no other declared encoding), so repair applies.
bool LooksUtf8(std::string_view head) {
  if (head.size() >= 2 && ((head[0] == '\xFE' && head[1] == '\xFF') || (head[0] == '\xFF' && head[1] == '\xFE'))) {
    return false;
  }
  if (head.substr(0, 3) == "\xEF\xBB\xBF") head.remove_prefix(3);
  if (head.substr(0, 5) != "<?xml") return true;
  size_t end = head.find("?>");
  std::string decl(head.substr(0, end == std::string_view::npos ? head.size() : end));
  size_t enc = decl.find("encoding");
  if (enc == std::string::npos) return true;
  size_t q = decl.find_first_of("\"'", enc);
  if (q == std::string::npos) return true;
  size_t q2 = decl.find(decl[q], q + 1);
  std::string value = absl::AsciiStrToLower(decl.substr(q + 1, q2 == std::string::npos ? std::string::npos : q2 - q - 1));
  return value == "utf-8" || value == "utf8";
}

// ---- The expat driver.

struct ParseState {
  XML_Parser parser = nullptr;
  XmlHandler* handler = nullptr;
  const XmlLimits* limits = nullptr;
  size_t depth = 0;
  bool text_on = true;
  absl::Status own_error;  // a hardening rule that stopped the parse
  // Everything before this byte was delivered by the fast path already (see ParseXml). While it is set, text
  // stays switched on, so the piece that straddles it can be cut, and is filtered by want_text in OnText.
  uint64_t skip_before = 0;

  // Whether the current markup event was delivered by the fast path: it ends at or before skip_before. (Its end,
  // not its start: expat places the end event of an empty element <a/> at the end of the tag.)
  bool Delivered() const {
    return skip_before > 0 &&
           static_cast<uint64_t>(XML_GetCurrentByteIndex(parser)) + XML_GetCurrentByteCount(parser) <= skip_before;
  }

  void StopIfHandlerAsked();
  void SyncTextHandler();
  void Refuse(absl::Status status) {
    if (own_error.ok()) own_error = std::move(status);
    XML_StopParser(parser, XML_FALSE);
  }
};

void OnText(void* data, const XML_Char* text, int len);

void ParseState::StopIfHandlerAsked() {
  if (!handler->stop_status.ok()) XML_StopParser(parser, XML_FALSE);
}

void ParseState::SyncTextHandler() {
  if (skip_before == 0 && handler->want_text != text_on) {
    text_on = handler->want_text;
    XML_SetCharacterDataHandler(parser, text_on ? OnText : nullptr);
  }
}

void OnStart(void* data, const XML_Char* name, const XML_Char** attributes) {
  auto* st = static_cast<ParseState*>(data);
  if (++st->depth > st->limits->max_depth) {
    st->Refuse(absl::ResourceExhaustedError(
        absl::StrFormat("elements nested deeper than %d levels", st->limits->max_depth)));
    return;
  }
  if (st->Delivered()) return;
  st->handler->StartElement(name, attributes);
  st->StopIfHandlerAsked();
  st->SyncTextHandler();
}

void OnEnd(void* data, const XML_Char* name) {
  auto* st = static_cast<ParseState*>(data);
  --st->depth;
  if (st->Delivered()) return;
  st->handler->EndElement(name);
  st->StopIfHandlerAsked();
  st->SyncTextHandler();
}

void OnText(void* data, const XML_Char* text, int len) {
  auto* st = static_cast<ParseState*>(data);
  std::string_view piece(text, static_cast<size_t>(len));
  if (st->skip_before > 0) {
    // Plain character data reaches this handler byte for byte (references come as pieces of their own, and the
    // fast path stops only at one), so a piece that began before skip_before is cut where the fast path stopped.
    auto at = static_cast<uint64_t>(XML_GetCurrentByteIndex(st->parser));
    if (at < st->skip_before) {
      if (at + piece.size() <= st->skip_before) return;
      piece.remove_prefix(st->skip_before - at);
    }
    if (!st->handler->want_text) return;
  }
  st->handler->Text(piece);
  st->StopIfHandlerAsked();
}

void OnComment(void* data, const XML_Char* text) {
  auto* st = static_cast<ParseState*>(data);
  if (st->Delivered()) return;
  st->handler->Comment(text);
}

void OnEntityDecl(void* data, const XML_Char* name, int, const XML_Char*, int, const XML_Char*, const XML_Char*,
                  const XML_Char*, const XML_Char*) {
  auto* st = static_cast<ParseState*>(data);
  st->Refuse(absl::InvalidArgumentError(absl::StrFormat(
      "entity declaration '%s' refused: DTD entities are not accepted (entity expansion and external entities)",
      name)));
}

int OnExternalEntity(XML_Parser parser, const XML_Char*, const XML_Char*, const XML_Char*, const XML_Char*) {
  // Never load anything from outside the document. Returning 0 makes expat fail with
  // XML_ERROR_EXTERNAL_ENTITY_HANDLING.
  return 0;
}

struct ParserDeleter {
  void operator()(XML_ParserStruct* p) const { XML_ParserFree(p); }
};

// Parses with expat from where `in` stands, delivering only what lies after `skip_before`: markup events that end
// after it, and text from it on.
absl::Status ParseWithExpat(std::istream& in, XmlHandler& handler, const XmlLimits& limits, uint64_t skip_before) {
  MemoryTracker tracker;
  tracker.limit = limits.max_parser_bytes;
  MemoryTracker* saved = t_tracker;
  t_tracker = &tracker;
  struct Restore {
    MemoryTracker* saved;
    ~Restore() { t_tracker = saved; }
  } restore{saved};

  std::unique_ptr<XML_ParserStruct, ParserDeleter> parser(XML_ParserCreate_MM(nullptr, &kMemorySuite, nullptr));
  if (!parser) return absl::ResourceExhaustedError("could not create an XML parser");
  ParseState st;
  st.parser = parser.get();
  st.handler = &handler;
  st.limits = &limits;
  st.skip_before = skip_before;
  XML_SetUserData(parser.get(), &st);
  XML_SetElementHandler(parser.get(), OnStart, OnEnd);
  st.text_on = handler.want_text || skip_before > 0;
  XML_SetCharacterDataHandler(parser.get(), st.text_on ? OnText : nullptr);
  XML_SetCommentHandler(parser.get(), OnComment);
  XML_SetEntityDeclHandler(parser.get(), OnEntityDecl);
  XML_SetExternalEntityRefHandler(parser.get(), OnExternalEntity);
  XML_SetParamEntityParsing(parser.get(), XML_PARAM_ENTITY_PARSING_NEVER);

  // Input is read straight into expat's buffer; only a chunk that needs repair is copied.
  std::string repaired;
  Utf8Repair repair;
  bool first = true, repair_on = true;
  uint64_t total = 0;
  XML_Status status = XML_STATUS_OK;
  const int chunk_bytes = static_cast<int>(limits.chunk_bytes);
  while (true) {
    char* buf = static_cast<char*>(XML_GetBuffer(parser.get(), chunk_bytes));
    if (buf == nullptr) {
      status = XML_STATUS_ERROR;
      break;
    }
    in.read(buf, chunk_bytes);
    size_t got = static_cast<size_t>(in.gcount());
    bool final = got < static_cast<size_t>(chunk_bytes);
    if (in.bad()) return absl::DataLossError(absl::StrFormat("read error after %d bytes", total));
    total += got;
    std::string_view chunk(buf, got);
    if (first) {
      repair_on = LooksUtf8(chunk);
      first = false;
    }
    if (repair_on && (repair.has_carry() || !CleanAscii(chunk))) {
      repaired.clear();
      repair.Process(chunk, final, &repaired);
      status = XML_Parse(parser.get(), repaired.data(), static_cast<int>(repaired.size()), final ? XML_TRUE : XML_FALSE);
    } else {
      status = XML_ParseBuffer(parser.get(), static_cast<int>(got), final ? XML_TRUE : XML_FALSE);
    }
    if (status != XML_STATUS_OK || final) break;
  }

  if (status == XML_STATUS_OK) return absl::OkStatus();

  std::string where = absl::StrFormat("line %d, column %d", XML_GetCurrentLineNumber(parser.get()),
                                      XML_GetCurrentColumnNumber(parser.get()));
  if (total == 0) return absl::InvalidArgumentError("empty file (0 bytes)");
  if (!st.own_error.ok()) return Annotate(st.own_error, where);
  if (!handler.stop_status.ok()) return Annotate(handler.stop_status, where);
  XML_Error code = XML_GetErrorCode(parser.get());
  if (tracker.exceeded || code == XML_ERROR_NO_MEMORY) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: a single tag, attribute or name needs more than the %d MiB the parser may use", where,
        limits.max_parser_bytes >> 20));
  }
  std::string what = XML_ErrorString(code);
  if (code == XML_ERROR_NO_ELEMENTS || code == XML_ERROR_UNCLOSED_TOKEN || code == XML_ERROR_UNCLOSED_CDATA_SECTION ||
      code == XML_ERROR_PARTIAL_CHAR) {
    what += " (the file is truncated)";
  }
  if (code == XML_ERROR_AMPLIFICATION_LIMIT_BREACH) {
    return absl::ResourceExhaustedError(absl::StrFormat("%s: %s", where, what));
  }
  return absl::InvalidArgumentError(absl::StrFormat("%s: %s", where, what));
}

// "line L, column C" of byte `offset` after `start` in `in`, counted as expat counts: lines from 1, columns from 0
// in characters.
absl::StatusOr<std::string> Where(std::istream& in, std::streampos start, uint64_t offset) {
  in.clear();
  in.seekg(start);
  uint64_t line = 1, column = 0, left = offset;
  char buf[64 << 10];
  while (left > 0 && in) {
    in.read(buf, static_cast<std::streamsize>(std::min<uint64_t>(sizeof buf, left)));
    auto got = static_cast<size_t>(in.gcount());
    for (size_t i = 0; i < got; ++i) {
      if (buf[i] == '\n') {
        ++line;
        column = 0;
      } else if ((static_cast<unsigned char>(buf[i]) & 0xC0) != 0x80) {
        ++column;
      }
    }
    left -= got;
  }
  if (left > 0) return absl::DataLossError(absl::StrFormat("the input could not be read again up to byte %d", offset));
  return absl::StrFormat("line %d, column %d", line, column);
}

}  // namespace

absl::Status ParseXml(std::istream& in, XmlHandler& handler, const XmlLimits& limits) {
  // The fast path needs to hand a document back to expat from its start, so only a stream that can seek back
  // gets it (files and strings do; a pipe goes to expat alone).
  std::streampos start = limits.fast_path ? in.tellg() : std::streampos(-1);
  if (start == std::streampos(-1)) return ParseWithExpat(in, handler, limits, 0);
  FastPathResult fast = ScanXmlFast(in, handler, limits);
  switch (fast.kind) {
    case FastPathResult::kComplete:
      return absl::OkStatus();
    case FastPathResult::kReadError:
      return absl::DataLossError(absl::StrFormat("read error after %d bytes", fast.bytes_read));
    case FastPathResult::kStopped: {
      TS_ASSIGN_OR_RETURN(std::string where, Where(in, start, fast.offset));
      return Annotate(handler.stop_status, where);
    }
    case FastPathResult::kHandBack:
      break;
  }
  // Expat reads the document again from the start, for its line and column numbers and its well-formedness
  // rules, and delivers only what the fast path did not. Rare in practice: a truncated file, an internal DTD
  // subset, another encoding, bytes the repair changes.
  in.clear();
  in.seekg(start);
  if (!in) return absl::DataLossError("the input could not be read again from its start");
  return ParseWithExpat(in, handler, limits, fast.offset);
}

std::string SniffRootElement(std::string_view head) {
  size_t i = 0;
  if (head.substr(0, 3) == "\xEF\xBB\xBF") i = 3;
  while (i < head.size()) {
    char c = head[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
      continue;
    }
    if (c != '<') return "";
    std::string_view rest = head.substr(i);
    size_t end;
    if (rest.substr(0, 4) == "<!--") {
      end = rest.find("-->");
      if (end == std::string_view::npos) return "";
      i += end + 3;
    } else if (rest.substr(0, 2) == "<?") {
      end = rest.find("?>");
      if (end == std::string_view::npos) return "";
      i += end + 2;
    } else if (rest.substr(0, 2) == "<!") {
      // DOCTYPE; an internal subset ends with "]>".
      size_t bracket = rest.find('['), close = rest.find('>');
      if (bracket != std::string_view::npos && bracket < close) close = rest.find("]>", bracket);
      if (close == std::string_view::npos) return "";
      i += close + 1;
    } else {
      size_t start = 1, stop = 1;
      while (stop < rest.size() && !std::strchr(" \t\r\n/>", rest[stop])) ++stop;
      return std::string(rest.substr(start, stop - start));
    }
  }
  return "";
}

absl::Status WriteThroughTemp(const std::string& path, const std::function<absl::Status(std::ostream&)>& write) {
  std::string tmp = path + ".testshard-tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::UnavailableError(absl::StrFormat("%s: cannot create: %s", tmp, std::strerror(errno)));
    absl::Status s = write(out);
    out.close();
    if (s.ok() && !out) s = absl::DataLossError("write failed");
    if (!s.ok()) {
      std::remove(tmp.c_str());
      return Annotate(s, path);
    }
  }
  // The old report goes first: ext4 (auto_da_alloc) makes a rename over an existing file allocate and start
  // writing back the new file's blocks inside rename(), 5-6 ms for a 100,000-test report, a twentieth of the
  // merge. That heuristic guards against a zero-length file after a power cut, which a regenerable report does not
  // need; what we keep is that no reader ever sees a half-written report. unlink, not remove: a directory stays.
  unlink(path.c_str());
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s =
        absl::UnavailableError(absl::StrFormat("%s: cannot rename into place: %s", path, std::strerror(errno)));
    std::remove(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

}  // namespace testshard::report

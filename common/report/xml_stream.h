// A hardened, streaming XML reader (expat, behind a fast path) for the report inputs: JUnit and Cobertura files
// written by tools we do not control, possibly truncated by a killed process, possibly hostile.
#ifndef TESTSHARD_COMMON_REPORT_XML_STREAM_H_
#define TESTSHARD_COMMON_REPORT_XML_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <istream>
#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace testshard::report {

// Limits that keep a hostile or broken input from exhausting memory or stack.
struct XmlLimits {
  // Elements nested deeper than this stop the parse (real reports nest fewer than 10 levels).
  size_t max_depth = 256;
  // Bytes the parser itself may hold: the largest single tag, attribute value or name must fit in this. Text
  // content does not count, it is handed over in pieces.
  size_t max_parser_bytes = 64u << 20;
  // Bytes read from the input per parse step.
  size_t chunk_bytes = 256u << 10;
  // Whether plain documents go through the fast scanner first (xml_fast_path.h); off only to compare with expat.
  bool fast_path = true;
};

// Receives the document as it is parsed. Attribute arrays are expat's: name, value, name, value, ..., nullptr.
// Text may arrive in several pieces for one text node; CDATA sections arrive as plain text.
class XmlHandler {
 public:
  virtual ~XmlHandler() = default;
  virtual void StartElement(std::string_view name, const char** attributes) = 0;
  virtual void EndElement(std::string_view name) = 0;
  virtual void Text(std::string_view text) = 0;
  virtual void Comment(std::string_view text) {}
  // Set by the handler to stop the parse with an error of its own (e.g. "not a JUnit file").
  absl::Status stop_status;
  // Whether Text() is wanted from here on; a handler that clears it between elements it reads text of spares the
  // parser millions of whitespace callbacks. Looked at after every StartElement and EndElement.
  bool want_text = true;
};

// Parses `in` to the end, calling `handler`. Returns OK for a complete, well-formed document. Otherwise
// kInvalidArgument (malformed, truncated, empty, forbidden construct) or kResourceExhausted (a limit was hit),
// with a message "line L, column C: what" that does not name the input (the caller knows it). Everything the
// handler received before the error stays valid: callers use it to keep what was complete.
//
// Hardening: DTDs are never loaded and any entity declaration stops the parse (no billion laughs, no external
// entities); nesting depth and parser memory are capped. Invalid UTF-8 and control characters XML 1.0 forbids
// are replaced by U+FFFD before parsing, because real producers (GoogleTest, Bazel) pass them through and one bad
// byte must not cost a whole report. Documents declaring another encoding, or UTF-16, are passed through as is.
//
// Speed: expat parses about 100 MB/s on our machines, most of a merge. A seekable stream is first scanned by a
// strict fast path that handles the plain documents producers write; at the first thing it does not handle it
// hands over to expat, which re-reads from the start and delivers only the events not yet delivered. Results,
// errors and messages are expat's either way (XmlFastPathTest compares the two on thousands of documents).
//
// Thread-safe: keeps no state between calls.
absl::Status ParseXml(std::istream& in, XmlHandler& handler, const XmlLimits& limits = {});

// Reads up to `max_bytes` from the start of `in` and returns the name of the first element, skipping an XML
// declaration, comments, processing instructions, a DOCTYPE and whitespace; "" when there is none.
std::string SniffRootElement(std::string_view head);

// Writes `path` through a temporary file beside it, renamed into place only once `write` succeeded and the stream
// is flushed: a reader never sees a half-written report, and a failed write leaves the old file.
absl::Status WriteThroughTemp(const std::string& path, const std::function<absl::Status(std::ostream&)>& write);

}  // namespace testshard::report

#endif  // TESTSHARD_COMMON_REPORT_XML_STREAM_H_

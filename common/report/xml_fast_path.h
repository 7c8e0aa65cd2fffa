// The fast path of ParseXml (internal to common/report): a scanner for the plain, well-formed UTF-8 documents
// that report producers write almost always, several times faster than expat, which stays the parser of record.
#ifndef TESTSHARD_COMMON_REPORT_XML_FAST_PATH_H_
#define TESTSHARD_COMMON_REPORT_XML_FAST_PATH_H_

#include <cstdint>
#include <istream>

#include "common/report/xml_stream.h"

namespace testshard::report {

struct FastPathResult {
  enum Kind {
    kComplete,     // the whole document was well-formed and every event delivered
    kStopped,      // the handler set stop_status in the event that ended at `offset`
    kHandBack,     // events before `offset` were delivered, none at or after it; expat must take it from there
    kReadError,    // the stream failed
  };
  Kind kind = kHandBack;
  uint64_t offset = 0;      // bytes from where the stream stood when called
  uint64_t bytes_read = 0;
};

// Scans `in` as ParseXml would, delivering the same events to `handler` (text possibly cut into other pieces),
// as long as the document keeps to what the scanner accepts: UTF-8 without a BOM; an XML declaration of version
// 1.0 and encoding UTF-8, if any; ASCII names; attribute values, text, CDATA and comments of valid XML characters
// without carriage returns; the five predefined entities and references to allowed characters; nesting within
// limits.max_depth; no tag or comment larger than min(limits.max_parser_bytes, 1 MiB). Everything else —
// a DOCTYPE, a processing instruction, anything malformed or truncated, anything the UTF-8 repair would change —
// is handed back at the byte where it starts, before any of it is delivered. The scanner never accepts what
// expat would refuse, so a document it completes is one expat would have completed with the same events.
FastPathResult ScanXmlFast(std::istream& in, XmlHandler& handler, const XmlLimits& limits);

}  // namespace testshard::report

#endif  // TESTSHARD_COMMON_REPORT_XML_FAST_PATH_H_

// Character rules of XML 1.0 shared by the UTF-8 repair and the fast scanner (internal to common/report).
#ifndef TESTSHARD_COMMON_REPORT_XML_CHARS_H_
#define TESTSHARD_COMMON_REPORT_XML_CHARS_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace testshard::report {

// Length of the UTF-8 sequence led by `c`, or 0 for a byte that cannot lead one.
inline size_t LeadLength(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Validates the sequence of `len` bytes at `s` (len from LeadLength) and returns whether XML may contain it.
inline bool ValidXmlSequence(const unsigned char* s, size_t len) {
  uint32_t cp = s[0] & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) {
    if ((s[k] & 0xC0) != 0x80) return false;
    cp = (cp << 6) | (s[k] & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
  return cp != 0xFFFE && cp != 0xFFFF;
}

inline bool XmlCharAllowed(uint64_t cp) {
  return cp == 0x9 || cp == 0xA || cp == 0xD || (cp >= 0x20 && cp <= 0xD7FF) || (cp >= 0xE000 && cp <= 0xFFFD) ||
         (cp >= 0x10000 && cp <= 0x10FFFF);
}

// The code point of the character reference `ref` ("&#...;" or "&#x...;"), or -1 when it is not one.
inline int64_t CharReference(std::string_view ref) {
  std::string_view digits = ref.substr(2, ref.size() - 3);
  int base = 10;
  if (!digits.empty() && digits[0] == 'x') {
    base = 16;
    digits.remove_prefix(1);
  }
  if (digits.empty() || digits.size() > 8) return -1;
  int64_t v = 0;
  for (char c : digits) {
    int d = c >= '0' && c <= '9' ? c - '0' : base == 16 && c >= 'a' && c <= 'f' ? c - 'a' + 10
            : base == 16 && c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * base + d;
  }
  return v;
}

}  // namespace testshard::report

#endif  // TESTSHARD_COMMON_REPORT_XML_CHARS_H_

// Skipping runs of plain bytes sixteen at a time, for the XML scanner and the report writer: most of what both
// look at is short runs of printable ASCII (names, attribute values, tracebacks) between the few bytes that need a
// decision.
#ifndef TESTSHARD_COMMON_ASCII_SCAN_H_
#define TESTSHARD_COMMON_ASCII_SCAN_H_

#include <cstddef>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace testshard {

// The index of the first byte from `i` that is below 0x20, from 0x80 up, or one of kStops, looking at whole
// blocks of sixteen only: it may stop up to fifteen bytes before `n` without having found one.
template <char... kStops>
size_t SkipPrintable(const unsigned char* p, size_t i, size_t n) {
#if defined(__SSE2__)
  const __m128i space = _mm_set1_epi8(0x20);
  for (; i + 16 <= n; i += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    __m128i stop = _mm_cmplt_epi8(v, space);  // signed: below 0x20, and 0x80 up
    ((stop = _mm_or_si128(stop, _mm_cmpeq_epi8(v, _mm_set1_epi8(kStops)))), ...);
    int mask = _mm_movemask_epi8(stop);
    if (mask != 0) return i + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
  }
#endif
  return i;
}

// Advances `i` over the bytes `plain` accepts. `plain` must accept every printable ASCII byte other than kStops
// and none of kStops; it decides the rest (tab, newline) itself.
template <char... kStops, typename Plain>
size_t SkipPlain(const unsigned char* p, size_t i, size_t n, const Plain& plain) {
  while (true) {
    i = SkipPrintable<kStops...>(p, i, n);
    if (i + 16 <= n && plain(p[i])) {  // e.g. a newline inside text: on with the next block
      ++i;
      continue;
    }
    while (i < n && plain(p[i])) ++i;
    return i;
  }
}

}  // namespace testshard

#endif  // TESTSHARD_COMMON_ASCII_SCAN_H_

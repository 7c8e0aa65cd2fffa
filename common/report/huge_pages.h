// An allocator for the merge's large arrays that asks for transparent huge pages.
//
// Why: on virtual machines a page fault can cost 10 µs (measured on the CI machines: 21 ms to touch 8 MiB in
// 4 KiB pages, 0.6 ms in 2 MiB ones), and a 100,000-test JUnit merge touches a few thousand fresh pages for its
// index. Where the kernel's THP mode is "madvise" (Debian's default) only memory that asks gets huge pages; with
// "always" this changes nothing, with "never" it falls back to ordinary pages. Only for arrays that are filled:
// a huge page is zeroed whole on first touch (1-2 ms on some VMs), so a buffer mostly left empty is cheaper in
// ordinary pages.
#ifndef TESTSHARD_COMMON_REPORT_HUGE_PAGES_H_
#define TESTSHARD_COMMON_REPORT_HUGE_PAGES_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

namespace testshard::report {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// Small arrays come from the ordinary heap; from 256 KiB up, a private mapping aligned to 2 MiB and advised
// MADV_HUGEPAGE, unmapped when freed.
template <typename T>
class HugePageAllocator {
 public:
  using value_type = T;
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) {}  // NOLINT: allocators convert implicitly

  T* allocate(size_t n) {
    size_t bytes = n * sizeof(T);
    if (bytes < kThresholdBytes) return std::allocator<T>().allocate(n);
    size_t size = RoundUp(bytes);
    // Over-map by one huge page and trim both ends, so the kept part starts on a 2 MiB boundary.
    void* raw = mmap(nullptr, size + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    auto start = reinterpret_cast<uintptr_t>(raw);
    uintptr_t aligned = (start + kHugePageBytes - 1) & ~(uintptr_t{kHugePageBytes} - 1);
    if (aligned > start) munmap(raw, aligned - start);
    uintptr_t end = start + size + kHugePageBytes;
    if (end > aligned + size) munmap(reinterpret_cast<void*>(aligned + size), end - (aligned + size));
    madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);  // advice only: failure is harmless
    return reinterpret_cast<T*>(aligned);
  }
  void deallocate(T* p, size_t n) {
    size_t bytes = n * sizeof(T);
    if (bytes < kThresholdBytes) {
      std::allocator<T>().deallocate(p, n);
      return;
    }
    munmap(p, RoundUp(bytes));
  }

  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const HugePageAllocator<U>&) const { return false; }

 private:
  static constexpr size_t kThresholdBytes = size_t{256} << 10;
  static size_t RoundUp(size_t bytes) { return (bytes + kHugePageBytes - 1) & ~(kHugePageBytes - 1); }
};

template <typename T>
using HugeVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace testshard::report

#endif  // TESTSHARD_COMMON_REPORT_HUGE_PAGES_H_

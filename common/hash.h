// A stable content hash for naming things (templates, runs): the same input gives the same name on every machine
// and every run. Not for security.
#ifndef TESTSHARD_COMMON_HASH_H_
#define TESTSHARD_COMMON_HASH_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"

namespace testshard {

// Two FNV-1a lanes with different offsets: 128 bits, so accidental collisions between templates do not happen.
class StableHasher {
 public:
  // Adds `data` with its length, so ("ab","c") and ("a","bc") differ.
  StableHasher& Add(std::string_view data) {
    uint64_t n = data.size();
    Mix(std::string_view(reinterpret_cast<const char*>(&n), sizeof n));
    Mix(data);
    return *this;
  }
  std::string Hex() const { return absl::StrFormat("%016x%016x", a_, b_); }

 private:
  void Mix(std::string_view data) {
    for (unsigned char c : data) {
      a_ = (a_ ^ c) * 0x100000001b3ULL;
      b_ = (b_ ^ c) * 0x100000001b3ULL;
      b_ ^= b_ >> 29;
    }
  }
  uint64_t a_ = 0xcbf29ce484222325ULL;
  uint64_t b_ = 0x84222325cbf29ce4ULL;
};

}  // namespace testshard

#endif  // TESTSHARD_COMMON_HASH_H_

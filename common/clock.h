// Time as a seam: production code asks a Clock, tests drive a FakeClock.
#ifndef TESTSHARD_COMMON_CLOCK_H_
#define TESTSHARD_COMMON_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace testshard {

// Thread-safe: may be called from any thread.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  // One shared instance; it has no state.
  static Clock* Get() {
    static RealClock clock;
    return &clock;
  }
};

}  // namespace testshard

#endif  // TESTSHARD_COMMON_CLOCK_H_

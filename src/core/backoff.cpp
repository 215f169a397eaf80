#include "core/backoff.hpp"

#include <algorithm>

namespace evproc::core {

int64_t BackoffDelay(int failed_attempts, int64_t base_us, int64_t cap_us, double jitter) {
  base_us = std::max<int64_t>(base_us, 1);
  cap_us = std::max(cap_us, base_us);
  int64_t delay = base_us;
  // Doubling stops at the cap, so the shift never overflows.
  for (int i = 1; i < failed_attempts && delay < cap_us; ++i) delay = std::min(delay * 2, cap_us);
  jitter = std::clamp(jitter, 0.0, 1.0);
  int64_t half = delay / 2;
  return delay - half + static_cast<int64_t>(static_cast<double>(half) * jitter);
}

}  // namespace evproc::core

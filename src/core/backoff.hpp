// Retry timing: pure C++, unit-tested.
#pragma once

#include <cstdint>

namespace evproc::core {

// Delay before the next attempt after `failed_attempts` failures (>= 1): exponential
// from base, capped, with "equal jitter" — half fixed, half random (jitter in [0, 1)) —
// so that keys failing together do not retry in lockstep. Microseconds.
int64_t BackoffDelay(int failed_attempts, int64_t base_us, int64_t cap_us, double jitter);

}  // namespace evproc::core

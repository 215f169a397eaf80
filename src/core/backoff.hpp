// Retry timing and the circuit breaker's memory: pure C++, unit-tested.
#pragma once

#include <array>
#include <cstdint>

namespace evproc::core {

// Delay before the next attempt after `failed_attempts` failures (>= 1): exponential
// from base, capped, with "equal jitter" — half fixed, half random (jitter in [0, 1)) —
// so that keys failing together do not retry in lockstep. Microseconds.
int64_t BackoffDelay(int failed_attempts, int64_t base_us, int64_t cap_us, double jitter);

// Attempts and failures over the last kSeconds seconds, in one-second buckets.
class FailureWindow {
 public:
  static constexpr int kSeconds = 60;

  void Record(int64_t now_seconds, int64_t attempts, int64_t failures);
  // True when at least min_attempts attempts were made in the window and more than
  // budget (a fraction) of them failed.
  [[nodiscard]] bool Exceeded(int64_t now_seconds, double budget, int64_t min_attempts) const;
  [[nodiscard]] int64_t Attempts(int64_t now_seconds) const;
  [[nodiscard]] int64_t Failures(int64_t now_seconds) const;
  void Reset();

 private:
  struct Bucket {
    int64_t second = -1;
    int64_t attempts = 0;
    int64_t failures = 0;
  };
  // The total of one bucket field over the window ending at now_seconds.
  [[nodiscard]] int64_t Sum(int64_t now_seconds, int64_t Bucket::*field) const;

  std::array<Bucket, kSeconds> buckets_{};
};

}  // namespace evproc::core

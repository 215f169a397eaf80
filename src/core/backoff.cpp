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

void FailureWindow::Record(int64_t now_seconds, int64_t attempts, int64_t failures) {
  Bucket &bucket = buckets_[static_cast<size_t>(now_seconds % kSeconds)];
  if (bucket.second != now_seconds) bucket = Bucket{now_seconds, 0, 0};
  bucket.attempts += attempts;
  bucket.failures += failures;
}

int64_t FailureWindow::Sum(int64_t now_seconds, int64_t Bucket::*field) const {
  int64_t total = 0;
  for (const Bucket &bucket : buckets_) {
    if (bucket.second > now_seconds - kSeconds && bucket.second <= now_seconds)
      total += bucket.*field;
  }
  return total;
}

int64_t FailureWindow::Attempts(int64_t now_seconds) const {
  return Sum(now_seconds, &Bucket::attempts);
}

int64_t FailureWindow::Failures(int64_t now_seconds) const {
  return Sum(now_seconds, &Bucket::failures);
}

bool FailureWindow::Exceeded(int64_t now_seconds, double budget, int64_t min_attempts) const {
  int64_t attempts = Attempts(now_seconds);
  if (attempts < min_attempts || attempts == 0) return false;
  return static_cast<double>(Failures(now_seconds)) > budget * static_cast<double>(attempts);
}

void FailureWindow::Reset() { buckets_.fill(Bucket{}); }

}  // namespace evproc::core

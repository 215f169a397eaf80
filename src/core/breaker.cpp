#include "core/breaker.hpp"

#include <algorithm>

namespace evproc::core {

BreakerCounts SumRecent(const BreakerSlice *slices, int count, uint64_t now_epoch, int window) {
  BreakerCounts total;
  for (int i = 0; i < count; ++i) {
    const BreakerSlice &slice = slices[i];
    if (slice.epoch > now_epoch || slice.epoch + static_cast<uint64_t>(window) <= now_epoch)
      continue;
    total.attempts += slice.counts.attempts;
    total.failures += slice.counts.failures;
  }
  return total;
}

BreakerCounts Since(BreakerCounts total, BreakerCounts at_mark) {
  return BreakerCounts{std::max<int64_t>(total.attempts - at_mark.attempts, 0),
                       std::max<int64_t>(total.failures - at_mark.failures, 0)};
}

BreakerCounts Judged(BreakerCounts recent, BreakerCounts since_trip) {
  return BreakerCounts{std::min(recent.attempts, since_trip.attempts),
                       std::min(recent.failures, since_trip.failures)};
}

bool BreakerTrips(BreakerCounts judged, double budget, int64_t min_attempts) {
  if (judged.attempts < min_attempts || judged.attempts == 0) return false;
  return static_cast<double>(judged.failures) > budget * static_cast<double>(judged.attempts);
}

}  // namespace evproc::core

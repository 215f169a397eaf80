// The circuit breaker's judgement: pure C++, unit-tested. The counts come from the
// shared per-subscription metrics (src/metrics.hpp), so the breaker judges the
// subscription's failures across all workers, not one worker's share of them.
#pragma once

#include <cstdint>

namespace evproc::core {

// Deliveries attempted and those that failed.
struct BreakerCounts {
  int64_t attempts = 0;
  int64_t failures = 0;
};

// One slice of a subscription's ring of per-period counts: the period (epoch) it covers.
struct BreakerSlice {
  uint64_t epoch = 0;
  BreakerCounts counts;
};

// The counts of the slices whose epoch is one of the last `window` epochs up to
// now_epoch (older slices, waiting to be reused, are left out).
BreakerCounts SumRecent(const BreakerSlice *slices, int count, uint64_t now_epoch, int window);

// a - b, each field at least 0 (a total that went back: a slot reused).
BreakerCounts Since(BreakerCounts total, BreakerCounts at_mark);

// What the breaker judges: the attempts and failures of the recent window that came
// after it last tripped. Those since the trip are a subset of the window's when the trip
// lies inside the window, and a superset when it lies before, so each field is the
// smaller of the two.
BreakerCounts Judged(BreakerCounts recent, BreakerCounts since_trip);

// True when at least min_attempts attempts (and at least one) were made and more than
// budget (a fraction) of them failed.
bool BreakerTrips(BreakerCounts judged, double budget, int64_t min_attempts);

}  // namespace evproc::core

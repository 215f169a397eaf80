#include "delivery_breaker.hpp"

#include <unordered_map>

#include "core/backoff.hpp"
#include "delivery_outcome.hpp"
#include "delivery_plans.hpp"
#include "error_boundary.hpp"

extern "C" {
#include "utils/timestamp.h"
}

namespace evproc::delivery {
namespace {

using pg::CallPostgres;

// Each worker judges the failures it saw over the last minute.
std::unordered_map<int32, core::FailureWindow> failure_windows;

}  // namespace

void JudgeBreaker(const Unit &unit, const Tally &tally, int64 attempted) {
  if (attempted == 0) return;
  core::FailureWindow &window = failure_windows[unit.subscription_id];
  int64 now =
      static_cast<int64>(CallPostgres([] { return GetCurrentTimestamp(); }) / USECS_PER_SEC);
  window.Record(now, attempted, tally.failed);
  if (!window.Exceeded(now, unit.failure_budget, unit.breaker_min_attempts)) return;
  int64 seen = window.Attempts(now);
  int64 failed = window.Failures(now);
  window.Reset();
  CallPostgres([&] {
    const char *reason = psprintf(
        "circuit breaker: %lld of %lld deliveries failed in the last minute (budget %.0f%%); "
        "cooling down",
        static_cast<long long>(failed), static_cast<long long>(seen), unit.failure_budget * 100);
    SetReason(plans.trip, unit, reason);
    ereport(WARNING, (errmsg("evproc: subscription \"%s\" paused: %s", unit.name, reason)));
  });
}

}  // namespace evproc::delivery

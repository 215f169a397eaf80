#include "delivery_breaker.hpp"

#include "core/breaker.hpp"
#include "delivery_outcome.hpp"
#include "delivery_plans.hpp"
#include "error_boundary.hpp"
#include "metrics.hpp"
#include "metrics_local.hpp"

namespace evproc::delivery {
namespace {

using pg::CallPostgres;

// The subscription's counts as the breaker judges them, and its totals so far: what
// every worker committed (the shared per-subscription counters, docs/design.md) plus
// what this transaction has not committed yet. Without a shared slot (a subscription
// registered within the last second, or no shared memory), this transaction's only.
struct Judgement {
  core::BreakerCounts judged;
  core::BreakerCounts totals;
};

Judgement CountsOf(int32 subscription_id) {
  Judgement judgement;
  metrics::BreakerCountsOf shared{};
  core::BreakerCounts uncommitted;
  uint64 now_epoch = 0;
  bool has_slot = CallPostgres([&] {
    metrics::UncommittedAttempts(subscription_id, &uncommitted.attempts, &uncommitted.failures);
    now_epoch = metrics::CurrentEpoch();
    return metrics::ReadBreakerCounts(subscription_id, &shared);
  });
  if (!has_slot) {
    judgement.judged = uncommitted;
    judgement.totals = uncommitted;
    return judgement;
  }
  core::BreakerCounts recent =
      core::SumRecent(shared.slices, metrics::kSlices, now_epoch, metrics::kSlices);
  recent.attempts += uncommitted.attempts;
  recent.failures += uncommitted.failures;
  judgement.totals = core::BreakerCounts{shared.totals.attempts + uncommitted.attempts,
                                         shared.totals.failures + uncommitted.failures};
  judgement.judged = core::Judged(recent, core::Since(judgement.totals, shared.at_trip));
  return judgement;
}

}  // namespace

void JudgeBreaker(const Unit &unit, int64 attempted) {
  if (attempted == 0) return;
  Judgement judgement = CountsOf(unit.subscription_id);
  const core::BreakerCounts &judged = judgement.judged;
  if (!core::BreakerTrips(judged, unit.failure_budget, unit.breaker_min_attempts)) return;
  // What was judged is forgotten: after its cool-down the subscription starts afresh.
  CallPostgres([&] { metrics::MarkBreakerTripped(unit.subscription_id, judgement.totals); });
  CallPostgres([&] {
    const char *reason = psprintf(
        "circuit breaker: %lld of %lld deliveries failed in the last minute (budget %.0f%%); "
        "cooling down",
        static_cast<long long>(judged.failures), static_cast<long long>(judged.attempts),
        unit.failure_budget * 100);
    SetReason(plans.trip, unit, reason);
    ereport(WARNING, (errmsg("evproc: subscription \"%s\" paused: %s", unit.name, reason)));
  });
}

}  // namespace evproc::delivery

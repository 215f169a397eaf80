// Units marked ready (docs/design.md "Claiming a unit"): which claim a batch runs, what
// its advance writes into progress.ready, and the look at the unit's slot after the
// batch's commit that keeps a commit stamped meanwhile from being missed. PostgreSQL
// code (inside SPI) unless said otherwise.
#pragma once

#include "delivery_plans.hpp"
#include "delivery_types.hpp"

namespace evproc::delivery {

// Whether batches may clear progress.ready: only batches in their own transaction, which
// look at the slot again after their commit (RunOneBatch), not evproc.deliver_batch()'s
// inside the caller's transaction.
void SetReadyMayClear(bool may_clear);

// The claim to run: the ready units' where the extension has them and the launcher
// stamps this database's slots, else the claim that looks at every unit.
SPIPlanPtr ClaimPlan();

// Claims a unit named by a ready hint (core/ready_hints.hpp) by its key, newest row
// version first (kClaimHintedUnit). kClaimed: its row is SPI's result. kReadAll: run the
// claim that reads every ready unit (ClaimPlan) instead: every kFullClaimEveryMs (due
// retries, units made ready without a hint, a hint dropped because maintenance or an
// operator held its unit), while hints were lost to a full ring, and where units are not
// marked ready at all, and once a retry this worker waited for fell due. kNone: no hint
// named a unit still ready and free, and the full claim ran less than kFullClaimEveryMs
// ago: nothing to claim now.
enum class HintedClaim { kClaimed, kReadAll, kNone };
HintedClaim ClaimHintedUnit();
// What the claim of every ready unit found after kReadAll.
void ReadAllFound(bool found);
// When the earliest retry falls due or breaker closes (NextDue, 0: none), as a worker
// that found nothing to claim heard of it: once it passed, a claim with no hints left
// reads every ready unit.
void NoteNextDue(TimestampTz due);

// Whether a unit that moved to `at` may still have work: a window in progress, or a
// stamp of its slot newer than its tick. Sets *isnull (keep ready as it is) where
// batches may not clear it. Remembers a unit it cleared, or left ready, for
// ReadyAfterCommit.
bool StillReady(const Unit &unit, const Position &at, bool *isnull);

// Plain C++ over PostgreSQL calls (not inside SPI), after the batch's commit: a unit the
// batch left ready is hinted (the next claim takes it by key). If the batch cleared its
// unit and the unit's slot got a newer stamp since the batch looked, the launcher may
// have skipped the unit while the batch held it: the unit is marked ready again, in a
// transaction of its own, and hinted.
void ReadyAfterCommit();

}  // namespace evproc::delivery

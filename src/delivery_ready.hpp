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

// Whether a unit that moved to `at` may still have work: a window in progress, or a
// stamp of its slot newer than its tick. Sets *isnull (keep ready as it is) where
// batches may not clear it. Remembers a unit it cleared for ReadyAfterCommit.
bool StillReady(const Unit &unit, const Position &at, bool *isnull);

// Plain C++ over PostgreSQL calls (not inside SPI), after the batch's commit: if the
// batch cleared its unit and the unit's slot got a newer stamp since the batch looked,
// the launcher may have skipped the unit while the batch held it: the unit is marked
// ready again, in a transaction of its own.
void ReadyAfterCommit();

}  // namespace evproc::delivery

// Writing a batch's outcome (delivery step 4), in the batch's transaction: delivered
// retries leave the line, failed events are parked with a backoff (or dead-lettered
// after max_attempts), events behind a failed key wait, heads whose key moved on are
// promoted, the unit (or replay) advances, and the counts go to the shared metrics at
// commit. C++ code.
#pragma once

#include "delivery_types.hpp"

extern "C" {
#include "executor/spi.h"
}

namespace evproc::delivery {

// Records the outcome of a live unit's batch and moves the unit to `at`.
Tally WriteOutcome(const Unit &unit, const ItemList &items, const Position &at);

// Records a replay's outcome: its failed events join the retry lines of their
// partitions, whose units must look at them; the replay's cursor moves to `at`.
Tally WriteReplayOutcome(const Unit &unit, const ItemList &items, const ReplayPosition &at);

// PostgreSQL code: sets the subscription's paused_reason with `plan` (plans.pause, or
// plans.trip for the breaker).
void SetReason(SPIPlanPtr plan, const Unit &unit, const char *reason);

}  // namespace evproc::delivery

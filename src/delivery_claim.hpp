// Claiming work (delivery step 1): a unit (a subscription's partition) or a running
// replay with something to do, locked for this batch; when there is none, when the
// next retry or breaker end falls due. PostgreSQL code, inside SPI.
#pragma once

#include "delivery_types.hpp"

namespace evproc::delivery {

// Claims a live unit (or, with `replay`, a running replay) and fills *unit with it and
// its subscription (strings in `context`). False when there is none.
bool ClaimUnit(Unit *unit, bool replay, MemoryContext context);

// Fills *unit from row `row` of a claim's result (the columns of kClaimUnit, and of
// kClaimReplay with `replay`): the readers of pull subscriptions claim with statements of
// their own that return the same columns (lease_sql.hpp).
void UnitFromRow(Unit *unit, uint64 row, bool replay, MemoryContext context);

// When idle: the earliest moment a retry falls due or a breaker closes (0: none).
TimestampTz NextDue();

// Why the unit's handler cannot run at all (dropped, owner gone, superuser, no EXECUTE,
// no 'subscribe' on the topic), or nullptr.
const char *HandlerProblem(const Unit &unit);

}  // namespace evproc::delivery

// Claiming work (delivery step 1): a unit (a subscription's partition) or a running
// replay with something to do, locked for this batch; when there is none, when the
// next retry or breaker end falls due. PostgreSQL code, inside SPI.
#pragma once

#include "delivery_types.hpp"

extern "C" {
#include "utils/array.h"
}

namespace evproc::delivery {

// Claims a live unit (or, with `replay`, a running replay) and fills *unit with it and
// its subscription (strings in `context`). False when there is none.
bool ClaimUnit(Unit *unit, bool replay, MemoryContext context);

// Fills *unit from row `row` of a claim's result (the columns of kClaimUnit, and of
// kClaimReplay with `replay`): the readers of pull subscriptions claim with statements of
// their own that return the same columns (lease_sql.hpp).
void UnitFromRow(Unit *unit, uint64 row, bool replay, MemoryContext context);

// What the subscription's owner may do: kNoExecute concerns handler_fn when it exists;
// kNoSubscribe, a member of none of `topic_roles` (the topic's owner and 'subscribe'
// grantees: evproc.may_subscribe's rule). From the catalog caches, in the claim's
// transaction.
OwnerStatus OwnerState(Oid owner, Oid handler_fn, ArrayType *topic_roles);

// When idle: the earliest moment a retry falls due or a breaker closes (0: none).
TimestampTz NextDue();

// Why the unit's handler cannot run at all (dropped, replaced by another function of
// its name, owner gone, superuser, no EXECUTE, no 'subscribe' on the topic), or nullptr.
const char *HandlerProblem(const Unit &unit);
// What is wrong with the unit's owner (owner_status), in words; nullptr when kOk.
const char *OwnerStatusText(const Unit &unit);

// A subscription not bound to its handler's oid in this extension (restored with
// pg_dump: the functions' oids changed; or made before 0.3.0) is bound to the function
// its name resolves to now. Once, at its first batch: from then on a function dropped
// and created again under the name pauses it (HandlerProblem).
void BindHandlerIfNeeded(const Unit &unit);

// The search_path the unit's handler runs with: the one a session of the subscription's
// owner would get in this database (its ALTER ROLE / ALTER DATABASE settings, in
// PostgreSQL's order), else the server's (ServerSearchPath, handler_call.hpp). In
// `context`.
const char *OwnerSearchPath(const Unit &unit, MemoryContext context);

}  // namespace evproc::delivery

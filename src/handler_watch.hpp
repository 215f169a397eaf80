// The watchdog of handler calls (issue 12.1): a handler cannot outlive its timeout.
//
// The timeout (statement_timeout's machinery, handler_call.cpp) cancels a handler, and a
// handler that caught the cancel fails anyway when it returns. One that never returns
// (a loop that catches query_canceled) is stopped here: past its handler_timeout plus
// evproc.handler_grace its worker terminates itself: the same as a SIGTERM, a FATAL no
// handler can catch, which rolls the batch back. The launcher starts the worker again.
// (A watchdog in the worker itself, its own timer, rather than in the launcher: the
// launcher only ticks and supervises, and must not depend on a worker's timing; the
// timer's signal reaches a handler wherever PostgreSQL checks for interrupts, which is
// where a SIGTERM from outside would act too.)
//
// So that the events of that call do not hang the next worker in turn, the call is
// charged an attempt, crash-safely and without a transaction (the batch's is lost):
//  1. Before each call the worker publishes in its slot of shared memory what it calls:
//     the subscription, the unit's partition and the events' ids (for a per-event
//     handler, the one event being called; for a batch call, its first
//     kMostWatchedEvents events).
//  2. When the watchdog fires, the slot is marked expired (in the timer's signal
//     handler: one atomic write), and the process dies at its next interrupt check.
//  3. On its way out (on_shmem_exit, which a FATAL runs) the worker copies an expired
//     slot into a free charge.
//  4. The next batch of that unit (TakeCharges, any worker) fails the charged events
//     with 57014 instead of calling the handler with them: a batch call that holds one
//     fails as a whole and is bisected as usual, so the charged events fail alone and
//     the others are delivered. The charge is taken (forgotten) by that batch.
// What can be lost is only a charge, never an event: if the taking batch rolls back, or
// the server restarts (shared memory is new), or the charges are full, the handler is
// called again with those events, and runs into the watchdog again. Each time the event
// goes through a batch that commits, its attempt is counted; after max_attempts it is a
// dead letter.
// Outside a delivery worker (evproc.deliver_batch() in a session) the watchdog ends the
// session all the same, but records no charge.
#pragma once

#include "pg_headers.hpp"

namespace evproc {

constexpr int kMostWatchedEvents = 1024;

void RequestHandlerWatch();  // from _PG_init, preload only

// PostgreSQL code. Arms the watchdog for a call of the subscription's handler on the
// events `ids[0..count)` of the unit's partition (-1: a replay), due in timeout_ms.
void WatchCall(int32 subscription_id, int32 partition, const int64 *ids, int count, int timeout_ms);
// Narrows the watched call to one event (a per-event handler's current call).
void WatchEvent(int64 id);
// The call returned or failed: disarms the watchdog. Harmless when not armed.
void UnwatchCall();

// The events of the unit charged by a worker that ended itself, sorted, in `context`;
// the charges are forgotten. PostgreSQL code.
struct ChargedEvents {
  int64 *ids;
  int count;
};
ChargedEvents TakeCharges(int32 subscription_id, int32 partition, MemoryContext context);

}  // namespace evproc

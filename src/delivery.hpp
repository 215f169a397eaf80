// One batch of delivery (docs/design.md, "The path of one event"): claim a unit, read
// its due retries and the next events of its snapshot window, hand them to the
// subscription's handler, isolate poison events, park their keys, record dead letters,
// and move the unit's position, all in one transaction with the handler's effects.
#pragma once

#include "pg_headers.hpp"

namespace evproc {

struct BatchResult {
  bool worked;               // a unit was claimed (run the next batch at once)
  TimestampTz next_due;      // when idle: the earliest retry or breaker end (0: none)
  const char *subscription;  // the unit's (batch memory)
  int32 partition;
  bool paused;  // the subscription was paused instead (broken handler)
  int64 delivered;
  int64 failed;
  int64 dead;
};

// Runs one batch in its own transaction. Errors of evproc's own statements propagate
// as pg::PgError with the transaction still open: the caller aborts it.
BatchResult RunOneBatch();

// The same inside the caller's transaction: evproc.deliver_batch(), which tests and
// operators use to step delivery by hand (the claim's row lock lasts until the caller
// commits).
BatchResult RunOneBatchInTransaction();

}  // namespace evproc

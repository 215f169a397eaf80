// Counters earned by the current transaction, applied to shared memory when it commits
// and dropped when it (or the subtransaction that earned them) rolls back, so that the
// monitoring views count committed work only: published events, and deliveries,
// failures, dead letters and re-drives of subscriptions.
#pragma once

#include "pg_headers.hpp"

namespace evproc::metrics {

void RegisterTransactionCounters();  // from _PG_init

void NotePublished(int32 topic_id, int64 events);
// Events of the topic this transaction enqueued and has not committed yet.
int64 UncommittedPublished(int32 topic_id);

void NoteDelivered(int32 subscription_id, int64 events, bool replay);
void NoteFailed(int32 subscription_id, int64 attempts);
void NoteDead(int32 subscription_id, int64 events);
// Events back in line (pending again): re-driven dead letters, replayed events that
// failed and joined the retry line.
void NoteRequeued(int32 subscription_id, int64 events);
void NoteLatency(int32 subscription_id, int64 microseconds);
// Attempts (delivered, replayed, failed) and failures of the subscription this
// transaction made and has not committed yet.
void UncommittedAttempts(int32 subscription_id, int64 *attempts, int64 *failures);

}  // namespace evproc::metrics

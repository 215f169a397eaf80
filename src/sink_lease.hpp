// What a sink worker does in the database, each in a short transaction of its own
// (never while a request is in flight): find its sink subscriptions, lease batches,
// write their outcomes. PostgreSQL code: call it through CallPostgres; results are
// palloc'd in the memory context current at the call.
#pragma once

#include "pg_headers.hpp"

namespace evproc::sinkdb {

struct SinkSubscription {
  int32 id;
  const char *name;
  const char *topic;
  Oid owner;
  const char *sink;  // the sink jsonb's text
  int32 batch_size;
  bool active;  // not paused, breaker closed
};

struct LeasedEvent {
  int64 id;
  char *key;  // nullptr: none
  char *type;
  char *payload;
  char *headers;  // nullptr: none
  char *enqueued_at;
  int32 attempt;
  bool replay;
};

// One message's outcome as the database writes it.
enum class Fate : uint8 { kDelivered, kRetry, kDead, kPause, kHeld };
struct EventOutcome {
  int64 event_id;
  const char *key;  // nullptr: none
  Fate fate;
  int64 retry_after_ms;  // kRetry: -1 for backoff
  const char *error;     // kRetry, kDead, kPause
  const char *context;   // kDead: JSON text, or nullptr
};

struct BatchStats {
  int64 requests, answers_2xx, answers_3xx, answers_4xx, answers_5xx, transport_errors;
  int64 bytes_sent, bytes_received;
  const int64 *latency_buckets;  // core::kLatencyBuckets counts
  const char *last_error;        // nullptr: none
};

struct LeaseResult {
  char *lease;  // nullptr: nothing to send
  int count;
  LeasedEvent *events;
};

// Starts and commits the worker's transactions; false (no transaction left open) when the
// extension is missing, being dropped or not served.
bool Begin();
void Commit();

// The sink subscriptions of worker `index` of `workers`.
int LoadSubscriptions(int index, int workers, SinkSubscription **out);
// Ends every lease of those subscriptions left by an earlier incarnation of this worker
// (killed or crashed with batches in flight): their events come again as after a failed
// attempt, at once rather than when the leases would have expired.
void ReleaseStaleLeases(int index, int workers);
// Leases up to max_events of the subscription for lease_ms.
LeaseResult Lease(const SinkSubscription &subscription, int max_events, int64 lease_ms);
// Writes a lease's outcomes, the stats, and pauses the subscription on kPause.
void EndLease(const SinkSubscription &subscription, const char *lease, int count,
              const EventOutcome *outcomes, const BatchStats &stats);

}  // namespace evproc::sinkdb

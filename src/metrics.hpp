// Monitoring in shared memory (docs/operations.md "Watching"): counters, rates and latency
// histograms per topic and per subscription, and the state of each worker. The monitoring views
// read these instead of counting rows.
//
//  * Counters move when the transaction that earned them commits: enqueue and delivery
//    record deltas in backend memory (see metrics_local.cpp) and apply them at commit,
//    so a rolled-back batch or publish counts nothing.
//  * Rates and latency percentiles cover the last minute: a ring of six 10-second
//    slices, each stamped with its epoch; a writer that finds a stale slice resets it.
//  * Pending events per subscription (its lag, and a topic's depth for max_pending) are
//    published(topic) + offset - delivered - dead. The offset is set once per server
//    life by counting the subscription's backlog (evproc.sync_stats(), run by the
//    maintenance worker every second, counts new subscriptions); from then on every
//    change is a counter increment, and enqueue checks max_pending in constant time.
//  * Slots are keyed by (database, id): one server may run evproc in several databases.
//    Lookups are lock-free; claiming and freeing slots takes the evproc LWLock.
#pragma once

#include <cstdint>

#include "core/breaker.hpp"
#include "core/latency.hpp"
#include "pg_headers.hpp"

extern "C" {
#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/spin.h"
}

namespace evproc::metrics {

constexpr int kSlices = 6;
constexpr int kSliceSeconds = 10;
constexpr int kLatencyBuckets = core::kLatencyBuckets;
constexpr int kMaxTopics = 1024;
constexpr int kMaxSubscriptions = 512;
constexpr int kListedSubscriptions = 16;  // per topic; more: scan every subscription
constexpr int kMaxWorkerSlots = 64;
constexpr int kErrorTextBytes = 256;

struct SubscriptionSlice {
  pg_atomic_uint64 epoch;
  pg_atomic_uint64 delivered;
  pg_atomic_uint64 failed;
  pg_atomic_uint64 replayed;
  pg_atomic_uint64 latency[kLatencyBuckets];
};

struct SubscriptionStats {
  pg_atomic_uint64 key;  // (database << 32 | subscription id); 0 free, kTombstone freed
  pg_atomic_uint32 topic_id;
  pg_atomic_uint32 ready;  // offset set: pending is known
  pg_atomic_uint64 delivered;
  pg_atomic_uint64 failed;  // failed attempts
  pg_atomic_uint64 dead;
  pg_atomic_uint64 replayed;
  pg_atomic_uint64 requeued;  // back in line: re-driven dead letters, failed replays
  pg_atomic_uint64 offset;    // an int64 in two's complement
  // Attempts (delivered, replayed, failed) and failures when its circuit breaker last
  // tripped: the breaker judges only what came after (see delivery_breaker.cpp).
  pg_atomic_uint64 breaker_attempts;
  pg_atomic_uint64 breaker_failures;
  SubscriptionSlice slices[kSlices];
};

struct TopicSlice {
  pg_atomic_uint64 epoch;
  pg_atomic_uint64 published;
};

struct TopicStats {
  pg_atomic_uint64 key;  // (database << 32 | topic id)
  pg_atomic_uint64 published;
  pg_atomic_uint64 dedup_hits;
  pg_atomic_uint64 rejected_full;     // 53400: over max_pending
  pg_atomic_uint64 rejected_invalid;  // malformed events
  pg_atomic_uint32 subscription_count;
  pg_atomic_uint32 subscription_slots[kListedSubscriptions];
  TopicSlice slices[kSlices];
};

enum class WorkerState : int { kStopped = 0, kIdle, kDelivering, kReplaying };

struct WorkerStatus {
  slock_t mutex;
  int pid;
  WorkerState state;
  int32 subscription_id;
  int32 partition;  // -1: a replay (all partitions)
  int64 batches;
  int64 events;
  TimestampTz state_since;
  TimestampTz last_error_at;
  char last_error[kErrorTextBytes];
};

struct Metrics {
  TopicStats topics[kMaxTopics];
  SubscriptionStats subscriptions[kMaxSubscriptions];
  WorkerStatus workers[kMaxWorkerSlots];
};

void InitMetrics(Metrics *metrics);  // at shared memory creation

// nullptr without shared memory (evproc not preloaded).
Metrics *Shared();

// Slot keys: (database << 32 | id); 0 marks a never used slot, kTombstone a freed one.
constexpr uint64 kTombstone = UINT64_MAX;
inline uint64 KeyOf(Oid database, int32 id) {
  return (static_cast<uint64>(database) << 32) | static_cast<uint32>(id);
}
inline int32 IdOf(uint64 key) { return static_cast<int32>(key & 0xFFFFFFFFU); }
inline bool KeyInDatabase(uint64 key, Oid database) {
  return key != 0 && key != kTombstone && (key >> 32) == database;
}

// Slot lookups; nullptr when absent (or, for create, when every slot is taken).
TopicStats *FindTopic(Oid database, int32 topic_id, bool create);
SubscriptionStats *FindSubscription(Oid database, int32 subscription_id);
// The topic's slot, claimed and cleared if new (nullptr: every slot is taken). Caller
// holds SharedLock() exclusively.
TopicStats *ClaimTopicLocked(Oid database, int32 topic_id);
// The subscription's slot, claimed and cleared if new (nullptr: every slot is taken).
// Caller holds SharedLock() exclusively.
SubscriptionStats *ClaimSubscriptionLocked(Oid database, int32 subscription_id, int32 topic_id);

// Pending events of a subscription whose offset is set.
int64 PendingOf(const SubscriptionStats &stats, const TopicStats *topic);
// The largest pending count among the topic's subscriptions (0: none known).
int64 TopicDepth(Oid database, const TopicStats &topic);

// Applied directly (not transactional): an attempt counts whether or not it commits.
void CountDedupHit(int32 topic_id);
void CountRejected(int32 topic_id, bool over_max_pending);

// The slice of the ring that covers now, reset if stale.
uint64 CurrentEpoch();

// The circuit breaker's committed counts of a subscription (attempts: delivered,
// replayed and failed): those of the ring's slices (with their epochs), the totals so
// far, and the totals when its breaker last tripped. False when the subscription has no
// slot (not registered yet, or no shared memory).
struct BreakerCountsOf {
  core::BreakerSlice slices[kSlices];
  core::BreakerCounts totals;
  core::BreakerCounts at_trip;
};
bool ReadBreakerCounts(int32 subscription_id, BreakerCountsOf *counts);
// The breaker tripped with the subscription's totals at `totals`.
void MarkBreakerTripped(int32 subscription_id, core::BreakerCounts totals);

// Worker status (delivery workers only; index = the worker's number).
void WorkerStarted(int index);
void WorkerStopped(int index);
void WorkerBusy(int32 subscription_id, int32 partition, bool replay);
void WorkerIdle();
void WorkerBatchDone(int64 events);
void WorkerError(const char *message);
extern int my_worker_index;  // -1 outside delivery workers

}  // namespace evproc::metrics

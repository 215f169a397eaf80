#include "metrics.hpp"

#include <cstring>

#include "shared_state.hpp"

extern "C" {
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"
}

namespace evproc::metrics {
namespace {

uint64 HashOf(uint64 key) { return (key * UINT64CONST(0x9E3779B97F4A7C15)) >> 32; }

// Open addressing over `slots`: keys never move, a freed slot becomes a tombstone, so a
// lock-free reader that walks the probe sequence never stops short of its key.
template <typename Slot, int kCount>
Slot *Find(Slot (&slots)[kCount], uint64 key) {
  uint64 start = HashOf(key) % kCount;
  for (int step = 0; step < kCount; ++step) {
    Slot &slot = slots[(start + step) % kCount];
    uint64 current = pg_atomic_read_u64(&slot.key);
    if (current == key) return &slot;
    if (current == 0) return nullptr;
  }
  return nullptr;
}

// Caller holds the evproc LWLock exclusively.
template <typename Slot, int kCount>
Slot *Claim(Slot (&slots)[kCount], uint64 key) {
  if (Slot *found = Find(slots, key)) return found;
  uint64 start = HashOf(key) % kCount;
  for (int step = 0; step < kCount; ++step) {
    Slot &slot = slots[(start + step) % kCount];
    uint64 current = pg_atomic_read_u64(&slot.key);
    if (current == 0 || current == kTombstone) return &slot;  // the caller resets it
  }
  return nullptr;
}

void ResetTopic(TopicStats &topic) {
  pg_atomic_write_u64(&topic.published, 0);
  pg_atomic_write_u64(&topic.dedup_hits, 0);
  pg_atomic_write_u64(&topic.rejected_full, 0);
  pg_atomic_write_u64(&topic.rejected_invalid, 0);
  pg_atomic_write_u32(&topic.subscription_count, 0);
  for (auto &slot : topic.subscription_slots) pg_atomic_write_u32(&slot, 0);
  for (auto &slice : topic.slices) {
    pg_atomic_write_u64(&slice.epoch, 0);
    pg_atomic_write_u64(&slice.published, 0);
  }
}

}  // namespace

int my_worker_index = -1;

Metrics *Shared() {
  SharedState *state = evproc::Shared();
  return state == nullptr ? nullptr : &state->metrics;
}

void InitMetrics(Metrics *metrics) {
  std::memset(static_cast<void *>(metrics), 0, sizeof(Metrics));
  for (auto &topic : metrics->topics) {
    pg_atomic_init_u64(&topic.key, 0);
    pg_atomic_init_u64(&topic.published, 0);
    pg_atomic_init_u64(&topic.dedup_hits, 0);
    pg_atomic_init_u64(&topic.rejected_full, 0);
    pg_atomic_init_u64(&topic.rejected_invalid, 0);
    pg_atomic_init_u32(&topic.subscription_count, 0);
    for (auto &slot : topic.subscription_slots) pg_atomic_init_u32(&slot, 0);
    for (auto &slice : topic.slices) {
      pg_atomic_init_u64(&slice.epoch, 0);
      pg_atomic_init_u64(&slice.published, 0);
    }
  }
  for (auto &sub : metrics->subscriptions) {
    pg_atomic_init_u64(&sub.key, 0);
    pg_atomic_init_u32(&sub.topic_id, 0);
    pg_atomic_init_u32(&sub.ready, 0);
    pg_atomic_init_u64(&sub.delivered, 0);
    pg_atomic_init_u64(&sub.failed, 0);
    pg_atomic_init_u64(&sub.dead, 0);
    pg_atomic_init_u64(&sub.replayed, 0);
    pg_atomic_init_u64(&sub.requeued, 0);
    pg_atomic_init_u64(&sub.offset, 0);
    pg_atomic_init_u64(&sub.breaker_attempts, 0);
    pg_atomic_init_u64(&sub.breaker_failures, 0);
    for (auto &slice : sub.slices) {
      pg_atomic_init_u64(&slice.epoch, 0);
      pg_atomic_init_u64(&slice.delivered, 0);
      pg_atomic_init_u64(&slice.failed, 0);
      pg_atomic_init_u64(&slice.replayed, 0);
      for (auto &bucket : slice.latency) pg_atomic_init_u64(&bucket, 0);
    }
  }
  for (auto &worker : metrics->workers) SpinLockInit(&worker.mutex);
}

TopicStats *ClaimTopicLocked(Oid database, int32 topic_id) {
  uint64 key = KeyOf(database, topic_id);
  TopicStats *slot = Claim(Shared()->topics, key);
  if (slot != nullptr && pg_atomic_read_u64(&slot->key) != key) {
    ResetTopic(*slot);
    pg_atomic_write_u64(&slot->key, key);
  }
  return slot;
}

TopicStats *FindTopic(Oid database, int32 topic_id, bool create) {
  Metrics *metrics = Shared();
  if (metrics == nullptr) return nullptr;
  TopicStats *found = Find(metrics->topics, KeyOf(database, topic_id));
  if (found != nullptr || !create) return found;
  LWLockAcquire(evproc::SharedLock(), LW_EXCLUSIVE);
  found = ClaimTopicLocked(database, topic_id);
  LWLockRelease(evproc::SharedLock());
  return found;
}

SubscriptionStats *FindSubscription(Oid database, int32 subscription_id) {
  Metrics *metrics = Shared();
  if (metrics == nullptr) return nullptr;
  return Find(metrics->subscriptions, KeyOf(database, subscription_id));
}

SubscriptionStats *ClaimSubscriptionLocked(Oid database, int32 subscription_id, int32 topic_id) {
  uint64 key = KeyOf(database, subscription_id);
  SubscriptionStats *slot = Claim(Shared()->subscriptions, key);
  if (slot == nullptr || pg_atomic_read_u64(&slot->key) == key) return slot;
  pg_atomic_write_u32(&slot->topic_id, static_cast<uint32>(topic_id));
  pg_atomic_write_u32(&slot->ready, 0);
  pg_atomic_write_u64(&slot->delivered, 0);
  pg_atomic_write_u64(&slot->failed, 0);
  pg_atomic_write_u64(&slot->dead, 0);
  pg_atomic_write_u64(&slot->replayed, 0);
  pg_atomic_write_u64(&slot->requeued, 0);
  pg_atomic_write_u64(&slot->offset, 0);
  pg_atomic_write_u64(&slot->breaker_attempts, 0);
  pg_atomic_write_u64(&slot->breaker_failures, 0);
  for (auto &slice : slot->slices) pg_atomic_write_u64(&slice.epoch, 0);
  pg_atomic_write_u64(&slot->key, key);
  return slot;
}

int64 PendingOf(const SubscriptionStats &stats, const TopicStats *topic) {
  auto &s = const_cast<SubscriptionStats &>(stats);
  uint64 published =
      topic == nullptr ? 0 : pg_atomic_read_u64(&const_cast<TopicStats *>(topic)->published);
  uint64 pending = published + pg_atomic_read_u64(&s.offset) + pg_atomic_read_u64(&s.requeued) -
                   pg_atomic_read_u64(&s.delivered) - pg_atomic_read_u64(&s.dead);
  auto signed_pending = static_cast<int64>(pending);
  // Counts taken while commits race the count can be off by a few; never below zero.
  return signed_pending < 0 ? 0 : signed_pending;
}

int64 TopicDepth(Oid database, const TopicStats &topic) {
  Metrics *metrics = Shared();
  auto &t = const_cast<TopicStats &>(topic);
  int32 topic_id = IdOf(pg_atomic_read_u64(&t.key));
  uint32 count = pg_atomic_read_u32(&t.subscription_count);
  int64 depth = 0;
  auto consider = [&](SubscriptionStats &sub) {
    if (!KeyInDatabase(pg_atomic_read_u64(&sub.key), database)) return;
    if (static_cast<int32>(pg_atomic_read_u32(&sub.topic_id)) != topic_id) return;
    if (pg_atomic_read_u32(&sub.ready) == 0) return;
    int64 pending = PendingOf(sub, &topic);
    if (pending > depth) depth = pending;
  };
  if (count <= kListedSubscriptions) {
    for (uint32 i = 0; i < count; ++i) {
      uint32 slot = pg_atomic_read_u32(&t.subscription_slots[i]);
      if (slot < kMaxSubscriptions) consider(metrics->subscriptions[slot]);
    }
  } else {
    for (auto &sub : metrics->subscriptions) consider(sub);
  }
  return depth;
}

void CountDedupHit(int32 topic_id) {
  if (TopicStats *topic = FindTopic(MyDatabaseId, topic_id, true))
    pg_atomic_fetch_add_u64(&topic->dedup_hits, 1);
}

void CountRejected(int32 topic_id, bool over_max_pending) {
  if (TopicStats *topic = FindTopic(MyDatabaseId, topic_id, true)) {
    pg_atomic_fetch_add_u64(over_max_pending ? &topic->rejected_full : &topic->rejected_invalid, 1);
  }
}

uint64 CurrentEpoch() {
  return static_cast<uint64>(GetCurrentTimestamp() / (USECS_PER_SEC * kSliceSeconds));
}

bool ReadBreakerCounts(int32 subscription_id, BreakerCountsOf *counts) {
  SubscriptionStats *sub = FindSubscription(MyDatabaseId, subscription_id);
  if (sub == nullptr) return false;
  for (int i = 0; i < kSlices; ++i) {
    SubscriptionSlice &slice = sub->slices[i];
    uint64 failed = pg_atomic_read_u64(&slice.failed);
    uint64 attempts =
        pg_atomic_read_u64(&slice.delivered) + pg_atomic_read_u64(&slice.replayed) + failed;
    counts->slices[i] = core::BreakerSlice{
        pg_atomic_read_u64(&slice.epoch),
        core::BreakerCounts{static_cast<int64>(attempts), static_cast<int64>(failed)}};
  }
  uint64 failed = pg_atomic_read_u64(&sub->failed);
  uint64 attempts =
      pg_atomic_read_u64(&sub->delivered) + pg_atomic_read_u64(&sub->replayed) + failed;
  counts->totals = core::BreakerCounts{static_cast<int64>(attempts), static_cast<int64>(failed)};
  counts->at_trip =
      core::BreakerCounts{static_cast<int64>(pg_atomic_read_u64(&sub->breaker_attempts)),
                          static_cast<int64>(pg_atomic_read_u64(&sub->breaker_failures))};
  return true;
}

void MarkBreakerTripped(int32 subscription_id, core::BreakerCounts totals) {
  SubscriptionStats *sub = FindSubscription(MyDatabaseId, subscription_id);
  if (sub == nullptr) return;
  pg_atomic_write_u64(&sub->breaker_attempts, static_cast<uint64>(totals.attempts));
  pg_atomic_write_u64(&sub->breaker_failures, static_cast<uint64>(totals.failures));
}

// ---------------------------------------------------------------------------------------
// Worker status: written by its worker only, read by evproc.worker_stats().
// ---------------------------------------------------------------------------------------
namespace {

template <typename Fn>
void UpdateWorker(Fn &&fn) {
  Metrics *metrics = Shared();
  if (metrics == nullptr || my_worker_index < 0 || my_worker_index >= kMaxWorkerSlots) return;
  WorkerStatus &worker = metrics->workers[my_worker_index];
  SpinLockAcquire(&worker.mutex);
  fn(worker);
  SpinLockRelease(&worker.mutex);
}

}  // namespace

void WorkerStarted(int index) {
  my_worker_index = index;
  TimestampTz now = GetCurrentTimestamp();
  UpdateWorker([&](WorkerStatus &w) {
    w.pid = MyProcPid;
    w.state = WorkerState::kIdle;
    w.subscription_id = 0;
    w.partition = 0;
    w.batches = 0;
    w.events = 0;
    w.state_since = now;
    w.last_error_at = 0;
    w.last_error[0] = '\0';
  });
}

void WorkerStopped(int /*index*/) {
  TimestampTz now = GetCurrentTimestamp();
  UpdateWorker([&](WorkerStatus &w) {
    w.state = WorkerState::kStopped;
    w.state_since = now;
  });
}

void WorkerBusy(int32 subscription_id, int32 partition, bool replay) {
  NoteWorkerBusy(my_worker_index);  // a unit claimed: ticks need not wake this worker
  TimestampTz now = GetCurrentTimestamp();
  UpdateWorker([&](WorkerStatus &w) {
    w.state = replay ? WorkerState::kReplaying : WorkerState::kDelivering;
    w.subscription_id = subscription_id;
    w.partition = partition;
    w.state_since = now;
  });
}

void WorkerIdle() {
  TimestampTz now = GetCurrentTimestamp();
  UpdateWorker([&](WorkerStatus &w) {
    if (w.state == WorkerState::kIdle) return;
    w.state = WorkerState::kIdle;
    w.state_since = now;
  });
}

void WorkerBatchDone(int64 events) {
  UpdateWorker([&](WorkerStatus &w) {
    w.batches += 1;
    w.events += events;
  });
}

void WorkerError(const char *message) {
  TimestampTz now = GetCurrentTimestamp();
  UpdateWorker([&](WorkerStatus &w) {
    w.last_error_at = now;
    strlcpy(w.last_error, message != nullptr ? message : "", sizeof(w.last_error));
  });
}

}  // namespace evproc::metrics

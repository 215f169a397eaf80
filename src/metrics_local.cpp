#include "metrics_local.hpp"

#include <cstring>

#include "metrics.hpp"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
}

namespace evproc::metrics {
namespace {

enum class Kind { kTopic, kSubscription };

struct Delta {
  Kind kind;
  int32 id;
  int nest_level;  // the (sub)transaction that earned it
  int64 published;
  int64 delivered;
  int64 replayed;
  int64 failed;
  int64 dead;
  int64 requeued;
  bool has_latency;
  uint32 latency[kLatencyBuckets];
};

// A transaction touches few topics and subscriptions; past this many, the oldest delta
// is applied early (its counts may then include work that later rolls back).
constexpr int kMostDeltas = 32;
Delta deltas[kMostDeltas];
int delta_count = 0;

// A slice of the ring for this epoch: a stale one is claimed and cleared first (counts
// racing the clear may be lost: monitoring, not accounting).
template <typename Slice, typename Clear>
Slice &SliceFor(Slice (&slices)[kSlices], uint64 epoch, Clear &&clear) {
  Slice &slice = slices[epoch % kSlices];
  uint64 seen = pg_atomic_read_u64(&slice.epoch);
  if (seen != epoch && seen < epoch && pg_atomic_compare_exchange_u64(&slice.epoch, &seen, epoch)) {
    clear(slice);
  }
  return slice;
}

void ApplyTopic(const Delta &delta, uint64 epoch) {
  TopicStats *topic = FindTopic(MyDatabaseId, delta.id, true);
  if (topic == nullptr || delta.published == 0) return;
  pg_atomic_fetch_add_u64(&topic->published, delta.published);
  TopicSlice &slice =
      SliceFor(topic->slices, epoch, [](TopicSlice &s) { pg_atomic_write_u64(&s.published, 0); });
  pg_atomic_fetch_add_u64(&slice.published, delta.published);
}

void ApplySubscription(const Delta &delta, uint64 epoch) {
  SubscriptionStats *sub = FindSubscription(MyDatabaseId, delta.id);
  if (sub == nullptr) return;  // registered by the next evproc.sync_stats(), which counts
  pg_atomic_fetch_add_u64(&sub->delivered, delta.delivered);
  pg_atomic_fetch_add_u64(&sub->replayed, delta.replayed);
  pg_atomic_fetch_add_u64(&sub->failed, delta.failed);
  pg_atomic_fetch_add_u64(&sub->dead, delta.dead);
  pg_atomic_fetch_add_u64(&sub->requeued, delta.requeued);
  SubscriptionSlice &slice = SliceFor(sub->slices, epoch, [](SubscriptionSlice &s) {
    pg_atomic_write_u64(&s.delivered, 0);
    pg_atomic_write_u64(&s.failed, 0);
    pg_atomic_write_u64(&s.replayed, 0);
    for (auto &bucket : s.latency) pg_atomic_write_u64(&bucket, 0);
  });
  pg_atomic_fetch_add_u64(&slice.delivered, delta.delivered);
  pg_atomic_fetch_add_u64(&slice.failed, delta.failed);
  pg_atomic_fetch_add_u64(&slice.replayed, delta.replayed);
  if (delta.has_latency) {
    for (int i = 0; i < kLatencyBuckets; ++i) {
      if (delta.latency[i] != 0) pg_atomic_fetch_add_u64(&slice.latency[i], delta.latency[i]);
    }
  }
}

void Apply(const Delta &delta) {
  if (Shared() == nullptr) return;
  uint64 epoch = CurrentEpoch();
  if (delta.kind == Kind::kTopic) {
    ApplyTopic(delta, epoch);
  } else {
    ApplySubscription(delta, epoch);
  }
}

Delta &DeltaFor(Kind kind, int32 id) {
  int level = GetCurrentTransactionNestLevel();
  for (int i = 0; i < delta_count; ++i) {
    Delta &delta = deltas[i];
    if (delta.kind == kind && delta.id == id && delta.nest_level == level) return delta;
  }
  if (delta_count == kMostDeltas) {
    Apply(deltas[0]);
    std::memmove(&deltas[0], &deltas[1], sizeof(Delta) * (kMostDeltas - 1));
    --delta_count;
  }
  Delta &delta = deltas[delta_count++];
  std::memset(&delta, 0, sizeof(Delta));
  delta.kind = kind;
  delta.id = id;
  delta.nest_level = level;
  return delta;
}

void OnXactEvent(XactEvent event, void * /*arg*/) {
  switch (event) {
    case XACT_EVENT_COMMIT:
      for (int i = 0; i < delta_count; ++i) Apply(deltas[i]);
      delta_count = 0;
      break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
    case XACT_EVENT_PREPARE:  // enqueue refuses 2PC; nothing to carry over
      delta_count = 0;
      break;
    default:
      break;
  }
}

void Merge(Delta &into, const Delta &from) {
  into.published += from.published;
  into.delivered += from.delivered;
  into.replayed += from.replayed;
  into.failed += from.failed;
  into.dead += from.dead;
  into.requeued += from.requeued;
  if (from.has_latency) {
    into.has_latency = true;
    for (int i = 0; i < kLatencyBuckets; ++i) into.latency[i] += from.latency[i];
  }
}

// A committed subtransaction hands its deltas to its parent, merged into the parent's
// own delta of the same topic or subscription: otherwise every committed subtransaction
// (a savepoint, a PL/pgSQL exception block) would keep a delta of its own, and past
// kMostDeltas the oldest would be applied before the transaction commits (counting events
// a rollback then removes). An aborted one drops them.
void OnSubXactEvent(SubXactEvent event, SubTransactionId /*mine*/, SubTransactionId /*parent*/,
                    void * /*arg*/) {
  int level = GetCurrentTransactionNestLevel();
  if (event == SUBXACT_EVENT_COMMIT_SUB) {
    int kept = 0;
    for (int i = 0; i < delta_count; ++i) {
      Delta &delta = deltas[i];
      if (delta.nest_level >= level) {
        delta.nest_level = level - 1;
        Delta *parent = nullptr;
        for (int j = 0; j < kept && parent == nullptr; ++j) {
          if (deltas[j].kind == delta.kind && deltas[j].id == delta.id &&
              deltas[j].nest_level == level - 1)
            parent = &deltas[j];
        }
        if (parent != nullptr) {
          Merge(*parent, delta);
          continue;
        }
      }
      if (kept != i) deltas[kept] = delta;
      ++kept;
    }
    delta_count = kept;
  } else if (event == SUBXACT_EVENT_ABORT_SUB) {
    int kept = 0;
    for (int i = 0; i < delta_count; ++i) {
      if (deltas[i].nest_level < level) deltas[kept++] = deltas[i];
    }
    delta_count = kept;
  }
}

}  // namespace

void RegisterTransactionCounters() {
  RegisterXactCallback(OnXactEvent, nullptr);
  RegisterSubXactCallback(OnSubXactEvent, nullptr);
}

void NotePublished(int32 topic_id, int64 events) {
  DeltaFor(Kind::kTopic, topic_id).published += events;
}

int64 UncommittedPublished(int32 topic_id) {
  int64 total = 0;
  for (int i = 0; i < delta_count; ++i) {
    if (deltas[i].kind == Kind::kTopic && deltas[i].id == topic_id) total += deltas[i].published;
  }
  return total;
}

void NoteDelivered(int32 subscription_id, int64 events, bool replay) {
  Delta &delta = DeltaFor(Kind::kSubscription, subscription_id);
  (replay ? delta.replayed : delta.delivered) += events;
}

void NoteFailed(int32 subscription_id, int64 attempts) {
  DeltaFor(Kind::kSubscription, subscription_id).failed += attempts;
}

void NoteDead(int32 subscription_id, int64 events) {
  DeltaFor(Kind::kSubscription, subscription_id).dead += events;
}

void NoteRequeued(int32 subscription_id, int64 events) {
  DeltaFor(Kind::kSubscription, subscription_id).requeued += events;
}

void NoteLatency(int32 subscription_id, int64 microseconds) {
  Delta &delta = DeltaFor(Kind::kSubscription, subscription_id);
  delta.has_latency = true;
  delta.latency[core::LatencyBucket(microseconds)] += 1;
}

void UncommittedAttempts(int32 subscription_id, int64 *attempts, int64 *failures) {
  *attempts = 0;
  *failures = 0;
  for (int i = 0; i < delta_count; ++i) {
    const Delta &delta = deltas[i];
    if (delta.kind != Kind::kSubscription || delta.id != subscription_id) continue;
    *attempts += delta.delivered + delta.replayed + delta.failed;
    *failures += delta.failed;
  }
}

}  // namespace evproc::metrics

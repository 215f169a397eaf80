// SQL access to the shared-memory metrics (src/metrics.hpp): the functions behind the
// monitoring views, and the registry the maintenance worker keeps in step with the
// subscriptions.
// Plain PostgreSQL code: no C++ objects live in these frames.
#include "error_boundary.hpp"
#include "metrics.hpp"
#include "metrics_local.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "storage/lwlock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
}

#include "shared_state.hpp"

namespace evproc::metrics {
namespace {

bool InDatabase(uint64 key) { return KeyInDatabase(key, MyDatabaseId); }

// The part of the last minute the ring covers, in seconds, and whether a slice stamped
// `slice_epoch` falls in it.
double RingSeconds(uint64 epoch) {
  TimestampTz now = GetCurrentTimestamp();
  double into_current =
      static_cast<double>(now - static_cast<int64>(epoch) * kSliceSeconds * USECS_PER_SEC) /
      USECS_PER_SEC;
  return (kSlices - 1) * kSliceSeconds + into_current;
}
bool InRing(uint64 slice_epoch, uint64 epoch) {
  return slice_epoch <= epoch && slice_epoch + kSlices > epoch;
}

Datum NullableFloat(double value, bool *isnull, bool known) {
  *isnull = !known;
  return Float8GetDatum(value);
}

// Starts a set-returning call that hands back all its rows at once.
ReturnSetInfo *MaterializedRows(FunctionCallInfo fcinfo) {
  InitMaterializedSRF(fcinfo, 0);
  return reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
}

Datum CounterDatum(pg_atomic_uint64 &counter) {
  return Int64GetDatum(static_cast<int64>(pg_atomic_read_u64(&counter)));
}

void RequireMetrics() {
  if (Shared() == nullptr) {
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("evproc metrics need evproc in shared_preload_libraries")));
  }
}

}  // namespace
}  // namespace evproc::metrics

using namespace evproc::metrics;

// evproc.topic_stats(): one row per topic this database published to since the server
// started.
EVPROC_CPP_FUNCTION(evproc_topic_stats) {
  ReturnSetInfo *rsinfo = MaterializedRows(fcinfo);
  Metrics *metrics = Shared();
  if (metrics == nullptr) return static_cast<Datum>(0);
  uint64 epoch = CurrentEpoch();
  double seconds = RingSeconds(epoch);
  for (auto &topic : metrics->topics) {
    uint64 key = pg_atomic_read_u64(&topic.key);
    if (!InDatabase(key)) continue;
    uint64 recent = 0;
    for (auto &slice : topic.slices) {
      if (InRing(pg_atomic_read_u64(&slice.epoch), epoch))
        recent += pg_atomic_read_u64(&slice.published);
    }
    Datum values[7];
    bool nulls[7] = {false, false, false, false, false, false, false};
    values[0] = Int32GetDatum(IdOf(key));
    values[1] = CounterDatum(topic.published);
    values[2] = Float8GetDatum(static_cast<double>(recent) / seconds);
    values[3] = Int64GetDatum(TopicDepth(MyDatabaseId, topic));
    values[4] = CounterDatum(topic.dedup_hits);
    values[5] = CounterDatum(topic.rejected_full);
    values[6] = CounterDatum(topic.rejected_invalid);
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
  return static_cast<Datum>(0);
}

// evproc.subscription_stats(): one row per registered subscription of this database.
EVPROC_CPP_FUNCTION(evproc_subscription_stats) {
  ReturnSetInfo *rsinfo = MaterializedRows(fcinfo);
  Metrics *metrics = Shared();
  if (metrics == nullptr) return static_cast<Datum>(0);
  uint64 epoch = CurrentEpoch();
  double seconds = RingSeconds(epoch);
  for (auto &sub : metrics->subscriptions) {
    uint64 key = pg_atomic_read_u64(&sub.key);
    if (!InDatabase(key)) continue;
    uint64 delivered = 0;
    uint64 failed = 0;
    uint64 replayed = 0;
    uint64 buckets[kLatencyBuckets] = {};
    uint64 samples = 0;
    for (auto &slice : sub.slices) {
      if (!InRing(pg_atomic_read_u64(&slice.epoch), epoch)) continue;
      delivered += pg_atomic_read_u64(&slice.delivered);
      failed += pg_atomic_read_u64(&slice.failed);
      replayed += pg_atomic_read_u64(&slice.replayed);
      for (int i = 0; i < kLatencyBuckets; ++i) {
        uint64 count = pg_atomic_read_u64(&slice.latency[i]);
        buckets[i] += count;
        samples += count;
      }
    }
    auto topic_id = static_cast<int32>(pg_atomic_read_u32(&sub.topic_id));
    bool ready = pg_atomic_read_u32(&sub.ready) != 0;
    TopicStats *topic = FindTopic(MyDatabaseId, topic_id, false);
    Datum values[15];
    bool nulls[15] = {};
    values[0] = Int32GetDatum(IdOf(key));
    values[1] = Int64GetDatum(ready ? PendingOf(sub, topic) : 0);
    nulls[1] = !ready;
    values[2] = CounterDatum(sub.delivered);
    values[3] = CounterDatum(sub.failed);
    values[4] = CounterDatum(sub.dead);
    values[5] = CounterDatum(sub.replayed);
    values[6] = CounterDatum(sub.requeued);
    values[7] = Float8GetDatum(static_cast<double>(delivered) / seconds);
    values[8] = Float8GetDatum(static_cast<double>(failed) / seconds);
    values[9] = Float8GetDatum(static_cast<double>(replayed) / seconds);
    values[10] = Int64GetDatum(static_cast<int64>(samples));
    values[11] =
        NullableFloat(samples ? evproc::core::LatencyPercentileMs(buckets, samples, 0.50) : 0,
                      &nulls[11], samples);
    values[12] =
        NullableFloat(samples ? evproc::core::LatencyPercentileMs(buckets, samples, 0.95) : 0,
                      &nulls[12], samples);
    values[13] =
        NullableFloat(samples ? evproc::core::LatencyPercentileMs(buckets, samples, 0.99) : 0,
                      &nulls[13], samples);
    values[14] = Int32GetDatum(topic_id);
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
  return static_cast<Datum>(0);
}

// evproc.worker_stats(): the delivery workers' status slots in use.
EVPROC_CPP_FUNCTION(evproc_worker_stats) {
  ReturnSetInfo *rsinfo = MaterializedRows(fcinfo);
  Metrics *metrics = Shared();
  // The workers serve the launcher's database only.
  if (metrics == nullptr ||
      pg_atomic_read_u32(&evproc::Shared()->launcher_database) != MyDatabaseId) {
    return static_cast<Datum>(0);
  }
  static const char *const kStates[] = {"stopped", "idle", "delivering", "replaying"};
  for (int i = 0; i < kMaxWorkerSlots; ++i) {
    WorkerStatus copy;
    WorkerStatus &worker = metrics->workers[i];
    SpinLockAcquire(&worker.mutex);
    copy = worker;
    SpinLockRelease(&worker.mutex);
    if (copy.pid == 0) continue;
    bool busy = copy.state == WorkerState::kDelivering || copy.state == WorkerState::kReplaying;
    Datum values[10];
    bool nulls[10] = {};
    values[0] = Int32GetDatum(i);
    values[1] = Int32GetDatum(copy.pid);
    values[2] = CStringGetTextDatum(kStates[static_cast<int>(copy.state)]);
    values[3] = Int32GetDatum(copy.subscription_id);
    nulls[3] = !busy;
    values[4] = Int32GetDatum(copy.partition);
    nulls[4] = !busy || copy.partition < 0;
    values[5] = Int64GetDatum(copy.batches);
    values[6] = Int64GetDatum(copy.events);
    values[7] = TimestampTzGetDatum(copy.state_since);
    copy.last_error[kErrorTextBytes - 1] = '\0';
    values[8] = CStringGetTextDatum(copy.last_error);
    nulls[8] = copy.last_error_at == 0;
    values[9] = TimestampTzGetDatum(copy.last_error_at);
    nulls[9] = copy.last_error_at == 0;
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
  return static_cast<Datum>(0);
}

// evproc.sync_stats_registry(subscription_ids int[], topic_ids int[]) -> int[]: makes the
// registered subscriptions of this database exactly the given ones (with their topics),
// frees the slots of the others and of dropped topics, rebuilds each topic's list, and
// returns the ids whose pending count is not known yet (to be counted and set).
EVPROC_CPP_FUNCTION(evproc_sync_stats_registry) {
  RequireMetrics();
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) {
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("arguments must not be null")));
  }
  ArrayType *id_array = PG_GETARG_ARRAYTYPE_P(0);
  ArrayType *topic_array = PG_GETARG_ARRAYTYPE_P(1);
  Datum *ids = nullptr;
  Datum *topics = nullptr;
  bool *id_nulls = nullptr;
  bool *topic_nulls = nullptr;
  int count = 0;
  int topic_count = 0;
  deconstruct_array(id_array, INT4OID, 4, true, TYPALIGN_INT, &ids, &id_nulls, &count);
  deconstruct_array(topic_array, INT4OID, 4, true, TYPALIGN_INT, &topics, &topic_nulls,
                    &topic_count);
  if (count != topic_count) {
    ereport(ERROR, (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
                    errmsg("subscription and topic arrays differ in length")));
  }
  Metrics *metrics = Shared();
  auto *unready = static_cast<Datum *>(palloc(sizeof(Datum) * (count + 1)));
  int unready_count = 0;

  LWLockAcquire(evproc::SharedLock(), LW_EXCLUSIVE);
  // Free subscriptions that are gone.
  for (auto &sub : metrics->subscriptions) {
    uint64 key = pg_atomic_read_u64(&sub.key);
    if (!InDatabase(key)) continue;
    bool wanted = false;
    for (int i = 0; i < count && !wanted; ++i) wanted = DatumGetInt32(ids[i]) == IdOf(key);
    if (!wanted) pg_atomic_write_u64(&sub.key, kTombstone);
  }
  // Claim the new ones.
  for (int i = 0; i < count; ++i) {
    if (id_nulls[i] || topic_nulls[i]) continue;
    // Its topic gets a slot now, so the list below (which max_pending reads) has it.
    (void)ClaimTopicLocked(MyDatabaseId, DatumGetInt32(topics[i]));
    SubscriptionStats *slot =
        ClaimSubscriptionLocked(MyDatabaseId, DatumGetInt32(ids[i]), DatumGetInt32(topics[i]));
    // A full registry leaves this subscription unmeasured (and its topic's depth unknown).
    if (slot != nullptr && pg_atomic_read_u32(&slot->ready) == 0) unready[unready_count++] = ids[i];
  }
  // Rebuild every topic's list (slots of dropped topics stay, unread: the views join
  // evproc.topic).
  for (auto &topic : metrics->topics) {
    uint64 key = pg_atomic_read_u64(&topic.key);
    if (!InDatabase(key)) continue;
    uint32 listed = 0;
    for (int s = 0; s < kMaxSubscriptions; ++s) {
      SubscriptionStats &sub = metrics->subscriptions[s];
      if (!InDatabase(pg_atomic_read_u64(&sub.key))) continue;
      if (static_cast<int32>(pg_atomic_read_u32(&sub.topic_id)) != IdOf(key)) continue;
      if (listed < kListedSubscriptions)
        pg_atomic_write_u32(&topic.subscription_slots[listed], static_cast<uint32>(s));
      ++listed;
    }
    pg_atomic_write_u32(&topic.subscription_count, listed);
  }
  LWLockRelease(evproc::SharedLock());

  PG_RETURN_ARRAYTYPE_P(construct_array(unready, unready_count, INT4OID, 4, true, TYPALIGN_INT));
}

// evproc.set_pending(subscription_id, pending): the counted backlog of a registered
// subscription becomes its pending count; later changes come from the counters.
EVPROC_CPP_FUNCTION(evproc_set_pending) {
  RequireMetrics();
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) {
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("arguments must not be null")));
  }
  int32 id = PG_GETARG_INT32(0);
  int64 pending = PG_GETARG_INT64(1);
  SubscriptionStats *sub = FindSubscription(MyDatabaseId, id);
  if (sub == nullptr) PG_RETURN_BOOL(false);
  TopicStats *topic =
      FindTopic(MyDatabaseId, static_cast<int32>(pg_atomic_read_u32(&sub->topic_id)), true);
  uint64 published = topic == nullptr ? 0 : pg_atomic_read_u64(&topic->published);
  uint64 offset = static_cast<uint64>(pending) - published - pg_atomic_read_u64(&sub->requeued) +
                  pg_atomic_read_u64(&sub->delivered) + pg_atomic_read_u64(&sub->dead);
  pg_atomic_write_u64(&sub->offset, offset);
  pg_atomic_write_u32(&sub->ready, 1);
  PG_RETURN_BOOL(true);
}

// evproc.note_requeued(subscription_id, events): re-driven dead letters are pending
// again once the calling transaction commits.
EVPROC_CPP_FUNCTION(evproc_note_requeued) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) PG_RETURN_VOID();
  NoteRequeued(PG_GETARG_INT32(0), PG_GETARG_INT64(1));
  PG_RETURN_VOID();
}

// evproc.note_dead(subscription_id, events): a sink's refused events became dead letters
// (evproc.sink_dead_now), counted once the calling transaction commits.
EVPROC_CPP_FUNCTION(evproc_note_dead) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) PG_RETURN_VOID();
  NoteDead(PG_GETARG_INT32(0), PG_GETARG_INT64(1));
  PG_RETURN_VOID();
}

// evproc.forget_stats(): frees every metrics slot of this database. Run by CREATE
// EXTENSION: a re-created extension numbers its topics and subscriptions from 1 again,
// and must not inherit the counters of the ones dropped with the old one.
EVPROC_CPP_FUNCTION(evproc_forget_stats) {
  (void)fcinfo;
  Metrics *metrics = Shared();
  if (metrics == nullptr) PG_RETURN_VOID();
  LWLockAcquire(evproc::SharedLock(), LW_EXCLUSIVE);
  for (auto &sub : metrics->subscriptions) {
    if (InDatabase(pg_atomic_read_u64(&sub.key))) pg_atomic_write_u64(&sub.key, kTombstone);
  }
  for (auto &topic : metrics->topics) {
    if (InDatabase(pg_atomic_read_u64(&topic.key))) pg_atomic_write_u64(&topic.key, kTombstone);
  }
  LWLockRelease(evproc::SharedLock());
  PG_RETURN_VOID();
}

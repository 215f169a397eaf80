#include "commit_wake.hpp"

#include <cstring>

#include "error_boundary.hpp"
#include "shared_state.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "utils/array.h"
#include "utils/elog.h"
}

namespace evproc {
namespace {

// The slots this transaction wrote. Past kTrackedSlots distinct slots every slot is
// stamped: conservative, and only for transactions spanning thousands of partitions.
constexpr int kTrackedSlots = 256;
int touched[kTrackedSlots];
int touched_count = 0;
bool touched_overflow = false;
bool wake_pending = false;      // something committed that workers must look at
bool registry_pending = false;  // subscriptions changed: the metrics registry must follow
bool readers_pending = false;   // units were freed (ack, resume): waiting readers look again
int64 events_enqueued = 0;      // by this transaction, for the ticks' pace

void Forget() {
  touched_count = 0;
  touched_overflow = false;
  wake_pending = false;
  registry_pending = false;
  readers_pending = false;
  events_enqueued = 0;
}

// Marks a slot committed (read first: under load it is marked already, and a read
// keeps the cache line shared).
void MarkSlot(PartitionSlot &slot) {
  if (pg_atomic_read_u32(&slot.committed) == 0) pg_atomic_write_u32(&slot.committed, 1);
}

// Sets a flag to 1; true when it was 0.
bool Raise(pg_atomic_uint32 *flag) {
  return pg_atomic_read_u32(flag) == 0 && pg_atomic_exchange_u32(flag, 1) == 0;
}

// Whether a subscription delivers the slot's partitions now.
bool Deliverable(SharedState *state, int slot) {
  if (pg_atomic_read_u32(&state->deliverable_known) == 0) return true;
  return ((pg_atomic_read_u64(&state->deliverable[slot / 64]) >> (slot % 64)) & 1U) != 0;
}

// The publishing half of the protocol described at TakeCommittedSlots.
void Publish() {
  SharedState *state = Shared();
  if (state == nullptr) return;
  if (registry_pending) {
    pg_atomic_fetch_add_u64(&state->registry_seq, 1);
    WakeMaintenance();  // it registers the change in the metrics at once
  }
  // A wake without slots (subscriptions changed, work was re-driven or replayed): a tick
  // now, and every worker looks.
  bool awaited = touched_count == 0 && !touched_overflow;
  // P1: our commit is visible (ProcArrayEndTransaction) before anything below is seen.
  pg_memory_barrier();
  if (touched_overflow) {
    for (auto &slot : state->slots) MarkSlot(slot);
    awaited = true;
  } else {
    for (int i = 0; i < touched_count; ++i) {
      MarkSlot(state->slots[touched[i]]);  // P2
      awaited = awaited || Deliverable(state, touched[i]);
    }
  }
  if (touched_count == 0 && !touched_overflow) (void)Raise(&state->workers_wanted);
  // Only events some subscription awaits pace the ticks: publishing to a topic no one
  // delivers now (paused, breaker open) must not slow the ticks of everyone else.
  if (events_enqueued > 0 && awaited) {
    pg_atomic_fetch_add_u64(&state->events_committed, events_enqueued);
  }
  pg_memory_barrier();  // P3
  bool asked = false;   // P4 (or its lazy form)
  if (awaited) {
    asked = Raise(&state->tick_requested);
  } else {
    (void)Raise(&state->lazy_marks);
  }
  if (asked) WakeLauncher();
}

// XACT_EVENT_COMMIT runs after the commit is visible to new snapshots: any tick whose
// snapshot is taken after the launcher reads our seq sees our events.
void OnXactEvent(XactEvent event, void * /*arg*/) {
  switch (event) {
    case XACT_EVENT_COMMIT:
      if (wake_pending) Publish();
      if (readers_pending) WakeReaders();
      Forget();
      break;
    case XACT_EVENT_PRE_PREPARE:
      // COMMIT PREPARED may run in another backend, which would not wake anyone:
      // refuse instead of delivering late.
      if (wake_pending) {
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("evproc cannot enqueue or change subscriptions in a prepared "
                               "transaction")));
      }
      break;
    case XACT_EVENT_PREPARE:  // a reader wake only: the readers' waits end anyway
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
      Forget();
      break;
    default:
      break;
  }
}

// Slots taken from shared memory for a tick that has not been recorded yet (its
// transaction failed): the next attempt lists them again.
bool carried[kPartitionSlots];
int carried_list[kPartitionSlots];
int carried_count = 0;

}  // namespace

bool TickRequested(bool lazy_due) {
  SharedState *state = Shared();
  if (carried_count > 0) return true;
  if (state == nullptr) return false;
  return pg_atomic_read_u32(&state->tick_requested) != 0 ||
         (lazy_due && pg_atomic_read_u32(&state->lazy_marks) != 0);
}

bool TakeWorkersWanted() {
  SharedState *state = Shared();
  return state != nullptr && pg_atomic_read_u32(&state->workers_wanted) != 0 &&
         pg_atomic_exchange_u32(&state->workers_wanted, 0) != 0;
}

// The protocol, and why no commit is missed (issue 12.8: the former one bumped a
// sequence before stamping the slots, so a stamp landing between the launcher's read of
// the sequence and its scan of the slots stayed below what it had ticked, for good).
//
//   publisher, after its commit is visible     launcher, for each tick
//   P1  barrier                                L1  tick_requested := 0   (exchange: barrier)
//   P2  committed[s] := 1 for each slot s      L2  for each s with committed[s] = 1:
//       it wrote (skipped when already 1)           committed[s] := 0 (exchange: barrier),
//   P3  barrier                                     list s
//   P4  if tick_requested = 0 and exchanging   L3  take the tick's snapshot, listing the
//       it for 1 found 0: set launcher's latch      slots; dirty_tick[s] := the tick
//
//  * A mark the launcher takes in L2 was set (P2) after the commit was visible (P1), and
//    the snapshot is taken after L2 (L2's exchange is a barrier; taking a snapshot
//    takes ProcArrayLock): the tick sees the commit. A mark found already set in P2
//    (and so skipped) is taken by an L2 after that read, with the same conclusion.
//  * A mark set after the launcher's L2 looked at its slot stays set until a later L2
//    takes it. There is one: the launcher's L1 came before its L2 read 0, which came
//    before our P2 write; with barriers on both sides (P3, L1) our P4 read cannot return
//    what tick_requested held before L1, so it reads L1's 0 or a later 1. Reading 0 we
//    set it to 1 and set the latch; reading 1, another commit set it after L1 and set
//    (or will set) the latch. Either way the launcher ticks again (it looks at
//    tick_requested after resetting its latch), and that tick's L2 comes after our P2.
//  * Commits on slots no subscription delivers now (Deliverable) raise lazy_marks in P4
//    instead, without the latch; L1 clears it with tick_requested, so the argument
//    above holds for it, and the launcher ticks for lazy marks once a second. A
//    subscription resumed meanwhile is seen at the tick its resume asks for, which
//    takes the lazy marks too (or, for a mark racing with it, within the second).
//  * No request is lost to a failed tick: slots taken for it are carried to the next.
// So every commit's events are in the window of a tick that lists their slot, and a
// commit sets the launcher's latch only when no tick is due yet: under load, once per
// tick, not once per commit.
int TakeCommittedSlots(int *slots) {
  SharedState *state = Shared();
  if (state != nullptr) {
    pg_atomic_exchange_u32(&state->tick_requested, 0);  // L1
    pg_atomic_exchange_u32(&state->lazy_marks, 0);
    for (int i = 0; i < kPartitionSlots; ++i) {  // L2
      PartitionSlot &slot = state->slots[i];
      if (pg_atomic_read_u32(&slot.committed) == 0) continue;
      pg_atomic_exchange_u32(&slot.committed, 0);
      if (!carried[i]) {
        carried[i] = true;
        carried_list[carried_count++] = i;
      }
    }
  }
  std::memcpy(slots, carried_list, sizeof(int) * carried_count);
  return carried_count;
}

int AwaitedSlots(const int *slots, int count) {
  SharedState *state = Shared();
  if (state == nullptr) return count;
  int awaited = 0;
  for (int i = 0; i < count; ++i) awaited += Deliverable(state, slots[i]) ? 1 : 0;
  return awaited;
}

uint64 EventsCommitted() {
  SharedState *state = Shared();
  return state != nullptr ? pg_atomic_read_u64(&state->events_committed) : 0;
}

void CommittedSlotsTicked() {
  for (int i = 0; i < carried_count; ++i) carried[carried_list[i]] = false;
  carried_count = 0;
}

void WakeAtCommit() {
  wake_pending = true;
  readers_pending = true;
}

void WakeReadersAtCommit() { readers_pending = true; }

void SubscriptionsChangedAtCommit() {
  wake_pending = true;
  registry_pending = true;
}

void RegisterCommitWake() { RegisterXactCallback(OnXactEvent, nullptr); }

bool LauncherServesHere() {
  SharedState *state = Shared();
  return state != nullptr && pg_atomic_read_u32(&state->launcher_database) == MyDatabaseId;
}

// Without shared memory (not preloaded), or where no launcher ticks for this database,
// every unit may have work.
int64 DirtyTick(int32 topic_id, int32 partition) {
  SharedState *state = Shared();
  if (!LauncherServesHere()) return PG_INT64_MAX;
  auto &slot = state->slots[SlotOf(topic_id, partition)];
  uint64 dirty = pg_atomic_read_u64(&slot.dirty_tick);
  uint64 floor = pg_atomic_read_u64(&state->floor_tick);
  return static_cast<int64>(dirty > floor ? dirty : floor);
}

void NoteEnqueued(int32 topic_id, int32 partition) {
  wake_pending = true;
  ++events_enqueued;
  if (touched_overflow) return;
  int slot = SlotOf(topic_id, partition);
  for (int i = 0; i < touched_count; ++i) {
    if (touched[i] == slot) return;
  }
  if (touched_count == kTrackedSlots) {
    touched_overflow = true;
    return;
  }
  touched[touched_count++] = slot;
}

}  // namespace evproc

// evproc.set_deliverable(topic_ids int[], partitions int[]): the topics some subscription
// delivers now, with their partition counts (evproc.sync_stats(), in the launcher's
// database). Each word of the slot map is written whole, so a slot that stays
// deliverable never reads as not deliverable meanwhile.
EVPROC_CPP_FUNCTION(evproc_set_deliverable) {
  evproc::SharedState *state = evproc::Shared();
  if (state == nullptr || PG_ARGISNULL(0) || PG_ARGISNULL(1) ||
      pg_atomic_read_u32(&state->launcher_database) != MyDatabaseId) {
    PG_RETURN_VOID();
  }
  Datum *topics = nullptr;
  Datum *partitions = nullptr;
  bool *topic_nulls = nullptr;
  bool *partition_nulls = nullptr;
  int count = 0;
  int partition_count = 0;
  deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), INT4OID, 4, true, TYPALIGN_INT, &topics, &topic_nulls,
                    &count);
  deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), INT4OID, 4, true, TYPALIGN_INT, &partitions,
                    &partition_nulls, &partition_count);
  if (count != partition_count) {
    ereport(ERROR, (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
                    errmsg("topic and partition arrays differ in length")));
  }
  uint64 map[evproc::kPartitionSlots / 64] = {};
  for (int i = 0; i < count; ++i) {
    if (topic_nulls[i] || partition_nulls[i]) continue;
    for (int32 p = 0; p < DatumGetInt32(partitions[i]); ++p) {
      int slot = evproc::SlotOf(DatumGetInt32(topics[i]), p);
      map[slot / 64] |= UINT64CONST(1) << (slot % 64);
    }
  }
  for (int w = 0; w < evproc::kPartitionSlots / 64; ++w) {
    pg_atomic_write_u64(&state->deliverable[w], map[w]);
  }
  pg_memory_barrier();
  pg_atomic_write_u32(&state->deliverable_known, 1);
  PG_RETURN_VOID();
}

// evproc.wake_at_commit(): subscription changes wake the launcher (and so the workers).
EVPROC_CPP_FUNCTION(evproc_wake_at_commit) {
  (void)fcinfo;
  evproc::WakeAtCommit();
  PG_RETURN_VOID();
}

// evproc.subscriptions_changed(): (un)subscribing wakes the launcher and the maintenance
// worker at commit; the latter then registers the change in the metrics at once (not at
// its next periodic sync).
EVPROC_CPP_FUNCTION(evproc_subscriptions_changed) {
  (void)fcinfo;
  evproc::SubscriptionsChangedAtCommit();
  PG_RETURN_VOID();
}

// evproc.dirty_tick(topic_id, partition): see shared_state.hpp.
EVPROC_CPP_FUNCTION(evproc_dirty_tick) {
  PG_RETURN_INT64(evproc::DirtyTick(PG_GETARG_INT32(0), PG_GETARG_INT32(1)));
}

// evproc.slot_of(topic_id, partition): the slot evproc.progress.slot records.
EVPROC_CPP_FUNCTION(evproc_slot_of) {
  PG_RETURN_INT32(evproc::SlotOf(PG_GETARG_INT32(0), PG_GETARG_INT32(1)));
}

EVPROC_CPP_FUNCTION(evproc_preloaded) {
  (void)fcinfo;
  PG_RETURN_BOOL(evproc::Shared() != nullptr);
}

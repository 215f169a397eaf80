#include "commit_wake.hpp"

#include <cstring>

#include "error_boundary.hpp"
#include "shared_state.hpp"

extern "C" {
#include "access/xact.h"
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

void Forget() {
  touched_count = 0;
  touched_overflow = false;
  wake_pending = false;
  registry_pending = false;
}

void StampSlot(PartitionSlot &slot, uint64 seq) {
  uint64 current = pg_atomic_read_u64(&slot.last_commit_seq);
  // An atomic max: a smaller stamp written late must never hide a larger one.
  while (current < seq && !pg_atomic_compare_exchange_u64(&slot.last_commit_seq, &current, seq)) {
  }
}

void Publish() {
  SharedState *state = Shared();
  if (state == nullptr) return;
  if (registry_pending) {
    pg_atomic_fetch_add_u64(&state->registry_seq, 1);
    WakeMaintenance();  // it registers the change in the metrics at once
  }
  uint64 seq = pg_atomic_add_fetch_u64(&state->commit_seq, 1);
  if (touched_overflow) {
    for (auto &slot : state->slots) StampSlot(slot, seq);
  } else {
    for (int i = 0; i < touched_count; ++i) StampSlot(state->slots[touched[i]], seq);
  }
  WakeLauncher();
}

// XACT_EVENT_COMMIT runs after the commit is visible to new snapshots: any tick whose
// snapshot is taken after the launcher reads our seq sees our events.
void OnXactEvent(XactEvent event, void * /*arg*/) {
  switch (event) {
    case XACT_EVENT_COMMIT:
      if (wake_pending) Publish();
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
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
      Forget();
      break;
    default:
      break;
  }
}

}  // namespace

void WakeAtCommit() { wake_pending = true; }

void SubscriptionsChangedAtCommit() {
  wake_pending = true;
  registry_pending = true;
}

void RegisterCommitWake() { RegisterXactCallback(OnXactEvent, nullptr); }

void NoteEnqueued(int32 topic_id, int32 partition) {
  wake_pending = true;
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

// evproc.dirty_tick(topic_id, partition): see shared_state.hpp. Without shared memory
// (not preloaded) every unit may have work.
EVPROC_CPP_FUNCTION(evproc_dirty_tick) {
  evproc::SharedState *state = evproc::Shared();
  if (state == nullptr || pg_atomic_read_u32(&state->launcher_database) != MyDatabaseId) {
    PG_RETURN_INT64(PG_INT64_MAX);
  }
  auto &slot = state->slots[evproc::SlotOf(PG_GETARG_INT32(0), PG_GETARG_INT32(1))];
  uint64 dirty = pg_atomic_read_u64(&slot.dirty_tick);
  uint64 floor = pg_atomic_read_u64(&state->floor_tick);
  PG_RETURN_INT64(static_cast<int64>(dirty > floor ? dirty : floor));
}

EVPROC_CPP_FUNCTION(evproc_preloaded) {
  (void)fcinfo;
  PG_RETURN_BOOL(evproc::Shared() != nullptr);
}

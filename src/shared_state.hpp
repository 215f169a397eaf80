// evproc's shared memory (docs/design.md "Processes"): what committers, the launcher and the
// workers tell each other without touching a table.
//
//  * Commit wake (src/commit_wake.cpp, where the protocol and why it loses nothing are
//    described): a transaction that enqueued marks the slots of the (topic, partition)
//    pairs it wrote, after its commit became visible, and asks for a tick, setting the
//    launcher's latch only when no tick was asked for yet. The launcher takes the marks
//    before each tick's snapshot and sets the marked slots' dirty_tick = that tick.
//    Commits on partitions no subscription delivers now (paused, breaker open, none)
//    only mark their slots: the next tick, or one a second, takes those marks.
//  * Readers of pull subscriptions waiting in evproc_read register their latch in
//    reader_procno; ticks and lease acknowledgements set it.
//  * Workers claim a unit only when its position is older than its slot's dirty_tick (or
//    floor_tick, which covers everything committed before the launcher started), so idle
//    units cost nothing. Slots are a fixed hash of (topic, partition): a collision only
//    makes a unit look busy, never idle.
//  * Ready hints (core/ready_hints.hpp): the launcher names the units its tick marked
//    ready, after its commit, and a worker the unit it left ready, after its batch's;
//    workers claim a hinted unit by its key.
#pragma once

#include <cstdint>

#include "core/ready_hints.hpp"
#include "metrics.hpp"
#include "pg_headers.hpp"

extern "C" {
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
}

namespace evproc {

constexpr int kPartitionSlots = 4096;
constexpr int kMaxWorkers = 64;
// Backends waiting in evproc_read for events (lease_wait.hpp); more wait in short slices.
constexpr int kMaxReaders = 1024;
constexpr uint32 kNoProc = UINT32_MAX;
static_assert(metrics::kMaxWorkerSlots == kMaxWorkers, "one status slot per worker");

struct PartitionSlot {
  pg_atomic_uint32 committed;   // 1: a commit wrote here since the launcher looked
  pg_atomic_uint64 dirty_tick;  // newest tick that may hold events of this slot
};

struct SharedState {
  pg_atomic_uint32 tick_requested;  // 1: slots were marked since the launcher last looked
  pg_atomic_uint32 lazy_marks;      // 1: marked by commits that no subscription awaits now
  pg_atomic_uint32 workers_wanted;  // 1: a commit changed subscriptions: wake every worker
  // Slots of the (topic, partition) pairs some subscription delivers now (not paused,
  // breaker closed), set by evproc.sync_stats(); until deliverable_known, all of them.
  pg_atomic_uint32 deliverable_known;
  pg_atomic_uint64 deliverable[kPartitionSlots / 64];
  pg_atomic_uint64 floor_tick;          // every unit older than this may have work
  pg_atomic_uint64 registry_seq;        // bumped by commits that (un)subscribed
  pg_atomic_uint32 launcher_procno;     // kNoProc when no launcher runs
  pg_atomic_uint32 maintenance_procno;  // kNoProc when no maintenance worker runs
  pg_atomic_uint32 registry_database;   // whose subscriptions the metrics registered
  pg_atomic_uint32 launcher_database;   // the database it serves, once it ticked
  pg_atomic_uint32 database_state;      // the database check's answer (database_check.hpp)
  pg_atomic_uint32 leave_database;      // dropped, renamed or moved: the launcher leaves it
  pg_atomic_uint32 leave_reason;        // why (utility_hook.hpp LeaveReason)
  pg_atomic_uint32 worker_procno[kMaxWorkers];
  pg_atomic_uint32 worker_idle[kMaxWorkers];    // 1: about to look for work, or asleep
  pg_atomic_uint32 worker_asleep[kMaxWorkers];  // 1: found no work, waits on its latch
  pg_atomic_uint32 reader_procno[kMaxReaders];  // kNoProc: free
  pg_atomic_uint32 reader_wakes;                // counts WakeReaders calls
  // Events committed, a running total for the ticks' pace (core/tick_pace.hpp). On a
  // cache line of its own: every publishing commit adds to it, while the flags above
  // are read first and written rarely, so that their line stays shared.
  alignas(PG_CACHE_LINE_SIZE) pg_atomic_uint64 events_committed;
  alignas(PG_CACHE_LINE_SIZE) slock_t hints_lock;
  core::ReadyHints hints;
  pg_atomic_uint32 hints_lost;  // counts the times hints were lost (HintsLost)
  alignas(PG_CACHE_LINE_SIZE) PartitionSlot slots[kPartitionSlots];
  metrics::Metrics metrics;
};

// nullptr unless evproc was loaded by shared_preload_libraries.
SharedState *Shared();

void RequestSharedState();  // from _PG_init, preload only
LWLock *SharedLock();       // guards claiming and freeing metrics slots
int SlotOf(int32 topic_id, int32 partition);
void SetProcLatch(uint32 procno);
void WakeLauncher();
// A worker about to look for a unit raises its idle flag first (a tick's wake lowers
// it): a worker that looks after a tick's marks sees them, one that looked before is
// idle and is woken. Wakes up to `wanted` idle workers (lowering their flags).
void NoteWorkerLooking(int index);
void NoteWorkerBusy(int index);
int WakeIdleWorkers(int wanted);  // returns how many it woke
// Whether a wake lowered the flag the worker raised before its look. The flag, not the
// latch, is what records the wake: a lock wait inside the look sleeps on the same latch
// and resets it (ProcSleep), so a worker that trusted its latch would sleep through the
// only wake it gets (t/025_flag_under_lock.pl).
bool WokenWhileLooking(int index);
// A worker that found no work and goes to sleep says so, and wakes the launcher if
// commits await a tick: while a worker waits, ticks do not wait for the interval that
// busy workers widened (core/tick_pace.hpp). Cleared when it wakes.
void NoteWorkerAsleep(int index, bool asleep);
bool AnyWorkerAsleep();
void WakeReaders();      // the waiting readers of pull subscriptions look for work
void WakeMaintenance();  // the metrics registry must follow (un)subscribing at once
// How many times readers were woken: a reader that saw this change during its look looks
// again instead of waiting (a lock wait in the look may have reset its latch).
uint32 ReaderWakes();
// Names a unit that may have work (after the commit that made it ready); a full ring
// drops the hint, and the claim that reads every ready unit finds the unit instead.
void HintReady(int32 subscription_id, int32 partition);
// The oldest hint, if any.
bool TakeReadyHint(int32 *subscription_id, int32 *partition);
// Units ready with no hint (a full ring, a start, SQL that made units ready): every
// worker reads every ready unit until that finds none.
void HintsLost();
// How many times hints were lost: a worker that sees it change reads every ready unit.
uint32 HintsLostCount();

}  // namespace evproc

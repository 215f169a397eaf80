#include "shared_state.hpp"

#include "pg_compat.hpp"

extern "C" {
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
}

namespace evproc {
namespace {

SharedState *shared = nullptr;
LWLock *shared_lock = nullptr;
shmem_request_hook_type previous_request_hook = nullptr;
shmem_startup_hook_type previous_startup_hook = nullptr;

void RequestHook() {
  if (previous_request_hook != nullptr) previous_request_hook();
  RequestAddinShmemSpace(sizeof(SharedState));
  RequestNamedLWLockTranche("evproc", 1);
}

void StartupHook() {
  if (previous_startup_hook != nullptr) previous_startup_hook();
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  bool found = false;
  shared = static_cast<SharedState *>(ShmemInitStruct("evproc", sizeof(SharedState), &found));
  if (!found) {
    pg_atomic_init_u32(&shared->tick_requested, 0);
    pg_atomic_init_u32(&shared->lazy_marks, 0);
    pg_atomic_init_u64(&shared->events_committed, 0);
    pg_atomic_init_u32(&shared->workers_wanted, 0);
    pg_atomic_init_u32(&shared->deliverable_known, 0);
    for (auto &word : shared->deliverable) pg_atomic_init_u64(&word, 0);
    pg_atomic_init_u64(&shared->floor_tick, 0);
    pg_atomic_init_u64(&shared->registry_seq, 0);
    pg_atomic_init_u32(&shared->launcher_procno, kNoProc);
    pg_atomic_init_u32(&shared->maintenance_procno, kNoProc);
    pg_atomic_init_u32(&shared->registry_database, InvalidOid);
    pg_atomic_init_u32(&shared->launcher_database, InvalidOid);
    pg_atomic_init_u32(&shared->database_state, 0);
    pg_atomic_init_u32(&shared->leave_database, InvalidOid);
    pg_atomic_init_u32(&shared->leave_reason, 0);
    for (auto &procno : shared->worker_procno) pg_atomic_init_u32(&procno, kNoProc);
    for (auto &idle : shared->worker_idle) pg_atomic_init_u32(&idle, 0);
    for (auto &asleep : shared->worker_asleep) pg_atomic_init_u32(&asleep, 0);
    for (auto &procno : shared->reader_procno) pg_atomic_init_u32(&procno, kNoProc);
    pg_atomic_init_u32(&shared->reader_wakes, 0);
    for (auto &slot : shared->slots) {
      pg_atomic_init_u32(&slot.committed, 0);
      pg_atomic_init_u64(&slot.dirty_tick, 0);
    }
    SpinLockInit(&shared->hints_lock);
    shared->hints = core::ReadyHints{};
    pg_atomic_init_u32(&shared->hints_lost, 0);
    metrics::InitMetrics(&shared->metrics);
  }
  shared_lock = &GetNamedLWLockTranche("evproc")->lock;
  LWLockRelease(AddinShmemInitLock);
}

}  // namespace

SharedState *Shared() { return shared; }

LWLock *SharedLock() { return shared_lock; }

void RequestSharedState() {
  previous_request_hook = shmem_request_hook;
  shmem_request_hook = RequestHook;
  previous_startup_hook = shmem_startup_hook;
  shmem_startup_hook = StartupHook;
}

int SlotOf(int32 topic_id, int32 partition) {
  uint64 mixed =
      (static_cast<uint64>(static_cast<uint32>(topic_id)) << 32) | static_cast<uint32>(partition);
  mixed *= UINT64CONST(0x9E3779B97F4A7C15);  // Fibonacci hashing spreads neighbours
  static_assert(kPartitionSlots == 1 << 12, "the shift below takes 12 bits");
  return static_cast<int>(mixed >> 52);  // top 12 bits
}

void SetProcLatch(uint32 procno) {
  if (procno != kNoProc) SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

void WakeLauncher() {
  if (shared != nullptr) SetProcLatch(pg_atomic_read_u32(&shared->launcher_procno));
}

void WakeMaintenance() {
  if (shared != nullptr) SetProcLatch(pg_atomic_read_u32(&shared->maintenance_procno));
}

void NoteWorkerLooking(int index) {
  if (shared == nullptr || index < 0 || index >= kMaxWorkers) return;
  pg_atomic_write_u32(&shared->worker_idle[index], 1);
  pg_memory_barrier();  // before the look at the ticks and dirty slots
}

void NoteWorkerBusy(int index) {
  if (shared == nullptr || index < 0 || index >= kMaxWorkers) return;
  pg_atomic_write_u32(&shared->worker_idle[index], 0);
  pg_atomic_write_u32(&shared->worker_asleep[index], 0);
}

void NoteWorkerAsleep(int index, bool asleep) {
  if (shared == nullptr || index < 0 || index >= kMaxWorkers) return;
  pg_atomic_write_u32(&shared->worker_asleep[index], asleep ? 1 : 0);
  if (!asleep) return;
  pg_memory_barrier();  // the flag before the look at the request (the launcher reads
                        // the flags after it took the request)
  if (pg_atomic_read_u32(&shared->tick_requested) != 0) WakeLauncher();
}

bool WokenWhileLooking(int index) {
  if (shared == nullptr || index < 0 || index >= kMaxWorkers) return false;
  pg_memory_barrier();  // the look's reads before this one
  return pg_atomic_read_u32(&shared->worker_idle[index]) == 0;
}

bool AnyWorkerAsleep() {
  if (shared == nullptr) return false;
  for (auto &asleep : shared->worker_asleep) {
    if (pg_atomic_read_u32(&asleep) != 0) return true;
  }
  return false;
}

// After the tick committed and its slots were marked dirty (the barrier orders those
// writes before the reads of the idle flags).
int WakeIdleWorkers(int wanted) {
  if (shared == nullptr) return 0;
  pg_memory_barrier();
  int woken = 0;
  for (int i = 0; i < kMaxWorkers && woken < wanted; ++i) {
    if (pg_atomic_read_u32(&shared->worker_idle[i]) == 0) continue;
    if (pg_atomic_exchange_u32(&shared->worker_idle[i], 0) == 0) continue;
    SetProcLatch(pg_atomic_read_u32(&shared->worker_procno[i]));
    ++woken;
  }
  return woken;
}

uint32 ReaderWakes() {
  if (shared == nullptr) return 0;
  pg_memory_barrier();
  return pg_atomic_read_u32(&shared->reader_wakes);
}

void WakeReaders() {
  if (shared == nullptr) return;
  pg_atomic_fetch_add_u32(&shared->reader_wakes, 1);  // a full barrier, before the latches
  // Not ourselves: we are not waiting, and a sink worker woken by its own
  // acknowledgement would look for work once more for nothing (sink_worker.cpp).
  uint32 self = MyProc != nullptr ? compat::MyProcIndex() : kNoProc;
  for (auto &slot : shared->reader_procno) {
    uint32 procno = pg_atomic_read_u32(&slot);
    if (procno != self) SetProcLatch(procno);
  }
}

void HintReady(int32 subscription_id, int32 partition) {
  if (shared == nullptr) return;
  SpinLockAcquire(&shared->hints_lock);
  bool kept = shared->hints.Push(core::UnitKey{subscription_id, partition});
  SpinLockRelease(&shared->hints_lock);
  if (!kept) HintsLost();
}

void HintsLost() {
  if (shared != nullptr) pg_atomic_fetch_add_u32(&shared->hints_lost, 1);
}

uint32 HintsLostCount() { return shared != nullptr ? pg_atomic_read_u32(&shared->hints_lost) : 0; }

bool TakeReadyHint(int32 *subscription_id, int32 *partition) {
  if (shared == nullptr) return false;
  core::UnitKey unit{};
  SpinLockAcquire(&shared->hints_lock);
  bool taken = shared->hints.Pop(&unit);
  SpinLockRelease(&shared->hints_lock);
  *subscription_id = unit.subscription_id;
  *partition = unit.partition;
  return taken;
}

}  // namespace evproc

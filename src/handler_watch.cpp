#include "handler_watch.hpp"

#include <algorithm>
#include <cstring>

#include "pg_compat.hpp"
#include "settings.hpp"
#include "shared_state.hpp"

extern "C" {
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
}

namespace evproc {
namespace {

enum WatchState : uint32 { kIdle = 0, kCalling = 1, kExpired = 2 };

// What one worker calls (written by that worker only; `state` also by its timer).
struct WatchedCall {
  pg_atomic_uint32 state;
  Oid database;
  int32 subscription_id;
  int32 partition;
  int32 grace_ms;
  int32 count;
  int64 ids[kMostWatchedEvents];
};

// A call that expired, waiting for the next batch of its unit.
struct Charge {
  bool used;
  Oid database;
  int32 subscription_id;
  int32 partition;
  int32 count;
  int64 ids[kMostWatchedEvents];
};

struct HandlerWatch {
  slock_t mutex;  // guards charges
  WatchedCall calls[kMaxWorkers];
  Charge charges[kMaxWorkers];
};

HandlerWatch *watch = nullptr;
shmem_request_hook_type previous_request_hook = nullptr;
shmem_startup_hook_type previous_startup_hook = nullptr;

// This process's slot (a delivery worker's), or nullptr.
WatchedCall *my_call = nullptr;
bool looked_for_slot = false;
TimeoutId watchdog = MAX_TIMEOUTS;

void RequestHook() {
  if (previous_request_hook != nullptr) previous_request_hook();
  RequestAddinShmemSpace(sizeof(HandlerWatch));
}

void StartupHook() {
  if (previous_startup_hook != nullptr) previous_startup_hook();
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  bool found = false;
  watch = static_cast<HandlerWatch *>(
      ShmemInitStruct("evproc handler watch", sizeof(HandlerWatch), &found));
  if (!found) {
    std::memset(static_cast<void *>(watch), 0, sizeof(HandlerWatch));
    SpinLockInit(&watch->mutex);
    for (auto &call : watch->calls) pg_atomic_init_u32(&call.state, kIdle);
  }
  LWLockRelease(AddinShmemInitLock);
}

// Signal handler context (the timer): mark the call expired and die as SIGTERM would.
void WatchdogFired() {
  if (my_call != nullptr) pg_atomic_write_u32(&my_call->state, kExpired);
  die(SIGTERM);
}

// on_shmem_exit: an expired call becomes a charge for the unit's next batch.
void RecordExpiredCall(int /*code*/, Datum /*arg*/) {
  if (my_call == nullptr || pg_atomic_read_u32(&my_call->state) != kExpired) return;
  bool recorded = false;
  SpinLockAcquire(&watch->mutex);
  for (auto &charge : watch->charges) {
    if (charge.used) continue;
    charge.used = true;
    charge.database = my_call->database;
    charge.subscription_id = my_call->subscription_id;
    charge.partition = my_call->partition;
    charge.count = my_call->count;
    std::memcpy(charge.ids, my_call->ids, sizeof(int64) * static_cast<size_t>(my_call->count));
    recorded = true;
    break;
  }
  SpinLockRelease(&watch->mutex);
  ereport(LOG, (errmsg("evproc: a handler of subscription %d ran past its handler_timeout plus "
                       "%d ms; its worker ended itself%s",
                       my_call->subscription_id, my_call->grace_ms,
                       recorded ? ", and its events are charged an attempt"
                                : " (no room to charge its events)")));
  pg_atomic_write_u32(&my_call->state, kIdle);
}

void FindMySlot() {
  looked_for_slot = true;
  watchdog = RegisterTimeout(USER_TIMEOUT, WatchdogFired);
  if (watch == nullptr || Shared() == nullptr || !IsBackgroundWorker) return;
  uint32 me = compat::MyProcIndex();
  for (int i = 0; i < kMaxWorkers; ++i) {
    if (pg_atomic_read_u32(&Shared()->worker_procno[i]) == me) {
      my_call = &watch->calls[i];
      pg_atomic_write_u32(&my_call->state, kIdle);
      on_shmem_exit(RecordExpiredCall, 0);
      return;
    }
  }
}

}  // namespace

void RequestHandlerWatch() {
  previous_request_hook = shmem_request_hook;
  shmem_request_hook = RequestHook;
  previous_startup_hook = shmem_startup_hook;
  shmem_startup_hook = StartupHook;
}

void WatchCall(int32 subscription_id, int32 partition, const int64 *ids, int count,
               int timeout_ms) {
  if (!looked_for_slot) FindMySlot();
  if (my_call != nullptr) {
    my_call->database = MyDatabaseId;
    my_call->subscription_id = subscription_id;
    my_call->partition = partition;
    my_call->count = std::min(count, kMostWatchedEvents);
    std::memcpy(my_call->ids, ids, sizeof(int64) * static_cast<size_t>(my_call->count));
    pg_write_barrier();
    pg_atomic_write_u32(&my_call->state, kCalling);
  }
  if (my_call != nullptr) my_call->grace_ms = handler_grace_ms;
  int64 due_ms = static_cast<int64>(timeout_ms) + handler_grace_ms;
  enable_timeout_after(watchdog, static_cast<int>(std::min<int64>(due_ms, INT_MAX)));
}

void WatchEvent(int64 id) {
  if (my_call == nullptr) return;
  my_call->ids[0] = id;
  my_call->count = 1;
}

void UnwatchCall() {
  if (!looked_for_slot) return;
  disable_timeout(watchdog, false);
  if (my_call != nullptr) pg_atomic_write_u32(&my_call->state, kIdle);
}

ChargedEvents TakeCharges(int32 subscription_id, int32 partition, MemoryContext context) {
  ChargedEvents taken{nullptr, 0};
  if (watch == nullptr) return taken;
  SpinLockAcquire(&watch->mutex);
  int total = 0;
  for (const auto &charge : watch->charges) {
    if (charge.used && charge.database == MyDatabaseId &&
        charge.subscription_id == subscription_id && charge.partition == partition)
      total += charge.count;
  }
  SpinLockRelease(&watch->mutex);
  if (total == 0) return taken;
  // Allocated outside the spinlock; charges only grow while we look (a worker exiting
  // adds one), and those added meanwhile are taken by the next batch.
  auto *ids = static_cast<int64 *>(MemoryContextAlloc(context, sizeof(int64) * total));
  SpinLockAcquire(&watch->mutex);
  for (auto &charge : watch->charges) {
    if (!charge.used || charge.database != MyDatabaseId ||
        charge.subscription_id != subscription_id || charge.partition != partition)
      continue;
    if (taken.count + charge.count > total) continue;
    std::memcpy(ids + taken.count, charge.ids, sizeof(int64) * static_cast<size_t>(charge.count));
    taken.count += charge.count;
    charge.used = false;
  }
  SpinLockRelease(&watch->mutex);
  std::sort(ids, ids + taken.count);
  taken.ids = ids;
  return taken;
}

}  // namespace evproc

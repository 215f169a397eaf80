// A delivery worker: claims units and delivers batches until told to stop.
//
// Errors of evproc's own statements (not of handlers, which delivery isolates) abort the
// batch's transaction and are logged; the worker waits a second and goes on, so a lost
// lock never turns into a crash loop. A dropped extension is no error: each batch enters
// the extension gate first (extension_gate.hpp), and without the extension the worker idles
// until the launcher stops it. Stopped between batches, it leaves with a LOG line.
#include <csetjmp>
#include <cstring>
#include <new>

#include "background.hpp"
#include "delivery.hpp"
#include "error_boundary.hpp"
#include "metrics.hpp"
#include "pg_compat.hpp"
#include "shared_state.hpp"

extern "C" {
#include "access/xact.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
}

namespace {

constexpr long kIdleWaitMs = 60000L;
constexpr long kErrorPauseMs = 1000;
constexpr long kHeldElsewhereWaitMs = 1000;

int worker_index = -1;

void ForgetWorkerSlot(int /*code*/, Datum /*arg*/) {
  evproc::NoteWorkerBusy(worker_index);  // gone: not among the idle ones ticks wake
  evproc::metrics::WorkerStopped(worker_index);
  if (evproc::Shared() != nullptr && worker_index >= 0) {
    pg_atomic_write_u32(&evproc::Shared()->worker_procno[worker_index], evproc::kNoProc);
  }
}

struct GuardedBatch {
  evproc::BatchResult result;
  ErrorData *error;
  bool other_failure;
  char message[256];
};

// The C++ side of the loop: every C++ frame is gone when this returns.
void RunBatch(GuardedBatch *out) noexcept {
  out->error = nullptr;
  out->other_failure = false;
  try {
    out->result = evproc::RunOneBatch();
  } catch (const evproc::pg::PgError &error) {
    out->error = error.data();
  } catch (const std::bad_alloc &) {
    out->other_failure = true;
    std::strncpy(out->message, "out of memory", sizeof(out->message) - 1);
  } catch (const std::exception &error) {
    out->other_failure = true;
    std::strncpy(out->message, error.what(), sizeof(out->message) - 1);
  }
}

// How long to sleep when no unit could be claimed. A retry already due that we could not
// claim is held by another worker, which will run it: no reason to spin.
long MillisecondsUntil(TimestampTz due) {
  if (due == 0) return kIdleWaitMs;
  TimestampTz now = GetCurrentTimestamp();
  if (due <= now) return kHeldElsewhereWaitMs;
  long wait = TimestampDifferenceMilliseconds(now, due);
  if (wait < 1) wait = 1;
  return wait > kIdleWaitMs ? kIdleWaitMs : wait;
}

// A batch's commit carries its handler's effects and its progress together: if a crash
// loses it, both are lost and the batch is simply delivered again.
void ApplyCommitSetting() {
  SetConfigOption("synchronous_commit", evproc::worker_synchronous_commit ? "on" : "off", PGC_SUSET,
                  PGC_S_OVERRIDE);
}

}  // namespace

extern "C" void evproc_worker_main(Datum main_arg) {
  worker_index = DatumGetInt32(main_arg);
  Oid database = InvalidOid;
  std::memcpy(&database, MyBgworkerEntry->bgw_extra, sizeof(Oid));

  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);  // a batch in flight rolls back at its next interrupt check
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnectionByOid(database, InvalidOid, 0);
  pgstat_report_appname("evproc worker");
  ApplyCommitSetting();

  if (evproc::Shared() != nullptr && worker_index >= 0 && worker_index < evproc::kMaxWorkers) {
    pg_atomic_write_u32(&evproc::Shared()->worker_procno[worker_index],
                        evproc::compat::MyProcIndex());
    on_shmem_exit(ForgetWorkerSlot, 0);
    evproc::metrics::WorkerStarted(worker_index);
  }
  ereport(LOG, (errmsg("evproc worker %d started", worker_index)));

  sigjmp_buf recover;
  if (sigsetjmp(recover, 1) != 0) {
    evproc::RecoverFromError();
    evproc::SleepOnLatch(kErrorPauseMs);
  }
  PG_exception_stack = &recover;

  for (;;) {
    // SIGTERM between batches (the launcher stopping workers, a shutdown): nothing is in
    // flight, so a plain line and exit code 0 instead of die()'s FATAL. Inside a batch,
    // die() rolls the batch back at its next interrupt check as before.
    if (ProcDiePending) {
      // Held: ereport and the exit callbacks check for interrupts, and the pending die()
      // would turn the exit into a FATAL.
      HOLD_INTERRUPTS();
      ereport(LOG, (errmsg("evproc worker %d stopped", worker_index)));
      proc_exit(0);
    }
    CHECK_FOR_INTERRUPTS();
    evproc::ReportStats();  // a busy loop may not sleep for a long time
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
      ApplyCommitSetting();
    }
    // Raised before the look: a tick marked after it finds this worker idle and wakes it.
    evproc::NoteWorkerLooking(worker_index);
    GuardedBatch batch{};
    RunBatch(&batch);
    if (batch.error != nullptr) {
      evproc::metrics::WorkerError(batch.error->message);
      ReThrowError(batch.error);
    }
    if (batch.other_failure) {
      evproc::metrics::WorkerError(batch.message);
      elog(ERROR, "evproc worker: %s", batch.message);
    }
    if (batch.result.worked) {
      evproc::metrics::WorkerBatchDone(batch.result.delivered + batch.result.failed);
      continue;
    }
    // Woken during the look (a tick marked units after the look's snapshot): look again
    // rather than sleep on a latch a lock wait in the look may have reset.
    if (evproc::WokenWhileLooking(worker_index)) continue;
    evproc::metrics::WorkerIdle();
    evproc::NoteWorkerAsleep(worker_index, true);
    evproc::SleepOnLatch(MillisecondsUntil(batch.result.next_due));
    evproc::NoteWorkerAsleep(worker_index, false);
  }
}

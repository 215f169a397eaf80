// What the launcher, the delivery workers and the maintenance worker do alike as
// PostgreSQL background processes.
#include "background.hpp"

#include <cstring>

extern "C" {
#include "access/xact.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
}

namespace evproc {

void RecoverFromError() {
  // Same recovery as PostgreSQL's own background processes after a longjmp.
  error_context_stack = nullptr;
  HOLD_INTERRUPTS();
  disable_all_timeouts(false);
  EmitErrorReport();
  AbortCurrentTransaction();
  FlushErrorState();
  MemoryContextSwitchTo(TopMemoryContext);
  RESUME_INTERRUPTS();
}

// A backend flushes its statistics when it goes idle; background processes have no such
// loop. Without this, autovacuum never hears of the ticks, progress updates and dedup ids
// evproc's processes insert, update and delete, and never vacuums those tables. Flushes
// at most once a second (PGSTAT_MIN_INTERVAL); returns how many ms until a flush of what
// is still pending is due (0: nothing pending).
long ReportStats() { return pgstat_report_stat(false); }

void SleepOnLatch(long milliseconds) {
  long stats_due = ReportStats();
  if (stats_due > 0 && stats_due < milliseconds) milliseconds = stats_due;
  (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, milliseconds,
                  PG_WAIT_EXTENSION);
  ResetLatch(MyLatch);
}

bool StartDatabaseWorker(const char *function, const char *name, const char *type, int index,
                         BackgroundWorkerHandle **handle) {
  BackgroundWorker worker{};
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  worker.bgw_restart_time = BGW_NEVER_RESTART;  // the launcher restarts it
  std::strncpy(worker.bgw_library_name, "evproc", BGW_MAXLEN - 1);
  std::strncpy(worker.bgw_function_name, function, BGW_MAXLEN - 1);
  std::strncpy(worker.bgw_name, name, BGW_MAXLEN - 1);
  std::strncpy(worker.bgw_type, type, BGW_MAXLEN - 1);
  worker.bgw_main_arg = Int32GetDatum(index);
  worker.bgw_notify_pid = MyProcPid;
  std::memcpy(worker.bgw_extra, &MyDatabaseId, sizeof(Oid));
  MemoryContext previous = MemoryContextSwitchTo(TopMemoryContext);
  bool started = RegisterDynamicBackgroundWorker(&worker, handle);
  MemoryContextSwitchTo(previous);
  if (!started) *handle = nullptr;
  return started;
}

void StopDatabaseWorker(BackgroundWorkerHandle **handle) {
  if (*handle == nullptr) return;
  TerminateBackgroundWorker(*handle);
  pfree(*handle);
  *handle = nullptr;
}

}  // namespace evproc

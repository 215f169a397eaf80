// The maintenance worker: one dynamic background worker that the launcher starts in the
// database it serves (and restarts, like the delivery workers), so that nothing it does
// can delay a tick.
//
//  * Metrics: every second, and at once when a commit (un)subscribed (commit_wake.cpp
//    sets its latch), evproc.sync_stats() registers new subscriptions in shared memory
//    (counting their backlog once, evproc.count_pending) and forgets dropped ones.
//  * Maintenance: at start and then every evproc.maintenance_interval, evproc.maintain()
//    forgets ticks no unit needs and expired dedup ids, moves idle units on, forgets
//    grants to dropped roles, keeps log partitions created ahead and drops those past
//    retention (extension/operations.sql, extension/retention.sql). None of its
//    statements waits for a lock an application can hold: what is locked is left to the
//    next run.
//
// Each statement runs in its own transaction inside the extension gate
// (extension_gate.hpp); with the gate closed (a DROP EXTENSION) the worker idles until
// the launcher stops it. An ERROR of a run is logged and the worker goes on after a
// pause. Stopped between runs, it leaves with a LOG line.
#include <csetjmp>
#include <cstring>

#include "background.hpp"
#include "extension_gate.hpp"
#include "pg_compat.hpp"
#include "shared_state.hpp"

extern "C" {
#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace {

constexpr long kErrorPauseMs = 1000;
constexpr long kGateClosedWaitMs = 1000;
constexpr int64 kSyncIntervalUs = USECS_PER_SEC;

void ForgetProcno(int /*code*/, Datum /*arg*/) {
  if (evproc::Shared() != nullptr) {
    pg_atomic_write_u32(&evproc::Shared()->maintenance_procno, evproc::kNoProc);
  }
}

// Runs one statement in its own transaction inside the extension gate, shown as
// `activity` in pg_stat_activity. False when the gate was closed.
bool RunStatement(const char *statement, const char *activity) {
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  if (evproc::EnterExtension(nullptr) != evproc::ExtensionGate::kInstalled) {
    CommitTransactionCommand();
    return false;
  }
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc maintenance: SPI_connect failed");
  PushActiveSnapshot(GetTransactionSnapshot());
  pgstat_report_activity(STATE_RUNNING, activity);
  if (SPI_execute(statement, false, 0) != SPI_OK_SELECT) {
    elog(ERROR, "evproc maintenance: %s failed", activity);
  }
  PopActiveSnapshot();
  SPI_finish();
  CommitTransactionCommand();
  pgstat_report_activity(STATE_IDLE, nullptr);
  return true;
}

}  // namespace

extern "C" void evproc_maintenance_main(Datum /*main_arg*/) {
  Oid database = InvalidOid;
  std::memcpy(&database, MyBgworkerEntry->bgw_extra, sizeof(Oid));

  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);  // a run in flight rolls back at its next interrupt check
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnectionByOid(database, InvalidOid, 0);
  pgstat_report_appname("evproc maintenance");

  evproc::SharedState *state = evproc::Shared();
  if (state != nullptr) {
    pg_atomic_write_u32(&state->maintenance_procno, evproc::compat::MyProcIndex());
    on_shmem_exit(ForgetProcno, 0);
  }
  ereport(LOG, (errmsg("evproc maintenance worker started")));

  // Statics: they keep their values across the longjmp below.
  static TimestampTz next_sync = 0;
  static TimestampTz next_maintenance = 0;
  static TimestampTz last_maintenance = 0;
  static uint64 synced_registry = 0;

  sigjmp_buf recover;
  if (sigsetjmp(recover, 1) != 0) {
    evproc::RecoverFromError();
    evproc::SleepOnLatch(kErrorPauseMs);
  }
  PG_exception_stack = &recover;

  for (;;) {
    // SIGTERM between runs (the launcher stopping it, a shutdown): a plain line and exit
    // code 0 instead of die()'s FATAL, as a delivery worker does.
    if (ProcDiePending) {
      HOLD_INTERRUPTS();
      ereport(LOG, (errmsg("evproc maintenance worker stopped")));
      proc_exit(0);
    }
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
      // A shorter evproc.maintenance_interval applies from the last run, not the next.
      TimestampTz due =
          last_maintenance + static_cast<int64>(evproc::maintenance_interval_s) * USECS_PER_SEC;
      if (last_maintenance != 0 && due < next_maintenance) next_maintenance = due;
    }
    TimestampTz now = GetCurrentTimestamp();
    uint64 registry = state != nullptr ? pg_atomic_read_u64(&state->registry_seq) : 0;
    // First the registry (its first run counts every subscription's backlog), then
    // maintenance. The next run of each is set before it starts: a run that fails is
    // not repeated at once.
    if (now >= next_sync || registry != synced_registry) {
      synced_registry = registry;
      next_sync = now + kSyncIntervalUs;
      if (!RunStatement("SELECT evproc.sync_stats()", "evproc metrics registry")) {
        next_sync = 0;
        evproc::SleepOnLatch(kGateClosedWaitMs);
        continue;
      }
      // The launcher starts the delivery workers now (their backlog is counted).
      if (state != nullptr &&
          pg_atomic_exchange_u32(&state->registry_database, MyDatabaseId) != MyDatabaseId) {
        evproc::WakeLauncher();
      }
    }
    if (now >= next_maintenance) {
      last_maintenance = now;
      next_maintenance = now + static_cast<int64>(evproc::maintenance_interval_s) * USECS_PER_SEC;
      if (!RunStatement("SELECT evproc.maintain()", "evproc maintenance")) {
        next_maintenance = 0;
        evproc::SleepOnLatch(kGateClosedWaitMs);
        continue;
      }
    }
    now = GetCurrentTimestamp();
    TimestampTz next = next_sync < next_maintenance ? next_sync : next_maintenance;
    long wait = TimestampDifferenceMilliseconds(now, next);
    evproc::SleepOnLatch(wait < 1 ? 1 : wait);
  }
}

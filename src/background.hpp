// evproc's background processes (docs/design.md "Processes"): the launcher (static, one per server,
// connected to evproc.database), its pool of delivery workers and its maintenance worker
// (both dynamic); before it connects, the launcher checks the database with a
// short-lived worker (database_check.hpp).
#pragma once

#include "pg_headers.hpp"
#include "settings.hpp"

extern "C" {
#include "postmaster/bgworker.h"
}

extern "C" {
PGDLLEXPORT void evproc_launcher_main(Datum main_arg);
PGDLLEXPORT void evproc_worker_main(Datum main_arg);
PGDLLEXPORT void evproc_maintenance_main(Datum main_arg);
}

namespace evproc {

// After an ERROR longjmp'd to a background process's main loop: report it, abort the
// transaction, reset the error state (as PostgreSQL's own background processes do).
void RecoverFromError();
// Flushes table statistics for autovacuum, at most once a second (outside a transaction).
long ReportStats();
// Flushes statistics, waits for the latch or the timeout (never busy; shorter when
// statistics are pending), then resets the latch. Outside a transaction.
void SleepOnLatch(long milliseconds);
void RegisterLauncher();  // from _PG_init, preload only
// The launcher's dynamic workers (delivery, maintenance, sinks): registers one that runs
// `function` (an entry point of this library) in the launcher's database, with the
// launcher notified of its start and stop and no restart by the postmaster (the launcher
// restarts it). Sets *handle (in TopMemoryContext), or nullptr when no slot was free.
bool StartDatabaseWorker(const char *function, const char *name, const char *type, int index,
                         BackgroundWorkerHandle **handle);
// Terminates a worker StartDatabaseWorker started (if any) and forgets its handle.
void StopDatabaseWorker(BackgroundWorkerHandle **handle);

}  // namespace evproc

// evproc's background processes (docs/design.md "Processes"): the launcher (static, one per server,
// connected to evproc.database) and its pool of delivery workers (dynamic); before it
// connects, the launcher checks the database with a short-lived worker (lifecycle.hpp).
#pragma once

#include "pg_headers.hpp"

extern "C" {
PGDLLEXPORT void evproc_launcher_main(Datum main_arg);
PGDLLEXPORT void evproc_worker_main(Datum main_arg);
}

namespace evproc {

extern char *database_name;             // evproc.database
extern int worker_count;                // evproc.workers
extern int tick_interval_ms;            // evproc.tick_interval
extern int maintenance_interval_s;      // evproc.maintenance_interval
extern bool worker_synchronous_commit;  // evproc.worker_synchronous_commit
extern int partition_interval_s;        // evproc.partition_interval (read by SQL maintenance)

void DefineBackgroundSettings();

// After an ERROR longjmp'd to a background process's main loop: report it, abort the
// transaction, reset the error state (as PostgreSQL's own background processes do).
void RecoverFromError();
// Flushes table statistics for autovacuum, at most once a second (outside a transaction).
long ReportStats();
// Flushes statistics, waits for the latch or the timeout (never busy; shorter when
// statistics are pending), then resets the latch. Outside a transaction.
void SleepOnLatch(long milliseconds);
void RegisterLauncher();  // from _PG_init, preload only

}  // namespace evproc

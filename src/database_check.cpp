// The database check (database_check.hpp): a short-lived background worker, connected to
// no database, tells the launcher whether evproc.database can be connected to.
#include "database_check.hpp"

#include <cstring>

#include "background.hpp"
#include "pg_compat.hpp"
#include "shared_state.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_database.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/relcache.h"
}

extern "C" {
PGDLLEXPORT void evproc_database_check_main(Datum main_arg);
}

namespace evproc {
namespace {

constexpr long kDatabaseRecheckMs = 5000;

// In the database check worker: evproc.database as pg_database has it (a shared
// catalog, readable without a database; get_database_oid scans it the same way).
DatabaseState LookUpDatabase(const char *name) {
  DatabaseState state = DatabaseState::kMissing;
  Relation rel = table_open(DatabaseRelationId, AccessShareLock);
  ScanKeyData key;
  ScanKeyInit(&key, Anum_pg_database_datname, BTEqualStrategyNumber, F_NAMEEQ,
              CStringGetDatum(name));
  SysScanDesc scan =
      systable_beginscan(rel, DatabaseNameIndexId, criticalSharedRelcachesBuilt, nullptr, 1, &key);
  HeapTuple tuple = systable_getnext(scan);
  if (HeapTupleIsValid(tuple)) {
    auto *form = reinterpret_cast<Form_pg_database>(GETSTRUCT(tuple));
    if (database_is_invalid_form(form)) {
      state = DatabaseState::kInvalid;
    } else if (!form->datallowconn) {
      state = DatabaseState::kNoConnections;
    } else {
      state = DatabaseState::kAvailable;
    }
  }
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  return state;
}

// Runs the database check worker and waits for its answer.
DatabaseState CheckDatabase() {
  SharedState *shared = Shared();
  pg_atomic_write_u32(&shared->database_state, static_cast<uint32>(DatabaseState::kUnknown));
  BackgroundWorker worker{};
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  worker.bgw_restart_time = BGW_NEVER_RESTART;
  std::strncpy(worker.bgw_library_name, "evproc", BGW_MAXLEN - 1);
  std::strncpy(worker.bgw_function_name, "evproc_database_check_main", BGW_MAXLEN - 1);
  std::strncpy(worker.bgw_name, "evproc database check", BGW_MAXLEN - 1);
  std::strncpy(worker.bgw_type, "evproc database check", BGW_MAXLEN - 1);
  worker.bgw_notify_pid = MyProcPid;
  BackgroundWorkerHandle *handle = nullptr;
  if (!RegisterDynamicBackgroundWorker(&worker, &handle)) return DatabaseState::kUnknown;
  BgwHandleStatus status = WaitForBackgroundWorkerShutdown(handle);
  pfree(handle);
  if (status == BGWH_POSTMASTER_DIED) proc_exit(1);
  return static_cast<DatabaseState>(pg_atomic_read_u32(&shared->database_state));
}

void ReportDatabase(DatabaseState state) {
  const char *name = database_name;
  switch (state) {
    case DatabaseState::kMissing:
      ereport(WARNING,
              (errmsg("evproc: database \"%s\" (evproc.database) does not exist; no events are "
                      "delivered until it is created",
                      name),
               errhint("Create the database (the launcher looks again every 5 seconds), or set "
                       "evproc.database to the database that has the extension and restart the "
                       "server.")));
      break;
    case DatabaseState::kNoConnections:
      ereport(WARNING,
              (errmsg("evproc: database \"%s\" (evproc.database) does not allow connections; no "
                      "events are delivered",
                      name),
               errhint("ALTER DATABASE %s ALLOW_CONNECTIONS true (the launcher looks again every "
                       "5 seconds), or set evproc.database and restart the server.",
                       quote_identifier(name))));
      break;
    case DatabaseState::kInvalid:
      ereport(WARNING,
              (errmsg("evproc: database \"%s\" (evproc.database) is invalid (an interrupted DROP "
                      "DATABASE); no events are delivered",
                      name),
               errhint("Drop the database and create it again, or set evproc.database and restart "
                       "the server.")));
      break;
    case DatabaseState::kUnknown:
    case DatabaseState::kAvailable:
      break;
  }
}

}  // namespace

void WaitForDatabase() {
  DatabaseState reported = DatabaseState::kAvailable;
  for (;;) {
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
    DatabaseState state = CheckDatabase();
    if (state == DatabaseState::kAvailable || state == DatabaseState::kUnknown) {
      if (reported != DatabaseState::kAvailable) {
        ereport(LOG, (errmsg("evproc: database \"%s\" (evproc.database) can be connected to now",
                             database_name)));
      }
      return;
    }
    // One line per state, not one per look: an absent database is not a crash loop.
    if (state != reported) ReportDatabase(state);
    reported = state;
    SleepOnLatch(kDatabaseRecheckMs);
  }
}

}  // namespace evproc

// The database check worker: connected to no database, it reads pg_database, leaves
// its answer in shared memory and exits (code 0: never restarted, logged at DEBUG1).
extern "C" void evproc_database_check_main(Datum /*main_arg*/) {
  pqsignal(SIGTERM, die);
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  evproc::DatabaseState state = evproc::LookUpDatabase(evproc::database_name);
  CommitTransactionCommand();
  pg_atomic_write_u32(&evproc::Shared()->database_state, static_cast<uint32>(state));
  proc_exit(0);
}

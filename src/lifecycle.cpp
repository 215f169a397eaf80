// Lifecycle protections of evproc's background processes: the extension gate, the
// database check before the launcher connects, and the utility hook for DROP DATABASE of
// evproc.database and DROP EXTENSION evproc.
#include "lifecycle.hpp"

#include <cstring>

#include "background.hpp"
#include "commit_wake.hpp"
#include "core/version.hpp"
#include "pg_compat.hpp"
#include "shared_state.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "nodes/parsenodes.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
}

extern "C" {
PGDLLEXPORT void evproc_database_check_main(Datum main_arg);
}

namespace evproc {
namespace {

constexpr long kDatabaseRecheckMs = 5000;
constexpr int kGateAttempts = 3;

// The extension's OID as of the last gate passed: the common case locks it at once and
// looks it up once (after the lock, so the lookup sees a drop we waited for).
Oid known_extension = InvalidOid;

ProcessUtility_hook_type previous_utility_hook = nullptr;

}  // namespace

ExtensionGate EnterExtension(ExtensionRow *row) {
  Oid candidate = OidIsValid(known_extension) ? known_extension : get_extension_oid("evproc", true);
  for (int attempt = 0; attempt < kGateAttempts; ++attempt) {
    if (!OidIsValid(candidate)) {
      known_extension = InvalidOid;
      return ExtensionGate::kMissing;
    }
    if (!ConditionalLockDatabaseObject(ExtensionRelationId, candidate, 0, AccessShareLock)) {
      return ExtensionGate::kBusy;
    }
    // A drop (or a drop and a create) may have committed since the OID was looked up:
    // look again with a catalog snapshot taken after the lock.
    InvalidateCatalogSnapshot();
    ExtensionRow current = ReadExtensionRow();
    if (current.oid == candidate) {
      known_extension = current.oid;
      if (row != nullptr) *row = current;
      bool served =
          current.version != nullptr && core::FitOf(current.version) == core::VersionFit::kServed;
      return served ? ExtensionGate::kInstalled : ExtensionGate::kUnsupported;
    }
    UnlockDatabaseObject(ExtensionRelationId, candidate, 0, AccessShareLock);
    candidate = current.oid;
  }
  known_extension = InvalidOid;
  return ExtensionGate::kBusy;  // dropped and re-created under us again and again
}

ExtensionRow ReadExtensionRow() {
  Relation catalog = table_open(ExtensionRelationId, AccessShareLock);
  ScanKeyData key;
  ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
              CStringGetDatum("evproc"));
  SysScanDesc scan = systable_beginscan(catalog, ExtensionNameIndexId, true, nullptr, 1, &key);
  HeapTuple tuple = systable_getnext(scan);
  ExtensionRow row{InvalidOid, InvalidOid, nullptr};
  if (HeapTupleIsValid(tuple)) {
    auto *form = reinterpret_cast<Form_pg_extension>(GETSTRUCT(tuple));
    row.oid = form->oid;
    row.owner = form->extowner;
    bool isnull = false;
    Datum value =
        heap_getattr(tuple, Anum_pg_extension_extversion, RelationGetDescr(catalog), &isnull);
    if (!isnull) row.version = text_to_cstring(DatumGetTextPP(value));
  }
  systable_endscan(scan);
  table_close(catalog, AccessShareLock);
  return row;
}

namespace {

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

// A command that needs the database the launcher is connected to without other
// sessions (PostgreSQL waits up to 5 seconds for them): ask the launcher to leave first.
void AskLauncherToLeave(const char *name, LeaveReason reason) {
  SharedState *shared = Shared();
  if (shared == nullptr || database_name == nullptr || name == nullptr ||
      std::strcmp(name, database_name) != 0 ||
      pg_atomic_read_u32(&shared->launcher_procno) == kNoProc) {
    return;
  }
  Oid database = get_database_oid(name, true);
  // Only a command that can succeed: not on the current database, by its owner.
  if (!OidIsValid(database) || database == MyDatabaseId ||
      !compat::OwnsDatabase(database, GetUserId())) {
    return;
  }
  pg_atomic_write_u32(&shared->leave_reason, static_cast<uint32>(reason));
  pg_atomic_write_u32(&shared->leave_database, database);
  WakeLauncher();
}

bool MovesTablespace(const AlterDatabaseStmt *stmt) {
  ListCell *cell = nullptr;
  foreach (cell, stmt->options) {
    if (std::strcmp(lfirst_node(DefElem, cell)->defname, "tablespace") == 0) return true;
  }
  return false;
}

bool DropsEvproc(const DropStmt *stmt) {
  if (stmt->removeType != OBJECT_EXTENSION) return false;
  ListCell *cell = nullptr;
  foreach (cell, stmt->objects) {
    if (std::strcmp(strVal(lfirst(cell)), "evproc") == 0) return true;
  }
  return false;
}

void UtilityHook(PlannedStmt *pstmt, const char *query_string, bool read_only_tree,
                 ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *query_env,
                 DestReceiver *dest, QueryCompletion *qc) {
  Node *parsetree = pstmt->utilityStmt;
  // DROP DATABASE and SET TABLESPACE may not run in a transaction block: no point in
  // asking then. A rename may; rolled back, it cost the launcher a restart.
  if (context == PROCESS_UTILITY_TOPLEVEL && IsA(parsetree, DropdbStmt) && !IsTransactionBlock()) {
    AskLauncherToLeave(castNode(DropdbStmt, parsetree)->dbname, LeaveReason::kDrop);
  }
  if (context == PROCESS_UTILITY_TOPLEVEL && IsA(parsetree, AlterDatabaseStmt) &&
      !IsTransactionBlock() && MovesTablespace(castNode(AlterDatabaseStmt, parsetree))) {
    AskLauncherToLeave(castNode(AlterDatabaseStmt, parsetree)->dbname, LeaveReason::kMove);
  }
  if (context == PROCESS_UTILITY_TOPLEVEL && IsA(parsetree, RenameStmt) &&
      castNode(RenameStmt, parsetree)->renameType == OBJECT_DATABASE) {
    AskLauncherToLeave(castNode(RenameStmt, parsetree)->subname, LeaveReason::kRename);
  }
  // DROP EXTENSION evproc wakes the launcher when it commits: it then stops the workers
  // at once instead of at its next look (an idle launcher sleeps).
  if (IsA(parsetree, DropStmt) && DropsEvproc(castNode(DropStmt, parsetree))) WakeAtCommit();
  if (previous_utility_hook != nullptr) {
    previous_utility_hook(pstmt, query_string, read_only_tree, context, params, query_env, dest,
                          qc);
  } else {
    standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest,
                            qc);
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

Oid DatabaseToLeave() {
  return Shared() == nullptr ? InvalidOid : pg_atomic_read_u32(&Shared()->leave_database);
}

LeaveReason DatabaseLeaveReason() {
  return Shared() == nullptr
             ? LeaveReason::kDrop
             : static_cast<LeaveReason>(pg_atomic_read_u32(&Shared()->leave_reason));
}

void ForgetLeaveRequest() {
  if (Shared() != nullptr) pg_atomic_write_u32(&Shared()->leave_database, InvalidOid);
}

void RegisterLifecycleHook() {
  previous_utility_hook = ProcessUtility_hook;
  ProcessUtility_hook = UtilityHook;
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

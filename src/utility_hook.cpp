// The utility hook (utility_hook.hpp): commands on evproc.database that need it without
// other sessions ask the launcher to leave it first; DROP EXTENSION evproc wakes it.
#include "utility_hook.hpp"

#include <cstring>

#include "commit_wake.hpp"
#include "pg_compat.hpp"
#include "settings.hpp"
#include "shared_state.hpp"

extern "C" {
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
}

namespace evproc {
namespace {

ProcessUtility_hook_type previous_utility_hook = nullptr;

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

void RegisterUtilityHook() {
  previous_utility_hook = ProcessUtility_hook;
  ProcessUtility_hook = UtilityHook;
}

}  // namespace evproc

// Lifecycle protections of evproc's background processes (docs/design.md "Processes"): what they
// do when the extension is dropped under them, when evproc.database is missing or being
// dropped.
#pragma once

#include "pg_headers.hpp"

namespace evproc {

enum class ExtensionGate {
  kInstalled,  // the extension exists; this transaction holds its gate until it ends
  kMissing,    // not installed (or dropped while we waited for the gate)
  kBusy,       // DROP EXTENSION (or another AccessExclusive holder) has it: try later
  // Installed at a version this library does not serve (core/version.hpp): nothing may
  // be delivered until ALTER EXTENSION evproc UPDATE or a restart. The gate is held.
  kUnsupported,
};

// Every transaction of the launcher and the workers enters the gate first: an
// AccessShareLock on the extension object itself, which DROP EXTENSION takes in
// AccessExclusive mode before it touches a single table. So a drop waits for the
// batches and ticks in flight, new ones back off until it is over, and the two never
// hold table locks in opposite orders (no deadlock report, no half-dropped tables read).
// Call it inside a transaction, before any statement. It never waits: kBusy while a
// drop holds or waits for the lock. `row` (may be null) receives the extension's row
// when installed (kInstalled or kUnsupported).
struct ExtensionRow;
ExtensionGate EnterExtension(ExtensionRow *row);

// evproc's row of pg_extension as the current catalog snapshot has it: oid InvalidOid
// when it is not installed; version palloc'd in the current memory context.
struct ExtensionRow {
  Oid oid;
  Oid owner;
  char *version;
};
ExtensionRow ReadExtensionRow();

// What the database check found about evproc.database (the launcher's database).
enum class DatabaseState : uint32 {
  kUnknown = 0,  // could not be checked (no free worker slot): just connect
  kAvailable,
  kMissing,
  kNoConnections,  // datallowconn is false
  kInvalid,        // left invalid by an interrupted DROP DATABASE
};

// Before the launcher connects: checks evproc.database with a short-lived background
// worker that connects to no database (a FATAL "database does not exist" in
// InitPostgres cannot be caught, and the postmaster would restart the launcher into it
// every 5 seconds, each time with a FATAL). While the database cannot be connected to,
// logs one WARNING per state and checks again every 5 seconds (a process start, not a
// log line); returns once it can be connected to (or when that cannot be checked).
void WaitForDatabase();

// What needs evproc.database without other sessions, so that the launcher leaves it.
enum class LeaveReason : uint32 {
  kDrop = 1,  // DROP DATABASE
  kRename,    // ALTER DATABASE ... RENAME TO
  kMove,      // ALTER DATABASE ... SET TABLESPACE
};

// The database the launcher was asked to leave (InvalidOid: none), and why; the launcher
// that connected clears a stale request.
Oid DatabaseToLeave();
LeaveReason DatabaseLeaveReason();
void ForgetLeaveRequest();

// From _PG_init, preload only. A utility hook: DROP DATABASE, ALTER DATABASE ... RENAME
// TO and ALTER DATABASE ... SET TABLESPACE of evproc.database first ask the launcher and
// its workers to leave it (as PostgreSQL asks autovacuum workers), instead of failing
// with "database is being accessed by other users"; DROP EXTENSION evproc wakes the
// launcher at commit.
void RegisterLifecycleHook();

}  // namespace evproc

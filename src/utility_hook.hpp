// The utility hook: DROP DATABASE, RENAME and SET TABLESPACE of evproc.database ask the
// launcher (and so its workers) to leave it first; DROP EXTENSION evproc wakes it.
#pragma once

#include "pg_headers.hpp"

namespace evproc {

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
void RegisterUtilityHook();

}  // namespace evproc

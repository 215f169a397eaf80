// The database check: before the launcher connects, a short-lived background worker
// that connects to no database looks whether evproc.database can be connected to.
#pragma once

#include "pg_headers.hpp"

namespace evproc {

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

}  // namespace evproc

// What differs between the PostgreSQL major versions evproc is meant to build for (15,
// 16 and 17). Only 15 is built and tested here (Debian 12 carries no other); each shim
// names the release that changed the API.
#pragma once

#include "pg_headers.hpp"

extern "C" {
#include "catalog/pg_database_d.h"
#include "catalog/pg_proc_d.h"
#include "storage/proc.h"
#include "utils/acl.h"
}

namespace evproc::compat {

// PostgreSQL 16 folded the per-catalog owner checks into object_ownercheck().
inline bool OwnsDatabase(Oid database, Oid role) {
#if PG_VERSION_NUM >= 160000
  return object_ownercheck(DatabaseRelationId, database, role);
#else
  return pg_database_ownercheck(database, role);
#endif
}

// Whether `role` may execute function `fn`. PostgreSQL 16 folded the per-catalog ACL
// checks into object_aclcheck().
inline bool MayExecute(Oid fn, Oid role) {
#if PG_VERSION_NUM >= 160000
  return object_aclcheck(ProcedureRelationId, fn, role, ACL_EXECUTE) == ACLCHECK_OK;
#else
  return pg_proc_aclcheck(fn, role, ACL_EXECUTE) == ACLCHECK_OK;
#endif
}

// This process's index in the proc array, by which others find its latch. PostgreSQL 17
// dropped PGPROC.pgprocno for MyProcNumber.
inline uint32 MyProcIndex() {
#if PG_VERSION_NUM >= 170000
  return static_cast<uint32>(MyProcNumber);
#else
  return static_cast<uint32>(MyProc->pgprocno);
#endif
}

}  // namespace evproc::compat

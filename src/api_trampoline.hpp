// Acting as the extension's owner on behalf of a caller (see src/api_trampoline.cpp and
// docs/security.md).
#pragma once

#include "pg_headers.hpp"

namespace evproc {

// The owner of extension evproc (pg_extension.extowner): the role that owns evproc's
// tables. When the extension is not installed in this database: InvalidOid if
// missing_ok, else an ERROR.
Oid ExtensionOwner(bool missing_ok);

// The user, security context and GUC nest level to restore after acting as the
// extension owner.
struct SavedUser {
  Oid user;
  int security_context;
  int guc_level;
};

// Switches to `owner` as a local user id change (SET ROLE is refused meanwhile), keeping
// the caller's other security bits (a security-restricted caller stays restricted), with
// search_path pinned to pg_catalog, pg_temp: the SQL then run as the owner must not
// resolve names (operators above all) in schemas of the caller's choosing. Restore with
// RestoreUser; on ERROR the (sub)transaction abort restores both.
SavedUser BecomeOwner(Oid owner);
void RestoreUser(const SavedUser &saved);

}  // namespace evproc

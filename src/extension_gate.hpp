// The extension gate (README "Processes"): how evproc's background processes follow the
// extension being dropped and created under them.
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

}  // namespace evproc

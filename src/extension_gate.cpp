// The extension gate (extension_gate.hpp): every transaction of evproc's background
// processes enters it first, and evproc's row of pg_extension is read here.
#include "extension_gate.hpp"

#include "core/version.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
}

namespace evproc {
namespace {

constexpr int kGateAttempts = 3;

// The extension's OID as of the last gate passed: the common case locks it at once and
// looks it up once (after the lock, so the lookup sees a drop we waited for).
Oid known_extension = InvalidOid;

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

}  // namespace evproc

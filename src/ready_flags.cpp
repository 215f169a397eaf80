// Marking units ready after a tick: see ready_flags.hpp.
#include "ready_flags.hpp"

#include <cstring>

#include "delivery_statements.hpp"
#include "shared_state.hpp"
#include "spi_plan.hpp"

extern "C" {
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
}

namespace evproc::ready {

namespace {

bool every_unit_pending = false;
bool again[kPartitionSlots];
int again_list[kPartitionSlots];
int again_count = 0;
SPIPlanPtr flag_plan = nullptr;
// Whether the served extension marks units ready, as of the version last looked at.
bool has_ready_units = false;
Oid checked_extension = InvalidOid;
char checked_version[NAMEDATALEN];
// The units the last flagging marked, hinted after its commit (at most what the ring
// holds: the rest are found by the workers' claim that reads every ready unit).
core::UnitKey flagged_units[core::kReadyHintCapacity];
int flagged_count = 0;

void Again(int slot) {
  if (slot < 0 || slot >= kPartitionSlots || again[slot]) return;
  again[slot] = true;
  again_list[again_count++] = slot;
}

void Forget() {
  for (int i = 0; i < again_count; ++i) again[again_list[i]] = false;
  again_count = 0;
  every_unit_pending = false;
}

// Whether the served extension marks units ready (0.3.0 on), looked up once per version.
bool HasReadyUnits(Oid extension, const char *version) {
  if (checked_extension == extension && strcmp(checked_version, version) == 0) {
    return has_ready_units;
  }
  if (SPI_execute(sql::kHasReady, true, 1) != SPI_OK_SELECT || SPI_processed != 1) {
    elog(ERROR, "evproc launcher: could not look for ready units");
  }
  bool isnull = false;
  has_ready_units =
      DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
  checked_extension = extension;
  strlcpy(checked_version, version, sizeof checked_version);
  return has_ready_units;
}

// The tables the flagging writes and reads, locked now if no one stands in the way. A
// DDL statement or VACUUM FULL on them must not hold the launcher, and so every tick,
// behind it: the flagging is left for the next try instead (what its SKIP LOCKED does
// for the rows).
bool LockTablesAtOnce() {
  Oid schema = get_namespace_oid("evproc", false);
  Oid progress = get_relname_relid("progress", schema);
  Oid subscription = get_relname_relid("subscription", schema);
  if (!OidIsValid(progress) || !OidIsValid(subscription)) return false;
  return ConditionalLockRelationOid(progress, RowExclusiveLock) &&
         ConditionalLockRelationOid(subscription, AccessShareLock);
}

}  // namespace

void Remember(const int *slots, int count, bool every_unit) {
  every_unit_pending |= every_unit;
  for (int i = 0; i < count; ++i) Again(slots[i]);
}

bool Pending() { return every_unit_pending || again_count > 0; }

void HintFlagged() {
  for (int i = 0; i < flagged_count; ++i) {
    HintReady(flagged_units[i].subscription_id, flagged_units[i].partition);
  }
  flagged_count = 0;
}

namespace {

// Keeps the flagged units of the statement's result row (columns 3 and 4: arrays in the
// same order) for HintFlagged.
void KeepFlagged() {
  flagged_count = 0;
  bool ids_null = false;
  bool partitions_null = false;
  Datum ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &ids_null);
  Datum partitions =
      SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &partitions_null);
  if (ids_null || partitions_null) return;
  Datum *id_items = nullptr;
  Datum *partition_items = nullptr;
  int id_count = 0;
  int partition_count = 0;
  deconstruct_array(DatumGetArrayTypeP(ids), INT4OID, 4, true, TYPALIGN_INT, &id_items, nullptr,
                    &id_count);
  deconstruct_array(DatumGetArrayTypeP(partitions), INT4OID, 4, true, TYPALIGN_INT,
                    &partition_items, nullptr, &partition_count);
  int count = id_count < partition_count ? id_count : partition_count;
  for (int i = 0; i < count && flagged_count < static_cast<int>(core::kReadyHintCapacity); ++i) {
    flagged_units[flagged_count++] =
        core::UnitKey{DatumGetInt32(id_items[i]), DatumGetInt32(partition_items[i])};
  }
}

}  // namespace

int FlagInTransaction(Oid extension, const char *version) {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc launcher: SPI_connect failed");
  PushActiveSnapshot(GetTransactionSnapshot());
  int flagged = 0;
  if (!HasReadyUnits(extension, version)) {
    Forget();
  } else if (LockTablesAtOnce()) {
    static const Oid types[] = {INT4ARRAYOID};
    SPIPlanPtr plan = PrepareOnce(&flag_plan, sql::kFlagReady, 1, types, CURSOR_OPT_GENERIC_PLAN);
    static Datum values[kPartitionSlots];
    int count = every_unit_pending ? kPartitionSlots : again_count;
    for (int i = 0; i < count; ++i)
      values[i] = Int32GetDatum(every_unit_pending ? i : again_list[i]);
    Datum args[] = {
        PointerGetDatum(construct_array(values, count, INT4OID, 4, true, TYPALIGN_INT))};
    if (SPI_execute_plan(plan, args, nullptr, false, 1) != SPI_OK_SELECT || SPI_processed != 1) {
      elog(ERROR, "evproc launcher: could not mark units ready");
    }
    bool isnull = false;
    Datum count_datum = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    flagged = isnull ? 0 : DatumGetInt32(count_datum);
    KeepFlagged();
    Datum held = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
    Forget();
    if (!isnull) {  // the slots of units someone held: tried again shortly
      Datum *items = nullptr;
      bool *item_nulls = nullptr;
      int items_count = 0;
      deconstruct_array(DatumGetArrayTypeP(held), INT4OID, 4, true, TYPALIGN_INT, &items,
                        &item_nulls, &items_count);
      for (int i = 0; i < items_count; ++i) {
        if (!item_nulls[i]) Again(DatumGetInt32(items[i]));
      }
    }
  }  // else what was remembered stays, for the next try
  PopActiveSnapshot();
  SPI_finish();
  return flagged;
}

}  // namespace evproc::ready

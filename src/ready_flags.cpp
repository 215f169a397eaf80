// Marking units ready after a tick: see ready_flags.hpp.
#include "ready_flags.hpp"

#include <cstring>

#include "shared_state.hpp"
#include "spi_plan.hpp"

extern "C" {
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/snapmgr.h"
}

namespace evproc::ready {

namespace {

bool every_unit_pending = false;
bool again[kPartitionSlots];
int again_list[kPartitionSlots];
int again_count = 0;
SPIPlanPtr flag_plan = nullptr;
// Whether the served extension has evproc.flag_ready(), as of the version last looked at.
bool has_flag_ready = false;
Oid checked_extension = InvalidOid;
char checked_version[NAMEDATALEN];

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

bool HasFlagReady(Oid extension, const char *version) {
  if (checked_extension == extension && strcmp(checked_version, version) == 0) {
    return has_flag_ready;
  }
  if (SPI_execute("SELECT pg_catalog.to_regprocedure('evproc.flag_ready(integer[])') IS NOT NULL",
                  true, 1) != SPI_OK_SELECT ||
      SPI_processed != 1) {
    elog(ERROR, "evproc launcher: could not look for evproc.flag_ready");
  }
  bool isnull = false;
  has_flag_ready =
      DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
  checked_extension = extension;
  strlcpy(checked_version, version, sizeof checked_version);
  return has_flag_ready;
}

}  // namespace

void Remember(const int *slots, int count, bool every_unit) {
  every_unit_pending |= every_unit;
  for (int i = 0; i < count; ++i) Again(slots[i]);
}

bool Pending() { return every_unit_pending || again_count > 0; }

int FlagInTransaction(Oid extension, const char *version) {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc launcher: SPI_connect failed");
  PushActiveSnapshot(GetTransactionSnapshot());
  int flagged = 0;
  if (!HasFlagReady(extension, version)) {
    Forget();
  } else {
    static const Oid types[] = {INT4ARRAYOID};
    SPIPlanPtr plan =
        PrepareOnce(&flag_plan, "SELECT flagged, again FROM evproc.flag_ready($1)", 1, types);
    ArrayType *list = nullptr;  // NULL: every unit
    if (!every_unit_pending) {
      static Datum values[kPartitionSlots];
      for (int i = 0; i < again_count; ++i) values[i] = Int32GetDatum(again_list[i]);
      list = construct_array(values, again_count, INT4OID, 4, true, TYPALIGN_INT);
    }
    Datum args[] = {PointerGetDatum(list)};
    char nulls[] = {list == nullptr ? 'n' : ' ', '\0'};
    if (SPI_execute_plan(plan, args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1) {
      elog(ERROR, "evproc launcher: could not mark units ready");
    }
    bool isnull = false;
    Datum count_datum = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    flagged = isnull ? 0 : DatumGetInt32(count_datum);
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
  }
  PopActiveSnapshot();
  SPI_finish();
  return flagged;
}

}  // namespace evproc::ready

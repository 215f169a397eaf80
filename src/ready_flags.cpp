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
#include "utils/memutils.h"
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
// The map of units: every unit of a push subscription and its slot, sorted by slot. Read
// from the subscriptions (kPushUnits) when a commit changed them (registry_seq), never
// from evproc.progress: its rows are updated at every batch, and under a transaction held
// open a look-up through any of its indexes walks every version they ever had.
struct MapUnit {
  int32 slot;
  int32 subscription_id;
  int32 partition;
};
MapUnit *map_units = nullptr;
int map_count = 0;
uint64 map_seq = 0;
Oid map_extension = InvalidOid;
SPIPlanPtr units_plan = nullptr;

// The units the last flagging marked, hinted after its commit (at most what the ring
// holds: the rest are found by the workers' claim that reads every ready unit).
core::UnitKey flagged_units[core::kReadyHintCapacity];
int flagged_count = 0;
bool flagged_truncated = false;  // more than that: the workers read every ready unit

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

int BySlot(const void *a, const void *b) {
  const auto *x = static_cast<const MapUnit *>(a);
  const auto *y = static_cast<const MapUnit *>(b);
  if (x->slot != y->slot) return x->slot < y->slot ? -1 : 1;
  if (x->subscription_id != y->subscription_id)
    return x->subscription_id < y->subscription_id ? -1 : 1;
  return x->partition < y->partition ? -1 : (x->partition > y->partition ? 1 : 0);
}

// Reads the map again if subscriptions changed since it was read (the sequence is read
// first: a change committed during the read makes the next flagging read it again).
void RefreshMap(Oid extension) {
  SharedState *state = Shared();
  uint64 seq = state != nullptr ? pg_atomic_read_u64(&state->registry_seq) : 0;
  if (map_units != nullptr && seq == map_seq && extension == map_extension) return;
  SPIPlanPtr plan = PrepareOnce(&units_plan, sql::kPushUnits, 0, nullptr, CURSOR_OPT_GENERIC_PLAN);
  if (SPI_execute_plan(plan, nullptr, nullptr, true, 0) != SPI_OK_SELECT) {
    elog(ERROR, "evproc launcher: could not read the subscriptions' units");
  }
  int64 total = 0;
  for (uint64 row = 0; row < SPI_processed; ++row) {
    bool isnull = false;
    total +=
        DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 3, &isnull));
  }
  auto *units = static_cast<MapUnit *>(MemoryContextAllocHuge(
      TopMemoryContext, sizeof(MapUnit) * static_cast<Size>(total > 0 ? total : 1)));
  int count = 0;
  for (uint64 row = 0; row < SPI_processed; ++row) {
    bool isnull = false;
    HeapTuple tuple = SPI_tuptable->vals[row];
    int32 id = DatumGetInt32(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 1, &isnull));
    int32 topic_id = DatumGetInt32(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 2, &isnull));
    int32 partitions = DatumGetInt32(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 3, &isnull));
    for (int32 partition = 0; partition < partitions; ++partition) {
      units[count++] = MapUnit{SlotOf(topic_id, partition), id, partition};
    }
  }
  qsort(units, count, sizeof(MapUnit), BySlot);
  if (map_units != nullptr) pfree(map_units);
  map_units = units;
  map_count = count;
  map_seq = seq;
  map_extension = extension;
}

// The first unit of the map at or after `slot`.
int FirstOfSlot(int slot) {
  int low = 0;
  int high = map_count;
  while (low < high) {
    int middle = low + (high - low) / 2;
    if (map_units[middle].slot < slot) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
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
  Oid topic = get_relname_relid("topic", schema);
  if (!OidIsValid(progress) || !OidIsValid(subscription) || !OidIsValid(topic)) return false;
  return ConditionalLockRelationOid(progress, RowExclusiveLock) &&
         ConditionalLockRelationOid(subscription, AccessShareLock) &&
         ConditionalLockRelationOid(topic, AccessShareLock);
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
  if (flagged_truncated) HintsLost();
  flagged_count = 0;
  flagged_truncated = false;
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
  flagged_truncated = count > static_cast<int>(core::kReadyHintCapacity);
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
    RefreshMap(extension);
    // The candidates: every unit after a start, else the units of the slots remembered.
    int most = every_unit_pending ? map_count : 0;
    if (!every_unit_pending) {
      for (int i = 0; i < again_count; ++i) {
        for (int u = FirstOfSlot(again_list[i]);
             u < map_count && map_units[u].slot == again_list[i]; ++u) {
          ++most;
        }
      }
    }
    auto *ids = static_cast<Datum *>(palloc(sizeof(Datum) * (most + 1)));
    auto *partitions = static_cast<Datum *>(palloc(sizeof(Datum) * (most + 1)));
    auto *slots = static_cast<Datum *>(palloc(sizeof(Datum) * (most + 1)));
    int count = 0;
    auto add = [&](const MapUnit &unit) {
      ids[count] = Int32GetDatum(unit.subscription_id);
      partitions[count] = Int32GetDatum(unit.partition);
      slots[count] = Int32GetDatum(unit.slot);
      ++count;
    };
    if (every_unit_pending) {
      for (int u = 0; u < map_count; ++u) add(map_units[u]);
    } else {
      for (int i = 0; i < again_count; ++i) {
        for (int u = FirstOfSlot(again_list[i]);
             u < map_count && map_units[u].slot == again_list[i]; ++u) {
          add(map_units[u]);
        }
      }
    }
    static const Oid types[] = {INT4ARRAYOID, INT4ARRAYOID, INT4ARRAYOID};
    SPIPlanPtr plan = PrepareOnce(&flag_plan, sql::kFlagReady, 3, types, CURSOR_OPT_GENERIC_PLAN);
    Datum args[] = {
        PointerGetDatum(construct_array(ids, count, INT4OID, 4, true, TYPALIGN_INT)),
        PointerGetDatum(construct_array(partitions, count, INT4OID, 4, true, TYPALIGN_INT)),
        PointerGetDatum(construct_array(slots, count, INT4OID, 4, true, TYPALIGN_INT))};
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

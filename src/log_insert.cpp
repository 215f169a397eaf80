#include "log_insert.hpp"

#include <cstring>

#include "spi_plan.hpp"

extern "C" {
#include "access/sysattr.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class_d.h"
#include "catalog/pg_type_d.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/xid8.h"
}

namespace evproc {
namespace {

// evproc.log's columns (extension/evproc.sql), found by name in each partition: a
// partition's attribute numbers need not be the parent's.
enum Column {
  kId,
  kTopic,
  kPartition,
  kKey,
  kType,
  kPayload,
  kHeaders,
  kDedup,
  kEnqueuedAt,
  kXid,
  kColumns
};
constexpr const char *kColumnNames[kColumns] = {"id",          "topic_id", "partition", "key",
                                                "type",        "payload",  "headers",   "dedup_id",
                                                "enqueued_at", "xid"};
constexpr Oid kColumnTypes[kColumns] = {INT8OID,  INT4OID,  INT4OID, TEXTOID,        TEXTOID,
                                        JSONBOID, JSONBOID, TEXTOID, TIMESTAMPTZOID, XID8OID};

// Rows per multi-insert call (COPY uses 1000): bounds the slots held at once.
constexpr int kMostRowsPerPass = 1000;

SPIPlanPtr insert_plan = nullptr;

// Whether an INSERT into `rel` would fire a trigger (statement or row level, including
// the triggers of foreign keys and deferred constraints).
bool HasInsertTriggers(Relation rel) {
  const TriggerDesc *t = rel->trigdesc;
  return t != nullptr && (t->trig_insert_before_row || t->trig_insert_after_row ||
                          t->trig_insert_instead_row || t->trig_insert_before_statement ||
                          t->trig_insert_after_statement || t->trig_insert_new_table);
}

// The attribute number of each column in `rel`, or false when rel's columns are not
// exactly evproc.log's (names and types), or it has generated columns.
bool MatchColumns(Relation rel, AttrNumber *attnums) {
  TupleDesc desc = RelationGetDescr(rel);
  if (desc->constr != nullptr && desc->constr->has_generated_stored) return false;
  for (int c = 0; c < kColumns; ++c) attnums[c] = InvalidAttrNumber;
  int found = 0;
  for (int i = 0; i < desc->natts; ++i) {
    Form_pg_attribute attr = TupleDescAttr(desc, i);
    if (attr->attisdropped) continue;
    int c = 0;
    while (c < kColumns && strcmp(NameStr(attr->attname), kColumnNames[c]) != 0) ++c;
    if (c == kColumns || attr->atttypid != kColumnTypes[c] || attnums[c] != InvalidAttrNumber) {
      return false;
    }
    attnums[c] = attr->attnum;
    ++found;
  }
  return found == kColumns;
}

// MatchColumns' answers and evproc.log's OID, kept until a relcache invalidation of one
// of those relations (any change of their columns sends one; so does a drop, and a new
// evproc.log of a re-created extension has another OID).
struct ColumnMap {
  Oid relid;
  bool matches;
  AttrNumber attnums[kColumns];
};
constexpr int kMostColumnMaps = 16;  // evproc.log and its partitions in use
ColumnMap column_maps[kMostColumnMaps];
int column_map_count = 0;
Oid log_relid = InvalidOid;
bool invalidation_registered = false;

void ForgetRelation(Datum /*arg*/, Oid relid) {
  if (relid == InvalidOid || relid == log_relid) log_relid = InvalidOid;
  for (int i = 0; i < column_map_count; ++i) {
    if (relid == InvalidOid || column_maps[i].relid == relid) {
      column_maps[i--] = column_maps[--column_map_count];
    }
  }
}

void RegisterInvalidation() {
  if (invalidation_registered) return;
  CacheRegisterRelcacheCallback(ForgetRelation, static_cast<Datum>(0));
  invalidation_registered = true;
}

bool MapColumns(Relation rel, AttrNumber *attnums) {
  Oid relid = RelationGetRelid(rel);
  for (int i = 0; i < column_map_count; ++i) {
    if (column_maps[i].relid != relid) continue;
    std::memcpy(attnums, column_maps[i].attnums, sizeof(column_maps[i].attnums));
    return column_maps[i].matches;
  }
  bool matches = MatchColumns(rel, attnums);
  if (column_map_count == kMostColumnMaps) column_map_count = 0;  // start over
  ColumnMap &map = column_maps[column_map_count++];
  map.relid = relid;
  map.matches = matches;
  std::memcpy(map.attnums, attnums, sizeof(map.attnums));
  return matches;
}

Oid LogRelation() {
  if (!OidIsValid(log_relid))
    log_relid = get_relname_relid("log", get_namespace_oid("evproc", false));
  return log_relid;
}

// The leaf partition of the partitioned evproc.log that holds `xid`, chosen as the
// executor's tuple routing does (the bound search of get_partition_for_tuple, then the
// default partition); InvalidOid when routing needs more than that (a sub-partitioned
// leaf, a key that is not the xid column) or no partition takes the row (the INSERT
// statement then raises the error an application would see). *is_default tells the
// default partition.
Oid LeafFor(Relation log, AttrNumber xid_attnum, Datum xid, bool *is_default) {
  PartitionKey key = RelationGetPartitionKey(log);
  if (key == nullptr || key->strategy != PARTITION_STRATEGY_RANGE || key->partnatts != 1 ||
      key->partattrs[0] != xid_attnum) {
    return InvalidOid;
  }
  // As the executor: partitions being detached concurrently are left out, except in
  // snapshot isolation.
  PartitionDesc desc = RelationGetPartitionDesc(log, !IsolationUsesXactSnapshot());
  PartitionBoundInfo bounds = desc->boundinfo;
  if (desc->nparts == 0 || bounds == nullptr) return InvalidOid;
  bool equal = false;
  int offset =
      partition_range_datum_bsearch(key->partsupfunc, key->partcollation, bounds, 1, &xid, &equal);
  int index = bounds->indexes[offset + 1];
  if (index < 0) index = bounds->default_index;
  if (index < 0 || !desc->is_leaf[index]) return InvalidOid;
  *is_default = index == bounds->default_index;
  return desc->oids[index];
}

// Fills `slot` (in the partition's layout) with one row.
void FillSlot(TupleTableSlot *slot, const AttrNumber *attnums, int32 topic_id, const LogRow &row,
              TimestampTz enqueued_at, Datum xid) {
  ExecClearTuple(slot);
  Datum *values = slot->tts_values;
  bool *nulls = slot->tts_isnull;
  for (int i = 0; i < slot->tts_tupleDescriptor->natts; ++i) {
    values[i] = static_cast<Datum>(0);
    nulls[i] = true;
  }
  auto set = [&](Column c, Datum value, bool is_null) {
    values[attnums[c] - 1] = value;
    nulls[attnums[c] - 1] = is_null;
  };
  set(kId, Int64GetDatum(row.id), false);
  set(kTopic, Int32GetDatum(topic_id), false);
  set(kPartition, Int32GetDatum(row.partition), false);
  set(kKey, PointerGetDatum(row.key), row.key == nullptr);
  set(kType, PointerGetDatum(row.type), row.type == nullptr);
  set(kPayload, PointerGetDatum(row.payload), row.payload == nullptr);
  set(kHeaders, PointerGetDatum(row.headers), row.headers == nullptr);
  set(kDedup, PointerGetDatum(row.dedup_id), row.dedup_id == nullptr);
  set(kEnqueuedAt, TimestampTzGetDatum(enqueued_at), false);
  set(kXid, xid, false);
  ExecStoreVirtualTuple(slot);
}

// The direct insert. False, with nothing written, when it does not apply.
//
// What an INSERT into evproc.log does, and where it happens here:
//  * locks: RowExclusiveLock on evproc.log, then on the partition and its indexes;
//  * privileges: INSERT on evproc.log for the current user (the extension owner);
//    row security, triggers (also those of foreign keys and deferred constraints) and
//    generated columns: any of them sends the rows through the INSERT statement;
//  * routing: the partition whose bounds hold the row's xid (pg_current_xact_id(), the
//    column's default), or the default partition. A partition attached after we read
//    the partition descriptor: the executor checks the default partition's constraint
//    once it holds the default partition's lock (the attach holds it until it commits),
//    and so does this, through ExecPartitionCheck (partition_attach.spec);
//  * constraints: ExecConstraints (NOT NULL, CHECK) on each row;
//  * storage: one heap insert per row (table_multi_insert for several, as COPY does),
//    then the partition's index entries.
bool InsertDirect(int32 topic_id, const LogRow *rows, int count, TimestampTz enqueued_at) {
  RegisterInvalidation();
  Oid log_oid = LogRelation();
  if (!OidIsValid(log_oid)) return false;
  if (pg_class_aclcheck(log_oid, GetUserId(), ACL_INSERT) != ACLCHECK_OK) return false;
  if (check_enable_rls(log_oid, InvalidOid, true) == RLS_ENABLED) return false;

  Relation log = table_open(log_oid, RowExclusiveLock);
  AttrNumber log_attnums[kColumns];
  if (HasInsertTriggers(log) || !MapColumns(log, log_attnums)) {
    table_close(log, NoLock);
    return false;
  }
  // pg_current_xact_id(): the top transaction's full xid, assigned now if need be.
  Datum xid = FullTransactionIdGetDatum(GetTopFullTransactionId());
  bool is_default = false;
  Oid leaf_oid = log->rd_rel->relkind == RELKIND_RELATION
                     ? log_oid
                     : (log->rd_rel->relkind == RELKIND_PARTITIONED_TABLE
                            ? LeafFor(log, log_attnums[kXid], xid, &is_default)
                            : InvalidOid);
  if (!OidIsValid(leaf_oid)) {
    table_close(log, NoLock);
    return false;
  }
  Relation leaf = leaf_oid == log_oid ? log : table_open(leaf_oid, RowExclusiveLock);
  AttrNumber attnums[kColumns];
  if (leaf->rd_rel->relkind != RELKIND_RELATION || (leaf != log && HasInsertTriggers(leaf)) ||
      !MapColumns(leaf, attnums)) {
    if (leaf != log) table_close(leaf, NoLock);
    table_close(log, NoLock);
    return false;
  }

  // As the executor sets up a routed insert: evproc.log is the statement's relation
  // (range table entry 1), the partition a result relation under it, so that errors
  // read as for a routed insert (the row shown in evproc.log's layout).
  EState *estate = CreateExecutorState();
  RangeTblEntry *rte = makeNode(RangeTblEntry);
  rte->rtekind = RTE_RELATION;
  rte->relid = log_oid;
  rte->relkind = log->rd_rel->relkind;
  rte->rellockmode = RowExclusiveLock;
  rte->requiredPerms = ACL_INSERT;
  rte->checkAsUser = GetUserId();
  for (AttrNumber attnum : log_attnums) {
    rte->insertedCols =
        bms_add_member(rte->insertedCols, attnum - FirstLowInvalidHeapAttributeNumber);
  }
  ExecInitRangeTable(estate, list_make1(rte));
  ResultRelInfo *root = nullptr;
  ResultRelInfo *result = makeNode(ResultRelInfo);
  if (leaf == log) {
    InitResultRelInfo(result, leaf, 1, nullptr, 0);
  } else {
    root = makeNode(ResultRelInfo);
    InitResultRelInfo(root, log, 1, nullptr, 0);
    InitResultRelInfo(result, leaf, 0, root, 0);
  }
  ExecOpenIndices(result, false);
  // The default partition's bounds may have narrowed since the descriptor was read.
  bool check_partition = is_default;
  bool check_constraints = RelationGetDescr(leaf)->constr != nullptr;

  int pass = count < kMostRowsPerPass ? count : kMostRowsPerPass;
  auto **slots = static_cast<TupleTableSlot **>(palloc(sizeof(TupleTableSlot *) * pass));
  for (int i = 0; i < pass; ++i) slots[i] = table_slot_create(leaf, &estate->es_tupleTable);
  CommandId command = GetCurrentCommandId(true);
  for (int done = 0; done < count; done += pass) {
    int n = count - done < pass ? count - done : pass;
    for (int i = 0; i < n; ++i) {
      FillSlot(slots[i], attnums, topic_id, rows[done + i], enqueued_at, xid);
      if (check_constraints) ExecConstraints(result, slots[i], estate);
      if (check_partition) ExecPartitionCheck(result, slots[i], estate, true);
    }
    if (n == 1) {
      table_tuple_insert(leaf, slots[0], command, 0, nullptr);
    } else {
      table_multi_insert(leaf, slots, n, command, 0, nullptr);
    }
    for (int i = 0; i < n; ++i) {
      if (result->ri_NumIndices > 0) {
        List *recheck = ExecInsertIndexTuples(result, slots[i], estate, false, false, nullptr, NIL);
        // Only deferred unique constraints ask for a recheck, and those come with a
        // trigger, which sent the rows through the INSERT statement instead.
        Assert(recheck == NIL);
        (void)recheck;
      }
    }
    ResetPerTupleExprContext(estate);
  }
  ExecResetTupleTable(estate->es_tupleTable, false);
  ExecCloseIndices(result);
  FreeExecutorState(estate);
  if (leaf != log) table_close(leaf, NoLock);
  table_close(log, NoLock);
  return true;
}

ArrayType *BuildArray(Datum *values, bool *nulls, int count, Oid element_type) {
  int16 typlen = 0;
  bool typbyval = false;
  char typalign = 0;
  get_typlenbyvalalign(element_type, &typlen, &typbyval, &typalign);
  int dims[1] = {count};
  int lower_bounds[1] = {1};
  return construct_md_array(values, nulls, 1, dims, lower_bounds, element_type, typlen, typbyval,
                            typalign);
}

// The rows through one INSERT statement, with every effect an INSERT has.
void InsertStatement(int32 topic_id, const LogRow *rows, int count, TimestampTz enqueued_at) {
  constexpr int kArrays = 7;  // id, partition, key, type, payload, headers, dedup_id
  static const Oid element_types[kArrays] = {INT8OID,  INT4OID,  TEXTOID, TEXTOID,
                                             JSONBOID, JSONBOID, TEXTOID};
  static const Oid types[kArrays + 2] = {INT4OID,       INT8ARRAYOID, INT4ARRAYOID,
                                         TEXTARRAYOID,  TEXTARRAYOID, JSONBARRAYOID,
                                         JSONBARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID};
  Datum *values[kArrays];
  bool *nulls[kArrays];
  for (int c = 0; c < kArrays; ++c) {
    values[c] = static_cast<Datum *>(palloc(sizeof(Datum) * count));
    nulls[c] = static_cast<bool *>(palloc(sizeof(bool) * count));
  }
  for (int i = 0; i < count; ++i) {
    const LogRow &row = rows[i];
    const void *pointers[kArrays] = {nullptr,     nullptr,     row.key,     row.type,
                                     row.payload, row.headers, row.dedup_id};
    values[0][i] = Int64GetDatum(row.id);
    nulls[0][i] = false;
    values[1][i] = Int32GetDatum(row.partition);
    nulls[1][i] = false;
    for (int c = 2; c < kArrays; ++c) {
      values[c][i] = PointerGetDatum(pointers[c]);
      nulls[c][i] = pointers[c] == nullptr;
    }
  }
  SPIPlanPtr plan = PrepareOnce(
      &insert_plan,
      "INSERT INTO evproc.log (id, topic_id, partition, key, type, payload, headers, dedup_id, "
      "enqueued_at) SELECT u.id, $1, u.partition, u.key, u.type, u.payload, u.headers, "
      "u.dedup_id, $9 FROM unnest($2, $3, $4, $5, $6, $7, $8) "
      "AS u(id, partition, key, type, payload, headers, dedup_id)",
      kArrays + 2, types);
  Datum args[kArrays + 2];
  args[0] = Int32GetDatum(topic_id);
  for (int c = 0; c < kArrays; ++c) {
    args[c + 1] = PointerGetDatum(BuildArray(values[c], nulls[c], count, element_types[c]));
  }
  args[kArrays + 1] = TimestampTzGetDatum(enqueued_at);
  int rc = SPI_execute_plan(plan, args, nullptr, false, 0);
  if (rc != SPI_OK_INSERT || SPI_processed != static_cast<uint64>(count)) {
    elog(ERROR, "evproc: event insert failed: %s", SPI_result_code_string(rc));
  }
}

}  // namespace

void AppendToLog(int32 topic_id, const LogRow *rows, int count, TimestampTz enqueued_at) {
  if (count <= 0) return;
  if (!InsertDirect(topic_id, rows, count, enqueued_at)) {
    InsertStatement(topic_id, rows, count, enqueued_at);
  }
}

}  // namespace evproc

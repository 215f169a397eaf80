#include "delivery.hpp"

#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/backoff.hpp"
#include "delivery_sql.hpp"
#include "error_boundary.hpp"
#include "handler_call.hpp"
#include "lifecycle.hpp"
#include "metrics.hpp"
#include "metrics_local.hpp"
#include "shared_state.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "commands/extension.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace evproc {
namespace {

using pg::CallPostgres;

// The session's search_path, for handlers (see PinSearchPath).
const char *handler_search_path = nullptr;

// ---------------------------------------------------------------------------------------
// Kept plans, prepared again when the extension is re-created (its OIDs change).
// ---------------------------------------------------------------------------------------
struct Plans {
  Oid extension = InvalidOid;
  Oid event_type = InvalidOid;
  SPIPlanPtr claim = nullptr;
  SPIPlanPtr claim_replay = nullptr;
  SPIPlanPtr replay_events = nullptr;
  SPIPlanPtr advance_replay = nullptr;
  SPIPlanPtr parked_keys_anywhere = nullptr;
  SPIPlanPtr retry_due = nullptr;
  SPIPlanPtr next_due = nullptr;
  SPIPlanPtr bounds = nullptr;
  SPIPlanPtr due_retries = nullptr;
  SPIPlanPtr parked_keys = nullptr;
  SPIPlanPtr window_pending = nullptr;
  SPIPlanPtr window_range = nullptr;
  SPIPlanPtr delete_retries = nullptr;
  SPIPlanPtr park = nullptr;
  SPIPlanPtr dead_letter = nullptr;
  SPIPlanPtr promote = nullptr;
  SPIPlanPtr advance = nullptr;
  SPIPlanPtr pause = nullptr;
  SPIPlanPtr trip = nullptr;
};
Plans plans;

// Generic plans from the first execution: the plans do not depend on the values (the
// window read is an index range scan whatever its bounds), and re-planning each batch
// would cost more than running it.
SPIPlanPtr Prepare(const char *text, int nargs, const Oid *types) {
  SPIPlanPtr plan =
      SPI_prepare_cursor(text, nargs, const_cast<Oid *>(types), CURSOR_OPT_GENERIC_PLAN);
  if (plan == nullptr) {
    elog(ERROR, "evproc: could not prepare a delivery statement: %s",
         SPI_result_code_string(SPI_result));
  }
  SPI_keepplan(plan);
  return plan;
}

void FreePlans() {
  SPIPlanPtr *all[] = {&plans.claim,         &plans.next_due,       &plans.bounds,
                       &plans.due_retries,   &plans.parked_keys,    &plans.window_pending,
                       &plans.window_range,  &plans.delete_retries, &plans.park,
                       &plans.dead_letter,   &plans.promote,        &plans.advance,
                       &plans.pause,         &plans.trip,           &plans.claim_replay,
                       &plans.replay_events, &plans.advance_replay, &plans.parked_keys_anywhere,
                       &plans.retry_due};
  for (SPIPlanPtr *plan : all) {
    if (*plan != nullptr) SPI_freeplan(*plan);
    *plan = nullptr;
  }
}

// PostgreSQL code; inside SPI. Returns false when the extension is not installed.
bool EnsurePlans() {
  Oid extension = get_extension_oid("evproc", true);
  if (!OidIsValid(extension)) return false;
  if (extension == plans.extension) return true;
  FreePlans();
  if (SPI_execute(sql::kTypes, true, 1) != SPI_OK_SELECT || SPI_processed != 1) {
    elog(ERROR, "evproc: could not read the delivery types");
  }
  bool isnull = false;
  Oid event_type =
      DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
  char *pending_text =
      psprintf("%s%s%s", sql::kWindowPrefix,
               SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2), sql::kWindowSuffix);
  char *range_text =
      psprintf("%s%s%s", sql::kWindowPrefix,
               SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3), sql::kWindowSuffix);

  const Oid two_ids[] = {INT4OID, INT4OID};
  const Oid bounds_types[] = {INT8OID, INT8OID, INT4OID};
  const Oid due_types[] = {INT4OID, INT4OID, INT4OID};
  const Oid window_types[] = {INT4OID, INT4OID, XID8ARRAYOID, XID8OID,        PG_SNAPSHOTOID,
                              XID8OID, INT8OID, INT8OID,      TIMESTAMPTZOID, TEXTOID};
  const Oid delete_types[] = {INT4OID, INT8ARRAYOID};
  const Oid park_types[] = {INT4OID, INT4OID, TEXTOID, INT8OID,        event_type,
                            BOOLOID, BOOLOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID,
                            TEXTOID, TEXTOID, TEXTOID, TEXTOID,        TEXTOID};
  const Oid dead_types[] = {INT4OID, INT4OID, event_type, INT4OID,        TEXTOID,        TEXTOID,
                            TEXTOID, TEXTOID, TEXTOID,    TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID};
  const Oid promote_types[] = {INT4OID, INT4OID, TEXTARRAYOID};
  const Oid advance_types[] = {INT4OID, INT4OID,        INT8OID, INT8OID,
                               INT8OID, TIMESTAMPTZOID, BOOLOID, INT8OID};
  const Oid reason_types[] = {INT4OID, TEXTOID};

  const Oid replay_types[] = {INT8OID,        INT8OID, INT8OID, INT4OID, TIMESTAMPTZOID,
                              TIMESTAMPTZOID, TEXTOID, INT4OID, INT8OID, TEXTOID};
  const Oid advance_replay_types[] = {INT4OID, INT8OID, INT8OID, INT8OID, INT8OID, BOOLOID};
  const Oid one_id[] = {INT4OID};
  const Oid retry_due_types[] = {INT4OID, INT4ARRAYOID};
  char *unit_joins = psprintf(sql::kSubscriptionJoins, "p");
  char *replay_joins = psprintf(sql::kSubscriptionJoins, "rp");
  plans.claim =
      Prepare(psprintf(sql::kClaimUnit, sql::kSubscriptionColumns, unit_joins), 0, nullptr);
  plans.claim_replay =
      Prepare(psprintf(sql::kClaimReplay, sql::kSubscriptionColumns, replay_joins), 0, nullptr);
  plans.replay_events = Prepare(sql::kReplayEvents, 10, replay_types);
  plans.advance_replay = Prepare(sql::kAdvanceReplay, 6, advance_replay_types);
  plans.parked_keys_anywhere = Prepare(sql::kParkedKeysAnywhere, 1, one_id);
  plans.retry_due = Prepare(sql::kRetryDue, 2, retry_due_types);
  plans.next_due = Prepare(sql::kNextDue, 0, nullptr);
  plans.bounds = Prepare(sql::kWindowBounds, 3, bounds_types);
  plans.due_retries = Prepare(sql::kDueRetries, 3, due_types);
  plans.parked_keys = Prepare(sql::kParkedKeys, 2, two_ids);
  plans.window_pending = Prepare(pending_text, 10, window_types);
  plans.window_range = Prepare(range_text, 10, window_types);
  plans.delete_retries = Prepare(sql::kDeleteRetries, 2, delete_types);
  plans.park = Prepare(sql::kParkEvent, 15, park_types);
  plans.dead_letter = Prepare(sql::kDeadLetter, 12, dead_types);
  plans.promote = Prepare(sql::kPromoteHeads, 3, promote_types);
  plans.advance = Prepare(sql::kAdvance, 8, advance_types);
  plans.pause = Prepare(sql::kPause, 2, reason_types);
  plans.trip = Prepare(sql::kTripBreaker, 2, reason_types);
  plans.event_type = event_type;
  plans.extension = extension;
  return true;
}

// ---------------------------------------------------------------------------------------
// Small SPI helpers (PostgreSQL code; POD only).
// ---------------------------------------------------------------------------------------
uint64 Run(SPIPlanPtr plan, const Datum *args, const char *nulls, bool read_only, int expected) {
  int rc = SPI_execute_plan(plan, const_cast<Datum *>(args), nulls, read_only, 0);
  if (rc != expected)
    elog(ERROR, "evproc: delivery statement failed: %s", SPI_result_code_string(rc));
  return SPI_processed;
}

Datum Column(uint64 row, int column, bool *isnull) {
  return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column, isnull);
}

// A column copied into the batch context (SPI frees its results).
Datum CopiedColumn(uint64 row, int column, bool *isnull, MemoryContext context) {
  Datum value = Column(row, column, isnull);
  if (*isnull) return value;
  Form_pg_attribute attribute = TupleDescAttr(SPI_tuptable->tupdesc, column - 1);
  MemoryContext previous = MemoryContextSwitchTo(context);
  value = datumCopy(value, attribute->attbyval, attribute->attlen);
  MemoryContextSwitchTo(previous);
  return value;
}

char *CopiedText(uint64 row, int column, MemoryContext context) {
  bool isnull = false;
  Datum value = Column(row, column, &isnull);
  if (isnull) return nullptr;
  return MemoryContextStrdup(context, TextDatumGetCString(value));
}

Datum TextOrNull(const char *value) { return value == nullptr ? 0 : CStringGetTextDatum(value); }
char NullFlag(bool isnull) { return isnull ? 'n' : ' '; }

// ---------------------------------------------------------------------------------------
// The claimed unit and its batch.
// ---------------------------------------------------------------------------------------
struct Unit {
  int32 subscription_id;
  int32 partition;
  int64 tick_id;
  int64 window_tick;  // 0: none
  bool has_cursor;
  int64 cursor_id;
  TimestampTz history_from;
  bool has_history_from;
  bool has_retries;  // retry_due_at is set: parked keys exist
  bool retries_due;
  char *name;
  int32 topic_id;
  char *topic;
  char *handler;
  Oid handler_fn;  // InvalidOid: dropped
  bool batch_form;
  Oid owner;
  char *owner_state;  // ok, missing, superuser, no_execute, no_subscribe
  int32 batch_size;
  int32 max_attempts;
  int64 backoff_base_us;
  int64 backoff_cap_us;
  int32 timeout_ms;
  bool block_on_dead;
  double failure_budget;
  int32 breaker_min_attempts;
  // A replay (partition -1): its row and where it stands.
  bool replay;
  int32 replay_id;
  int64 replay_cursor;
  int64 replay_chunk;
  int64 replay_last_id;
  TimestampTz replay_from;
  TimestampTz replay_to;
  char *replay_key;  // nullptr: every key
};

enum class Outcome { kPending, kDelivered, kFailed, kParked };

struct Item {
  int64 event_id;
  int32 partition;
  Datum event;  // evproc.event
  const char *key;
  bool from_retry;
  int32 failed_attempts;  // before this delivery
  TimestampTz first_failed_at;
  bool has_first_failed_at;
  TimestampTz enqueued_at;
  Outcome outcome;
  ErrorData *error;
};

// POD list in the batch context: filled by PostgreSQL-facing code, which must not own
// C++ containers (an ERROR longjmps through it).
struct ItemList {
  Item *items;
  int count;
  int capacity;
};

void Append(ItemList *list, const Item &item, MemoryContext context) {
  if (list->count == list->capacity) {
    int capacity = list->capacity == 0 ? 64 : list->capacity * 2;
    auto *grown = static_cast<Item *>(MemoryContextAlloc(context, sizeof(Item) * capacity));
    if (list->count > 0) std::memcpy(grown, list->items, sizeof(Item) * list->count);
    list->items = grown;
    list->capacity = capacity;
  }
  list->items[list->count++] = item;
}

struct KeyList {
  char **keys;
  int count;
};

// Where a unit stands: everything visible in tick_id is handled; while a window is being
// drained, its target tick and the id cursor inside it.
struct Position {
  int64 tick_id;
  int64 window_tick;  // 0: none
  bool has_cursor;
  int64 cursor_id;
};

struct Window {
  bool present;
  int64 target_tick;
  Datum target_snapshot;
  Datum target_xmax;
  Datum from_xip;
  Datum from_xmax;
  int32 pending_count;  // transactions open at the window's start tick
  bool complete;
};

bool ClaimUnit(Unit *unit, bool replay, MemoryContext context) {
  if (Run(replay ? plans.claim_replay : plans.claim, nullptr, nullptr, false, SPI_OK_SELECT) == 0)
    return false;
  bool isnull = false;
  unit->subscription_id = DatumGetInt32(Column(0, 1, &isnull));
  unit->partition = DatumGetInt32(Column(0, 2, &isnull));
  unit->tick_id = DatumGetInt64(Column(0, 3, &isnull));
  Datum window_tick = Column(0, 4, &isnull);
  unit->window_tick = isnull ? 0 : DatumGetInt64(window_tick);
  Datum cursor_id = Column(0, 5, &isnull);
  unit->has_cursor = !isnull;
  unit->cursor_id = isnull ? 0 : DatumGetInt64(cursor_id);
  Datum history_from = Column(0, 6, &isnull);
  unit->has_history_from = !isnull;
  unit->history_from = isnull ? DT_NOBEGIN : DatumGetTimestampTz(history_from);
  Datum retry_due_at = Column(0, 7, &isnull);
  unit->has_retries = !isnull;
  unit->retries_due =
      !isnull && DatumGetTimestampTz(retry_due_at) <= GetCurrentTransactionStartTimestamp();
  unit->name = CopiedText(0, 8, context);
  unit->topic_id = DatumGetInt32(Column(0, 9, &isnull));
  unit->topic = CopiedText(0, 10, context);
  Datum fn = Column(0, 11, &isnull);
  unit->handler_fn = isnull ? InvalidOid : DatumGetObjectId(fn);
  unit->batch_form = DatumGetBool(Column(0, 12, &isnull));
  unit->owner = DatumGetObjectId(Column(0, 13, &isnull));
  unit->owner_state = CopiedText(0, 14, context);
  unit->batch_size = DatumGetInt32(Column(0, 15, &isnull));
  unit->max_attempts = DatumGetInt32(Column(0, 16, &isnull));
  unit->backoff_base_us = DatumGetInt64(Column(0, 17, &isnull));
  unit->backoff_cap_us = DatumGetInt64(Column(0, 18, &isnull));
  unit->timeout_ms = DatumGetInt32(Column(0, 19, &isnull));
  unit->block_on_dead = DatumGetBool(Column(0, 20, &isnull));
  unit->failure_budget = DatumGetFloat8(Column(0, 21, &isnull));
  unit->breaker_min_attempts = DatumGetInt32(Column(0, 22, &isnull));
  unit->handler = CopiedText(0, 23, context);
  unit->replay = replay;
  if (replay) {
    unit->replay_id = DatumGetInt32(Column(0, 24, &isnull));
    unit->replay_cursor = DatumGetInt64(Column(0, 25, &isnull));
    unit->replay_chunk = DatumGetInt64(Column(0, 26, &isnull));
    unit->replay_last_id = DatumGetInt64(Column(0, 27, &isnull));
    unit->replay_from = DatumGetTimestampTz(Column(0, 28, &isnull));
    unit->replay_to = DatumGetTimestampTz(Column(0, 29, &isnull));
    unit->replay_key = CopiedText(0, 30, context);
  }
  return true;
}

TimestampTz NextDue() {
  Run(plans.next_due, nullptr, nullptr, true, SPI_OK_SELECT);
  bool isnull = false;
  Datum due = Column(0, 1, &isnull);
  return isnull ? 0 : DatumGetTimestampTz(due);
}

// Why the handler cannot run at all, or nullptr.
const char *HandlerProblem(const Unit &unit) {
  if (!OidIsValid(unit.handler_fn)) {
    return psprintf("handler %s does not exist (dropped?); recreate it and call evproc_resume",
                    unit.handler);
  }
  std::string_view state(unit.owner_state);
  if (state == "missing")
    return psprintf("the subscription's owner role (oid %u) was dropped", unit.owner);
  if (state == "superuser") {
    return psprintf("owner %s is now a superuser; handlers never run as a superuser",
                    GetUserNameFromId(unit.owner, false));
  }
  if (state == "no_execute") {
    return psprintf("owner %s may not execute handler %s", GetUserNameFromId(unit.owner, false),
                    unit.handler);
  }
  if (state == "no_subscribe") {
    return psprintf("owner %s no longer holds the 'subscribe' privilege on topic \"%s\"",
                    GetUserNameFromId(unit.owner, false), unit.topic);
  }
  return nullptr;
}

void SetReason(SPIPlanPtr plan, const Unit &unit, const char *reason) {
  Datum args[] = {Int32GetDatum(unit.subscription_id), CStringGetTextDatum(reason)};
  Run(plan, args, nullptr, false, SPI_OK_UPDATE);
}

void ReadWindowBounds(const Unit &unit, const Position &at, Window *window, MemoryContext context) {
  Datum args[] = {Int64GetDatum(at.tick_id), Int64GetDatum(at.window_tick),
                  Int32GetDatum(SlotOf(unit.topic_id, unit.partition))};
  char nulls[] = {' ', NullFlag(at.window_tick == 0), ' ', '\0'};
  if (Run(plans.bounds, args, nulls, true, SPI_OK_SELECT) != 1) {
    elog(ERROR, "evproc: ticks of subscription \"%s\" partition %d are missing", unit.name,
         unit.partition);
  }
  bool isnull = false;
  window->target_tick = DatumGetInt64(Column(0, 1, &isnull));
  window->present = window->target_tick > at.tick_id;
  window->target_snapshot = CopiedColumn(0, 2, &isnull, context);
  window->target_xmax = CopiedColumn(0, 3, &isnull, context);
  window->from_xip = CopiedColumn(0, 4, &isnull, context);
  window->from_xmax = CopiedColumn(0, 5, &isnull, context);
  window->pending_count = DatumGetInt32(Column(0, 6, &isnull));
  window->complete = false;
}

void ReadDueRetries(const Unit &unit, ItemList *items, MemoryContext context) {
  Datum args[] = {Int32GetDatum(unit.subscription_id), Int32GetDatum(unit.partition),
                  Int32GetDatum(unit.batch_size)};
  uint64 rows = Run(plans.due_retries, args, nullptr, true, SPI_OK_SELECT);
  for (uint64 row = 0; row < rows; ++row) {
    bool isnull = false;
    Item item{};
    item.event_id = DatumGetInt64(Column(row, 1, &isnull));
    item.partition = unit.partition;
    item.event = CopiedColumn(row, 2, &isnull, context);
    item.key = CopiedText(row, 3, context);
    item.from_retry = true;
    item.failed_attempts = DatumGetInt32(Column(row, 4, &isnull));
    Datum first = Column(row, 5, &isnull);
    item.has_first_failed_at = !isnull;
    item.first_failed_at = isnull ? 0 : DatumGetTimestampTz(first);
    item.enqueued_at = DatumGetTimestampTz(Column(row, 6, &isnull));
    item.outcome = Outcome::kPending;
    Append(items, item, context);
  }
}

void ReadParkedKeys(const Unit &unit, KeyList *keys, MemoryContext context) {
  Datum args[] = {Int32GetDatum(unit.subscription_id), Int32GetDatum(unit.partition)};
  uint64 rows = unit.replay ? Run(plans.parked_keys_anywhere, args, nullptr, true, SPI_OK_SELECT)
                            : Run(plans.parked_keys, args, nullptr, true, SPI_OK_SELECT);
  keys->keys = static_cast<char **>(MemoryContextAlloc(context, sizeof(char *) * (rows + 1)));
  keys->count = static_cast<int>(rows);
  for (uint64 row = 0; row < rows; ++row) keys->keys[row] = CopiedText(row, 1, context);
}

// An event read by a window part or a replay: both statements start with the same four
// columns (the evproc.event, its id, key and enqueued_at).
Item EventRow(uint64 row, int32 partition, MemoryContext context) {
  bool isnull = false;
  Item item{};
  item.event = CopiedColumn(row, 1, &isnull, context);
  item.event_id = DatumGetInt64(Column(row, 2, &isnull));
  item.partition = partition;
  item.key = CopiedText(row, 3, context);
  item.enqueued_at = DatumGetTimestampTz(Column(row, 4, &isnull));
  item.outcome = Outcome::kPending;
  return item;
}

// Reads up to `limit` rows of one part of the window after the id cursor.
uint64 ReadWindowPart(SPIPlanPtr plan, const Unit &unit, const Position &at, const Window &window,
                      int limit, ItemList *part, MemoryContext context) {
  Datum args[] = {Int32GetDatum(unit.topic_id),
                  Int32GetDatum(unit.partition),
                  window.from_xip,
                  window.from_xmax,
                  window.target_snapshot,
                  window.target_xmax,
                  Int64GetDatum(at.has_cursor ? at.cursor_id : 0),
                  Int64GetDatum(limit),
                  TimestampTzGetDatum(unit.history_from),
                  CStringGetTextDatum(unit.topic)};
  uint64 rows = Run(plan, args, nullptr, true, SPI_OK_SELECT);
  for (uint64 row = 0; row < rows; ++row)
    Append(part, EventRow(row, unit.partition, context), context);
  return rows;
}

// Appends the next up to `limit` events of the window in id order (its two parts merged)
// and moves the cursor past them.
void ReadWindow(const Unit &unit, Position *at, Window *window, int limit, ItemList *items,
                MemoryContext context) {
  ItemList pending{};
  ItemList range{};
  uint64 pending_rows = 0;
  if (window->pending_count > 0) {
    pending_rows =
        ReadWindowPart(plans.window_pending, unit, *at, *window, limit, &pending, context);
  }
  uint64 range_rows =
      ReadWindowPart(plans.window_range, unit, *at, *window, limit, &range, context);
  int i = 0;
  int j = 0;
  for (int taken = 0; taken < limit && (i < pending.count || j < range.count); ++taken) {
    bool from_pending = j == range.count ||
                        (i < pending.count && pending.items[i].event_id < range.items[j].event_id);
    const Item &next = from_pending ? pending.items[i++] : range.items[j++];
    Append(items, next, context);
    at->has_cursor = true;
    at->cursor_id = next.event_id;
  }
  window->complete = pending_rows < static_cast<uint64>(limit) &&
                     range_rows < static_cast<uint64>(limit) && i == pending.count &&
                     j == range.count;
}

// Where a replay stands: ids up to cursor were looked at; the next read spans chunk ids.
struct ReplayPosition {
  int64 cursor;
  int64 chunk;
  bool done;
};

// Reads a replay's next events (up to a batch) and moves its position past the ids it
// looked at. Empty reads (ids of other topics, or dropped) widen the next read, so old
// gaps are crossed in a few steps; a read that finds events narrows it back.
void ReadReplay(const Unit &unit, ReplayPosition *at, ItemList *items, MemoryContext context) {
  constexpr int kMostReadsPerBatch = 16;
  constexpr int64 kMostChunk = 1000000;
  int64 base_chunk = 10 * static_cast<int64>(unit.batch_size);
  if (base_chunk < 10000) base_chunk = 10000;
  for (int read = 0; read < kMostReadsPerBatch && !at->done && items->count == 0; ++read) {
    Datum args[10] = {Int64GetDatum(at->cursor),
                      Int64GetDatum(at->chunk),
                      Int64GetDatum(unit.replay_last_id),
                      Int32GetDatum(unit.topic_id),
                      TimestampTzGetDatum(unit.replay_from),
                      TimestampTzGetDatum(unit.replay_to),
                      TextOrNull(unit.replay_key),
                      Int32GetDatum(unit.subscription_id),
                      Int64GetDatum(unit.batch_size),
                      CStringGetTextDatum(unit.topic)};
    char nulls[11] = {' ', ' ', ' ', ' ', ' ', ' ', NullFlag(unit.replay_key == nullptr),
                      ' ', ' ', ' ', '\0'};
    uint64 rows = Run(plans.replay_events, args, nulls, true, SPI_OK_SELECT);
    for (uint64 row = 0; row < rows; ++row) {
      bool isnull = false;
      Append(items, EventRow(row, DatumGetInt32(Column(row, 5, &isnull)), context), context);
    }
    if (rows == static_cast<uint64>(unit.batch_size)) {
      at->cursor = items->items[items->count - 1].event_id;
    } else {
      at->cursor += at->chunk;
      if (at->cursor > unit.replay_last_id) at->cursor = unit.replay_last_id;
    }
    at->chunk = rows == 0 ? (at->chunk * 4 > kMostChunk ? kMostChunk : at->chunk * 4) : base_chunk;
    at->done = at->cursor >= unit.replay_last_id;
  }
}

// ---------------------------------------------------------------------------------------
// Delivery with poison isolation.
// ---------------------------------------------------------------------------------------
class Batch {
 public:
  Batch(const Unit &unit, ItemList &items, MemoryContext context)
      : items_(items.items), count_(static_cast<size_t>(items.count)), context_(context) {
    target_ = HandlerTarget{unit.handler_fn, unit.batch_form,  unit.owner,
                            unit.timeout_ms, plans.event_type, handler_search_path};
  }

  // Delivers the pending items in order. Returns the error of a handler that is broken
  // for the whole batch (nothing was charged to the events), or nullptr.
  ErrorData *Deliver(const std::unordered_set<std::string> &parked) {
    std::vector<size_t> line;
    for (size_t i = 0; i < count_; ++i) {
      Item &item = items_[i];
      // Window events of parked keys wait behind their head, in order.
      if (!item.from_retry && item.key != nullptr && parked.count(item.key) != 0) {
        item.outcome = Outcome::kParked;
        continue;
      }
      line.push_back(i);
    }
    if (line.empty()) return nullptr;
    ErrorData *error = TryCall(line);
    if (error == nullptr) {
      for (size_t i : line) items_[i].outcome = Outcome::kDelivered;
      return nullptr;
    }
    if (IsBrokenHandler(error)) return error;
    Bisect(line, error);
    return nullptr;
  }

 private:
  // Errors that say the handler itself cannot work (its code refers to something missing
  // or forbidden), whatever the events: pause instead of burning every event's attempts.
  static bool IsBrokenHandler(const ErrorData *error) {
    const char *state = unpack_sql_state(error->sqlerrcode);
    return std::strncmp(state, "42", 2) == 0 || std::strncmp(state, "3F", 2) == 0;
  }

  ErrorData *TryCall(const std::vector<size_t> &line) {
    std::vector<Datum> events;
    events.reserve(line.size());
    for (size_t i : line) events.push_back(items_[i].event);
    return CallHandlerIsolated(target_, events.data(), static_cast<int>(events.size()), context_);
  }

  // The line failed as a whole with `error`: split it until the poison events are alone.
  // Halves go in order, and a key that failed holds back its later events.
  void Bisect(const std::vector<size_t> &line, ErrorData *error) {
    if (line.size() == 1) {
      MarkFailed(line.front(), error);
      return;
    }
    size_t half = line.size() / 2;
    DeliverLine(
        std::vector<size_t>(line.begin(), line.begin() + static_cast<std::ptrdiff_t>(half)));
    DeliverLine(std::vector<size_t>(line.begin() + static_cast<std::ptrdiff_t>(half), line.end()));
  }

  void DeliverLine(const std::vector<size_t> &candidates) {
    std::vector<size_t> line;
    for (size_t i : candidates) {
      Item &item = items_[i];
      if (item.key != nullptr && failed_keys_.count(item.key) != 0) {
        if (!item.from_retry) item.outcome = Outcome::kParked;
        continue;  // a retry stays where it is in line
      }
      line.push_back(i);
    }
    if (line.empty()) return;
    ErrorData *error = TryCall(line);
    if (error == nullptr) {
      for (size_t i : line) items_[i].outcome = Outcome::kDelivered;
      return;
    }
    Bisect(line, error);
  }

  void MarkFailed(size_t index, ErrorData *error) {
    Item &item = items_[index];
    item.outcome = Outcome::kFailed;
    item.error = error;
    if (item.key != nullptr) failed_keys_.emplace(item.key);
  }

  Item *items_;
  size_t count_;
  MemoryContext context_;
  HandlerTarget target_{};
  std::unordered_set<std::string> failed_keys_;
};

// ---------------------------------------------------------------------------------------
// Writing the outcome.
// ---------------------------------------------------------------------------------------
struct ErrorFields {
  Datum values[5];
  char nulls[5];
};

ErrorFields FieldsOf(const ErrorData *error) {
  ErrorFields fields{};
  const char *texts[5] = {
      error != nullptr ? pstrdup(unpack_sql_state(error->sqlerrcode)) : nullptr,
      error != nullptr ? error->message : nullptr, error != nullptr ? error->detail : nullptr,
      error != nullptr ? error->hint : nullptr, error != nullptr ? error->context : nullptr};
  for (int i = 0; i < 5; ++i) {
    fields.values[i] = TextOrNull(texts[i]);
    fields.nulls[i] = NullFlag(texts[i] == nullptr);
  }
  return fields;
}

void Park(const Unit &unit, const Item &item, bool head, bool blocked, int32 attempt,
          TimestampTz next_attempt, const ErrorData *error, TimestampTz now) {
  ErrorFields fields = FieldsOf(error);
  Datum args[15] = {Int32GetDatum(unit.subscription_id),
                    Int32GetDatum(item.partition),
                    TextOrNull(item.key),
                    Int64GetDatum(item.event_id),
                    item.event,
                    BoolGetDatum(head),
                    BoolGetDatum(blocked),
                    Int32GetDatum(attempt),
                    TimestampTzGetDatum(next_attempt),
                    TimestampTzGetDatum(now)};
  char nulls[16] = {' ', ' ', NullFlag(item.key == nullptr), ' ', ' ', ' ', ' ',
                    ' ', ' ', NullFlag(error == nullptr)};
  for (int i = 0; i < 5; ++i) {
    args[10 + i] = fields.values[i];
    nulls[10 + i] = fields.nulls[i];
  }
  nulls[15] = '\0';
  Run(plans.park, args, nulls, false, SPI_OK_INSERT);
}

void DeadLetter(const Unit &unit, const Item &item, int32 attempts, TimestampTz now) {
  ErrorFields fields = FieldsOf(item.error);
  Datum args[12] = {Int32GetDatum(unit.subscription_id), Int32GetDatum(item.partition), item.event,
                    Int32GetDatum(attempts)};
  char nulls[13] = {' ', ' ', ' ', ' '};
  for (int i = 0; i < 5; ++i) {
    args[4 + i] = fields.values[i];
    nulls[4 + i] = fields.nulls[i];
  }
  args[9] = TimestampTzGetDatum(item.first_failed_at);
  nulls[9] = NullFlag(!item.has_first_failed_at);
  args[10] = TimestampTzGetDatum(now);
  nulls[10] = ' ';
  args[11] = Int32GetDatum(MyProcPid);
  nulls[11] = ' ';
  nulls[12] = '\0';
  Run(plans.dead_letter, args, nulls, false, SPI_OK_INSERT);
}

// The unit's new position. history_from is dropped once the unit left tick 0.
void Advance(const Unit &unit, const Position &at, bool retries_changed, int64 delivered) {
  bool keep_history = unit.has_history_from && at.tick_id == 0;
  Datum args[8] = {Int32GetDatum(unit.subscription_id), Int32GetDatum(unit.partition),
                   Int64GetDatum(at.tick_id),           Int64GetDatum(at.window_tick),
                   Int64GetDatum(at.cursor_id),         TimestampTzGetDatum(unit.history_from),
                   BoolGetDatum(retries_changed),       Int64GetDatum(delivered)};
  char nulls[9] = {' ',
                   ' ',
                   ' ',
                   NullFlag(at.window_tick == 0),
                   NullFlag(!at.has_cursor),
                   NullFlag(!keep_history),
                   ' ',
                   ' ',
                   '\0'};
  Run(plans.advance, args, nulls, false, SPI_OK_UPDATE);
}

struct Tally {
  int64 delivered = 0;
  int64 failed = 0;
  int64 dead = 0;
};

Datum ArrayOf(const std::vector<Datum> &values, Oid type) {
  return CallPostgres([&] {
    int16 length = 0;
    bool by_value = false;
    char align = 0;
    get_typlenbyvalalign(type, &length, &by_value, &align);
    return PointerGetDatum(construct_array(const_cast<Datum *>(values.data()),
                                           static_cast<int>(values.size()), type, length, by_value,
                                           align));
  });
}

// The batch's counts and end-to-end latencies, applied to shared memory at commit. A
// replayed event that failed joins the retry line (or the dead letters): it counts as
// pending again, like a re-driven dead letter.
void CountOutcome(const Unit &unit, const ItemList &items, const Tally &tally) {
  CallPostgres([&] {
    metrics::NoteDelivered(unit.subscription_id, tally.delivered, unit.replay);
    metrics::NoteFailed(unit.subscription_id, tally.failed);
    metrics::NoteDead(unit.subscription_id, tally.dead);
    TimestampTz now = GetCurrentTimestamp();
    int64 requeued = 0;
    for (int i = 0; i < items.count; ++i) {
      const Item &item = items.items[i];
      if (unit.replay) {
        if (item.outcome == Outcome::kParked || item.outcome == Outcome::kFailed) ++requeued;
      } else if (item.outcome == Outcome::kDelivered) {
        metrics::NoteLatency(unit.subscription_id, now - item.enqueued_at);
      }
    }
    if (requeued > 0) metrics::NoteRequeued(unit.subscription_id, requeued);
  });
}

struct Written {
  Tally tally;
  bool retries_changed = false;
  std::vector<int32> parked_partitions;  // partitions whose retry line got new heads
};

// Records every item's outcome in line order (so parked events keep their order).
Written WriteItems(const Unit &unit, const ItemList &items) {
  Written written;
  Tally &tally = written.tally;
  TimestampTz now = CallPostgres([] { return GetCurrentTransactionStartTimestamp(); });
  std::vector<Datum> settled_retries;               // delivered, or dead without blocking
  std::map<int32, std::vector<Datum>> heads_moved;  // keys whose head left the line
  auto key_datum = [](const Item &item) {
    return CallPostgres([&] { return CStringGetTextDatum(item.key); });
  };
  auto parked_in = [&](const Item &item) {
    written.retries_changed = true;
    written.parked_partitions.push_back(item.partition);
  };
  for (int i = 0; i < items.count; ++i) {
    const Item &item = items.items[i];
    switch (item.outcome) {
      case Outcome::kDelivered:
        ++tally.delivered;
        if (item.from_retry) {
          settled_retries.push_back(Int64GetDatum(item.event_id));
          if (item.key != nullptr) heads_moved[item.partition].push_back(key_datum(item));
        }
        break;
      case Outcome::kParked:
        // Behind its key's head; only window and replay events get here.
        CallPostgres([&] { Park(unit, item, false, false, 0, DT_NOEND, nullptr, now); });
        parked_in(item);
        break;
      case Outcome::kFailed: {
        ++tally.failed;
        written.retries_changed = true;
        int32 attempts = item.failed_attempts + 1;
        if (attempts >= unit.max_attempts) {
          ++tally.dead;
          CallPostgres([&] { DeadLetter(unit, item, attempts, now); });
          if (unit.block_on_dead && item.key != nullptr) {
            CallPostgres(
                [&] { Park(unit, item, true, true, attempts, DT_NOEND, item.error, now); });
            parked_in(item);
          } else {
            if (item.from_retry) settled_retries.push_back(Int64GetDatum(item.event_id));
            // Events of its key parked behind it (earlier, or in this very batch) get a
            // new head: the oldest of them.
            if (item.key != nullptr) heads_moved[item.partition].push_back(key_datum(item));
          }
        } else {
          CallPostgres([&] {
            int64 delay = core::BackoffDelay(attempts, unit.backoff_base_us, unit.backoff_cap_us,
                                             pg_prng_double(&pg_global_prng_state));
            Park(unit, item, true, false, attempts, now + delay, item.error, now);
          });
          parked_in(item);
        }
        break;
      }
      case Outcome::kPending:
        break;  // a retry held back behind its key's new failure: stays in line
    }
  }
  if (!settled_retries.empty()) {
    written.retries_changed = true;
    Datum ids = ArrayOf(settled_retries, INT8OID);
    CallPostgres([&] {
      Datum args[] = {Int32GetDatum(unit.subscription_id), ids};
      Run(plans.delete_retries, args, nullptr, false, SPI_OK_DELETE);
    });
  }
  for (const auto &moved : heads_moved) {
    int32 partition = moved.first;  // (a structured binding cannot be captured in C++17)
    Datum key_array = ArrayOf(moved.second, TEXTOID);
    CallPostgres([&] {
      Datum args[] = {Int32GetDatum(unit.subscription_id), Int32GetDatum(partition), key_array};
      Run(plans.promote, args, nullptr, false, SPI_OK_UPDATE);
    });
    written.parked_partitions.push_back(partition);
  }
  return written;
}

// A replay's outcome: its failed events joined the retry lines of their partitions,
// whose units must look at them; the replay's cursor moves.
Tally WriteReplayOutcome(const Unit &unit, const ItemList &items, const ReplayPosition &at) {
  Written written = WriteItems(unit, items);
  if (!written.parked_partitions.empty()) {
    std::vector<Datum> partitions;
    for (int32 partition : written.parked_partitions)
      partitions.push_back(Int32GetDatum(partition));
    Datum partition_array = ArrayOf(partitions, INT4OID);
    CallPostgres([&] {
      Datum args[] = {Int32GetDatum(unit.subscription_id), partition_array};
      Run(plans.retry_due, args, nullptr, false, SPI_OK_UPDATE);
    });
  }
  CallPostgres([&] {
    Datum args[] = {Int32GetDatum(unit.replay_id),
                    Int64GetDatum(at.cursor),
                    Int64GetDatum(at.chunk),
                    Int64GetDatum(written.tally.delivered),
                    Int64GetDatum(written.tally.failed),
                    BoolGetDatum(at.done)};
    Run(plans.advance_replay, args, nullptr, false, SPI_OK_UPDATE);
  });
  CountOutcome(unit, items, written.tally);
  return written.tally;
}

// Records the outcome and moves the unit.
Tally WriteOutcome(const Unit &unit, const ItemList &items, const Position &at) {
  Written written = WriteItems(unit, items);
  CallPostgres([&] { Advance(unit, at, written.retries_changed, written.tally.delivered); });
  CountOutcome(unit, items, written.tally);
  return written.tally;
}

// ---------------------------------------------------------------------------------------
// The circuit breaker: each worker judges the failures it saw over the last minute.
// ---------------------------------------------------------------------------------------
std::unordered_map<int32, core::FailureWindow> failure_windows;

void JudgeBreaker(const Unit &unit, const Tally &tally, int64 attempted) {
  if (attempted == 0) return;
  core::FailureWindow &window = failure_windows[unit.subscription_id];
  int64 now =
      static_cast<int64>(CallPostgres([] { return GetCurrentTimestamp(); }) / USECS_PER_SEC);
  window.Record(now, attempted, tally.failed);
  if (!window.Exceeded(now, unit.failure_budget, unit.breaker_min_attempts)) return;
  int64 seen = window.Attempts(now);
  int64 failed = window.Failures(now);
  window.Reset();
  CallPostgres([&] {
    const char *reason = psprintf(
        "circuit breaker: %lld of %lld deliveries failed in the last minute (budget %.0f%%); "
        "cooling down",
        static_cast<long long>(failed), static_cast<long long>(seen), unit.failure_budget * 100);
    SetReason(plans.trip, unit, reason);
    ereport(WARNING, (errmsg("evproc: subscription \"%s\" paused: %s", unit.name, reason)));
  });
}

// evproc's statements run with search_path = pg_catalog, pg_temp: the session's (set by
// the server's or the database's configuration, which a database owner may change)
// must not change what they mean while they run as a superuser. Handlers get the
// session's back. Returns the GUC nest level to close with AtEOXact_GUC (an abort
// closes it too).
int PinSearchPath(MemoryContext context) {
  handler_search_path = MemoryContextStrdup(context, namespace_search_path);
  int level = NewGUCNestLevel();
  (void)set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
                          GUC_ACTION_SAVE, true, 0, false);
  return level;
}

MemoryContext BatchContext() {
  static MemoryContext context = nullptr;
  if (context == nullptr) {
    context = CallPostgres([] {
      return AllocSetContextCreate(TopMemoryContext, "evproc batch", ALLOCSET_DEFAULT_SIZES);
    });
  }
  return context;
}

}  // namespace

namespace {

void DeliverClaimed(const Unit &unit, MemoryContext context, BatchResult *out);

// One batch inside the current transaction, SPI connected.
BatchResult DeliverBatch(MemoryContext context, bool report_activity) {
  BatchResult result{};

  // Live units and replays take turns at being looked for first, so neither starves the
  // other while both have work.
  static bool replay_first = false;
  replay_first = !replay_first;
  Unit unit{};
  bool claimed = CallPostgres([&] {
    return EnsurePlans() &&
           (ClaimUnit(&unit, replay_first, context) || ClaimUnit(&unit, !replay_first, context));
  });
  if (!claimed) {
    result.next_due = CallPostgres([] { return OidIsValid(plans.extension) ? NextDue() : 0; });
    return result;
  }
  result.worked = true;
  result.subscription = unit.name;
  result.partition = unit.partition;
  if (report_activity) {
    CallPostgres([&] {
      metrics::WorkerBusy(unit.subscription_id, unit.partition, unit.replay);
      pgstat_report_activity(
          STATE_RUNNING,
          unit.replay
              ? psprintf("evproc: subscription %s replay %d", unit.name, unit.replay_id)
              : psprintf("evproc: subscription %s partition %d", unit.name, unit.partition));
    });
  }
  // The unit's rows are read with a snapshot taken after the claim: the worker that held
  // the unit before may have committed (parked keys, cursor) after our first snapshot.
  // (On an error the transaction's abort pops it.)
  CallPostgres([] { PushActiveSnapshot(GetTransactionSnapshot()); });
  DeliverClaimed(unit, context, &result);
  CallPostgres([] { PopActiveSnapshot(); });
  return result;
}

// Fills the batch from the unit's windows, one after the other (a window is about one
// tick of commits wide, often less than a batch), and moves `at` along.
void ReadWindows(const Unit &unit, Position *at, ItemList *items, MemoryContext context) {
  constexpr int kMostWindowsPerBatch = 64;
  for (int windows = 0; windows < kMostWindowsPerBatch; ++windows) {
    int room = unit.batch_size - items->count;
    if (room <= 0) return;
    Window window{};
    CallPostgres([&] { ReadWindowBounds(unit, *at, &window, context); });
    if (!window.present) return;
    CallPostgres([&] { ReadWindow(unit, at, &window, room, items, context); });
    if (!window.complete) {
      at->window_tick = window.target_tick;
      return;
    }
    *at = Position{window.target_tick, 0, false, 0};
  }
}

void DeliverClaimed(const Unit &unit, MemoryContext context, BatchResult *out) {
  BatchResult &result = *out;
  const char *problem = CallPostgres([&] { return HandlerProblem(unit); });
  if (problem != nullptr) {
    CallPostgres([&] {
      SetReason(plans.pause, unit, problem);
      ereport(WARNING, (errmsg("evproc: subscription \"%s\" paused: %s", unit.name, problem)));
    });
    result.paused = true;
    return;
  }

  ItemList items{};
  KeyList parked_keys{};
  if (unit.retries_due) CallPostgres([&] { ReadDueRetries(unit, &items, context); });
  if (unit.has_retries || unit.replay)
    CallPostgres([&] { ReadParkedKeys(unit, &parked_keys, context); });
  std::unordered_set<std::string> parked(parked_keys.keys, parked_keys.keys + parked_keys.count);
  Position at{unit.tick_id, unit.window_tick, unit.has_cursor, unit.cursor_id};
  ReplayPosition replay_at{unit.replay_cursor, unit.replay_chunk, false};
  if (unit.replay) {
    CallPostgres([&] { ReadReplay(unit, &replay_at, &items, context); });
  } else {
    ReadWindows(unit, &at, &items, context);
  }

  Batch batch(unit, items, context);
  ErrorData *broken = batch.Deliver(parked);
  if (broken != nullptr) {
    // The handler fails before looking at any event: nothing is charged, the unit does
    // not move, and the subscription waits for an operator.
    CallPostgres([&] {
      const char *reason = psprintf("handler %s is broken: %s: %s; fix it and call evproc_resume",
                                    unit.handler, unpack_sql_state(broken->sqlerrcode),
                                    broken->message != nullptr ? broken->message : "");
      SetReason(plans.pause, unit, reason);
      ereport(WARNING, (errmsg("evproc: subscription \"%s\" paused: %s", unit.name, reason)));
    });
    result.paused = true;
    return;
  }
  Tally tally =
      unit.replay ? WriteReplayOutcome(unit, items, replay_at) : WriteOutcome(unit, items, at);
  JudgeBreaker(unit, tally, tally.delivered + tally.failed);
  result.delivered = tally.delivered;
  result.failed = tally.failed;
  result.dead = tally.dead;
}

}  // namespace

BatchResult RunOneBatch() {
  MemoryContext context = BatchContext();
  ExtensionGate gate = ExtensionGate::kInstalled;
  int guc_level = 0;
  CallPostgres([&] {
    MemoryContextReset(context);
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    // First the extension gate (lifecycle.hpp): DROP EXTENSION waits for this batch. A
    // batch that would start during a drop does not queue behind it but backs off: the
    // launcher stops the workers once the drop commits, and its SIGTERM must find them
    // between batches (a clean stop), not in a lock wait (a FATAL). Gone or at a version
    // the library does not serve, the batch is empty and the launcher stops the worker.
    gate = EnterExtension(nullptr);
    if (gate != ExtensionGate::kInstalled) {
      CommitTransactionCommand();
      return;
    }
    guc_level = PinSearchPath(context);
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
    PushActiveSnapshot(GetTransactionSnapshot());
  });
  if (gate == ExtensionGate::kBusy) {
    BatchResult later{};
    later.next_due = GetCurrentTimestamp();  // due now: look again after a short wait
    return later;
  }
  if (gate != ExtensionGate::kInstalled) return BatchResult{};
  BatchResult result = DeliverBatch(context, true);
  CallPostgres([&] {
    PopActiveSnapshot();
    SPI_finish();
    AtEOXact_GUC(true, guc_level);
    CommitTransactionCommand();
    pgstat_report_activity(STATE_IDLE, nullptr);
  });
  return result;
}

BatchResult RunOneBatchInTransaction() {
  MemoryContext context = BatchContext();
  int guc_level = 0;
  CallPostgres([&] {
    MemoryContextReset(context);
    guc_level = PinSearchPath(context);
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
  });
  BatchResult result = DeliverBatch(context, false);
  CallPostgres([&] {
    SPI_finish();
    AtEOXact_GUC(true, guc_level);
  });
  return result;
}

}  // namespace evproc

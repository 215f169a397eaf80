#include "delivery_read.hpp"

#include "delivery_plans.hpp"
#include "error_boundary.hpp"
#include "shared_state.hpp"

extern "C" {
#include "catalog/pg_type_d.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
}

namespace evproc::delivery {
namespace {

using pg::CallPostgres;

// The unit's next window: from its tick to its window tick, or else to the first later
// tick that names its slot among the dirty ones (or the newest tick).
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

// An event read by a window part or a replay: both statements start with the same five
// columns (the evproc.event, its id, key, enqueued_at and whether its key has a parked
// head: NULL when the read did not look, because the unit has no parked keys).
Item EventRow(uint64 row, int32 partition, MemoryContext context) {
  bool isnull = false;
  Item item{};
  item.event = CopiedColumn(row, 1, &isnull, context);
  item.event_id = DatumGetInt64(Column(row, 2, &isnull));
  item.partition = partition;
  item.key = CopiedText(row, 3, context);
  item.enqueued_at = DatumGetTimestampTz(Column(row, 4, &isnull));
  Datum key_parked = Column(row, 5, &isnull);
  item.key_parked = !isnull && DatumGetBool(key_parked);
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
                  CStringGetTextDatum(unit.topic),
                  Int32GetDatum(unit.subscription_id)};
  // Whether each event's key is parked is looked up only in a unit with parked keys
  // (retry_due_at set): the others pay nothing for it (issue 19).
  char nulls[] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', NullFlag(!unit.has_retries),
                  '\0'};
  uint64 rows = Run(plan, args, nulls, true, SPI_OK_SELECT);
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
  // Both parts read each transaction of the window through the window index, in id order
  // from the cursor, and stop after the batch. A plan that reads a transaction whole and
  // sorts it would cost the whole window at every batch (issue 17), and the planner cannot
  // tell from the statistics whether one xid holds ten events or a million: the parts are
  // planned (and re-planned) with sorts disabled, so only the merges of the batch's rows
  // sort. The cost a disabled sort adds would make every read look expensive enough to be
  // JIT-compiled, which costs far more than these reads: jit is off for them too. (An
  // ERROR's abort closes the GUC level too.)
  int guc_level = NewGUCNestLevel();
  (void)set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true,
                          0, false);
  (void)set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                          false);
  if (window->pending_count > 0) {
    pending_rows =
        ReadWindowPart(plans.window_pending, unit, *at, *window, limit, &pending, context);
  }
  uint64 range_rows =
      ReadWindowPart(plans.window_range, unit, *at, *window, limit, &range, context);
  AtEOXact_GUC(true, guc_level);
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

}  // namespace

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
    item.lease_expired = DatumGetBool(Column(row, 7, &isnull));
    item.outcome = Outcome::kPending;
    Append(items, item, context);
  }
}

// Reads a replay's next events (up to a batch) and moves its position past the ids it
// looked at (core::NextReplayStep: empty reads widen the next one).
void ReadReplay(const Unit &unit, ReplayPosition *at, ItemList *items, MemoryContext context) {
  constexpr int kMostReadsPerBatch = 16;
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
    // As the window parts (ReadWindow): a read over a big log partition looks expensive
    // enough to be JIT-compiled at every execution of the kept generic plan, which costs
    // far more than the read of a batch (a replay of 1,000,000 events ran at a sixth of its
    // rate). (An ERROR's abort closes the GUC level too.)
    int guc_level = NewGUCNestLevel();
    (void)set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                            false);
    uint64 rows = Run(plans.replay_events, args, nulls, true, SPI_OK_SELECT);
    AtEOXact_GUC(true, guc_level);
    for (uint64 row = 0; row < rows; ++row) {
      bool isnull = false;
      Append(items, EventRow(row, DatumGetInt32(Column(row, 6, &isnull)), context), context);
    }
    int64 last_read_id = rows == 0 ? 0 : items->items[items->count - 1].event_id;
    *at = core::NextReplayStep(*at, static_cast<int64>(rows), unit.batch_size, last_read_id,
                               unit.replay_last_id);
  }
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

}  // namespace evproc::delivery

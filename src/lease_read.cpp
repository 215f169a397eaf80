// evproc_read (evproc.read_impl): the next events of a pull subscription under a lease
// (docs/design.md, extension/lease.sql). A read claims units as a worker claims one, reads
// each as a worker reads a batch (due retries first, then its snapshot windows; events
// of keys parked before the read wait behind them), records the lease and marks the
// units leased, so that no other read gets their events until the lease ends. Nothing
// of the units' positions moves here: the ack moves them.
//
// With wait, a read that finds nothing waits on its latch (lease_wait.hpp), woken at
// the next tick or acknowledgement. Each look is a subtransaction rolled back when it
// found nothing, so a waiting read holds no unit.
#include <string>
#include <vector>

#include "commit_wake.hpp"
#include "delivery_breaker.hpp"
#include "delivery_claim.hpp"
#include "delivery_outcome.hpp"
#include "delivery_plans.hpp"
#include "delivery_read.hpp"
#include "delivery_types.hpp"
#include "error_boundary.hpp"
#include "lease_plans.hpp"
#include "lease_wait.hpp"
#include "shared_state.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace evproc::lease {
namespace {

namespace dl = delivery;
using dl::Item;
using dl::ItemList;
using dl::Outcome;
using dl::Position;
using dl::Unit;
using pg::CallPostgres;

constexpr int kMostEvents = 10000;
constexpr int64 kMostLeaseUs = INT64CONST(86400000000);  // 1 day
constexpr int64 kMostWaitUs = INT64CONST(3600000000);    // 1 hour

struct Request {
  Oid caller;
  int32 subscription_id;
  int32 max_events;
  int64 lease_us;
};

// A unit the lease holds (partition -1: the subscription's replay).
struct LeasedUnit {
  int32 partition;
  Position before;
  Position after;
  bool has_history_from;
  TimestampTz history_from;
  int32 replay_id;
  dl::ReplayPosition replay_before;
  dl::ReplayPosition replay_after;
};

// One look for events. handed: the events to return (their lease is lease_id).
struct Look {
  bool wrote = false;  // something was written (expiries, units moved): do not wait
  ItemList handed{};
  const char *lease_id = nullptr;
};

int64 IntervalUs(const Interval *interval) {
  return interval->time + interval->day * USECS_PER_DAY +
         static_cast<int64>(interval->month) * DAYS_PER_MONTH * USECS_PER_DAY;
}

// PostgreSQL code: the caller's pull subscription (checked) and its default lease.
void CheckSubscription(Oid caller, Datum name, Request *request) {
  Datum args[] = {ObjectIdGetDatum(caller), name};
  if (dl::Run(plans.consumer_subscription, args, nullptr, false, SPI_OK_SELECT) != 1)
    elog(ERROR, "evproc: could not check the subscription");
  bool isnull = false;
  request->subscription_id = DatumGetInt32(dl::Column(0, 1, &isnull));
  if (request->lease_us == 0) request->lease_us = DatumGetInt64(dl::Column(0, 2, &isnull));
}

// An array of `type` built from values (no NULLs), from C++.
Datum ArrayOf(const std::vector<Datum> &values, const std::vector<bool> &nulls, Oid type) {
  return CallPostgres([&] {
    return values.empty() ? PointerGetDatum(construct_empty_array(type))
                          : ArrayWithNulls(values, nulls, type);
  });
}

// Claims the next unit of the subscription with work that no lease holds, other than
// those of `claimed`. The first claim of a read (`first` null) reads the subscription's
// columns too; the later ones take them from `first` and read only the position.
bool ClaimLeaseUnit(const Request &request, const std::vector<int32> &claimed, const Unit *first,
                    Unit *unit, MemoryContext context) {
  std::vector<Datum> values;
  values.reserve(claimed.size());
  for (int32 partition : claimed) values.push_back(Int32GetDatum(partition));
  std::vector<bool> nulls(values.size(), false);
  Datum args[] = {Int32GetDatum(request.subscription_id), ArrayOf(values, nulls, INT4OID),
                  Int32GetDatum(first != nullptr ? first->topic_id : 0)};
  return CallPostgres([&] {
    if (first == nullptr) {
      if (dl::Run(plans.claim, args, nullptr, false, SPI_OK_SELECT) == 0) return false;
      dl::UnitFromRow(unit, 0, false, context);
      return true;
    }
    if (dl::Run(plans.claim_next, args, nullptr, false, SPI_OK_SELECT) == 0) return false;
    // The claims' first seven columns, as delivery::UnitFromRow reads them.
    *unit = *first;
    bool isnull = false;
    unit->partition = DatumGetInt32(dl::Column(0, 2, &isnull));
    unit->tick_id = DatumGetInt64(dl::Column(0, 3, &isnull));
    Datum window_tick = dl::Column(0, 4, &isnull);
    unit->window_tick = isnull ? 0 : DatumGetInt64(window_tick);
    Datum cursor_id = dl::Column(0, 5, &isnull);
    unit->has_cursor = !isnull;
    unit->cursor_id = isnull ? 0 : DatumGetInt64(cursor_id);
    Datum history_from = dl::Column(0, 6, &isnull);
    unit->has_history_from = !isnull;
    unit->history_from = isnull ? DT_NOBEGIN : DatumGetTimestampTz(history_from);
    Datum retry_due_at = dl::Column(0, 7, &isnull);
    unit->has_retries = !isnull;
    unit->retries_due =
        !isnull && DatumGetTimestampTz(retry_due_at) <= GetCurrentTransactionStartTimestamp();
    return true;
  });
}

// Claims the subscription's running replay if no lease holds it.
bool ClaimLeaseReplay(const Request &request, Unit *unit, MemoryContext context) {
  Datum args[] = {Int32GetDatum(request.subscription_id)};
  return CallPostgres([&] {
    if (dl::Run(plans.claim_replay, args, nullptr, false, SPI_OK_SELECT) == 0) return false;
    dl::UnitFromRow(unit, 0, true, context);
    return true;
  });
}

// Why the subscription cannot be read any more (its owner), or nullptr. Nothing runs as
// the owner of a pull subscription: only the owner's existence and its 'subscribe'
// privilege matter.
const char *OwnerProblem(const Unit &unit) {
  if (unit.owner_status != dl::OwnerStatus::kMissing &&
      unit.owner_status != dl::OwnerStatus::kNoSubscribe) {
    return nullptr;
  }
  return dl::OwnerStatusText(unit);
}

// Whether a due retry read is the head of a lease that expired.
bool ExpiredHeadDue(const ItemList &items) {
  for (int i = 0; i < items.count; ++i) {
    if (items.items[i].lease_expired) return true;
  }
  return false;
}

// Records the lease and marks its units. Returns its id.
const char *RecordLease(const Request &request, const std::vector<LeasedUnit> &units,
                        const ItemList &items, const std::vector<bool> &from_replay,
                        MemoryContext context) {
  std::vector<Datum> partition, tick_before, window_before, cursor_before, tick_after, window_after,
      cursor_after, history_from, replay_id, replay_chunk, replay_done;
  std::vector<bool> no_nulls(units.size(), false), window_before_null, cursor_before_null,
      window_after_null, cursor_after_null, history_null, replay_null;
  std::vector<Datum> live_partitions;
  int32 leased_replay = 0;
  for (const LeasedUnit &unit : units) {
    partition.push_back(Int32GetDatum(unit.partition));
    replay_null.push_back(unit.partition >= 0);
    replay_id.push_back(Int32GetDatum(unit.replay_id));
    replay_chunk.push_back(Int64GetDatum(unit.replay_after.chunk));
    replay_done.push_back(BoolGetDatum(unit.replay_after.done));
    if (unit.partition < 0) {
      // A replay: its cursor before and after the read.
      leased_replay = unit.replay_id;
      tick_before.push_back(Int64GetDatum(0));
      window_before.push_back(0);
      window_before_null.push_back(true);
      cursor_before.push_back(Int64GetDatum(unit.replay_before.cursor));
      cursor_before_null.push_back(false);
      tick_after.push_back(Int64GetDatum(0));
      window_after.push_back(0);
      window_after_null.push_back(true);
      cursor_after.push_back(Int64GetDatum(unit.replay_after.cursor));
      cursor_after_null.push_back(false);
      history_from.push_back(0);
      history_null.push_back(true);
      continue;
    }
    live_partitions.push_back(Int32GetDatum(unit.partition));
    tick_before.push_back(Int64GetDatum(unit.before.tick_id));
    window_before.push_back(Int64GetDatum(unit.before.window_tick));
    window_before_null.push_back(unit.before.window_tick == 0);
    cursor_before.push_back(Int64GetDatum(unit.before.cursor_id));
    cursor_before_null.push_back(!unit.before.has_cursor);
    tick_after.push_back(Int64GetDatum(unit.after.tick_id));
    window_after.push_back(Int64GetDatum(unit.after.window_tick));
    window_after_null.push_back(unit.after.window_tick == 0);
    cursor_after.push_back(Int64GetDatum(unit.after.cursor_id));
    cursor_after_null.push_back(!unit.after.has_cursor);
    history_from.push_back(TimestampTzGetDatum(unit.history_from));
    history_null.push_back(!unit.has_history_from);
  }
  std::vector<Datum> event_id, event_partition, key, from_retry, failed_attempts, first_failed_at,
      enqueued_at, handed_out, replayed;
  std::vector<bool> none(static_cast<size_t>(items.count), false), key_null, first_null;
  for (int i = 0; i < items.count; ++i) {
    const Item &item = items.items[i];
    event_id.push_back(Int64GetDatum(item.event_id));
    event_partition.push_back(Int32GetDatum(item.partition));
    key.push_back(item.key != nullptr ? CallPostgres([&] { return CStringGetTextDatum(item.key); })
                                      : static_cast<Datum>(0));
    key_null.push_back(item.key == nullptr);
    from_retry.push_back(BoolGetDatum(item.from_retry));
    failed_attempts.push_back(Int32GetDatum(item.failed_attempts));
    first_failed_at.push_back(TimestampTzGetDatum(item.first_failed_at));
    first_null.push_back(!item.has_first_failed_at);
    enqueued_at.push_back(TimestampTzGetDatum(item.enqueued_at));
    handed_out.push_back(BoolGetDatum(item.outcome != Outcome::kParked));
    replayed.push_back(BoolGetDatum(from_replay[static_cast<size_t>(i)]));
  }
  Datum partitions =
      ArrayOf(live_partitions, std::vector<bool>(live_partitions.size(), false), INT4OID);
  Datum args[22] = {Int32GetDatum(request.subscription_id),
                    ArrayOf(partition, no_nulls, INT4OID),
                    ArrayOf(tick_before, no_nulls, INT8OID),
                    ArrayOf(window_before, window_before_null, INT8OID),
                    ArrayOf(cursor_before, cursor_before_null, INT8OID),
                    ArrayOf(tick_after, no_nulls, INT8OID),
                    ArrayOf(window_after, window_after_null, INT8OID),
                    ArrayOf(cursor_after, cursor_after_null, INT8OID),
                    ArrayOf(history_from, history_null, TIMESTAMPTZOID),
                    ArrayOf(event_id, none, INT8OID),
                    ArrayOf(event_partition, none, INT4OID),
                    ArrayOf(key, key_null, TEXTOID),
                    ArrayOf(from_retry, none, BOOLOID),
                    ArrayOf(failed_attempts, none, INT4OID),
                    ArrayOf(first_failed_at, first_null, TIMESTAMPTZOID),
                    ArrayOf(enqueued_at, none, TIMESTAMPTZOID),
                    ArrayOf(handed_out, none, BOOLOID),
                    Int64GetDatum(request.lease_us),
                    ArrayOf(replay_id, replay_null, INT4OID),
                    ArrayOf(replay_chunk, replay_null, INT8OID),
                    ArrayOf(replay_done, replay_null, BOOLOID),
                    ArrayOf(replayed, none, BOOLOID)};
  return CallPostgres([&] {
    if (dl::Run(plans.insert_lease, args, nullptr, false, SPI_OK_INSERT_RETURNING) != 1)
      elog(ERROR, "evproc: could not record a lease");
    const char *id = dl::CopiedText(0, 1, context);
    bool isnull = false;
    Datum expires_at = dl::Column(0, 2, &isnull);
    Datum mark[] = {Int32GetDatum(request.subscription_id), partitions, CStringGetTextDatum(id),
                    expires_at};
    dl::Run(plans.mark_leased, mark, nullptr, false, SPI_OK_UPDATE);
    if (leased_replay != 0) {
      Datum mark_replay[] = {Int32GetDatum(leased_replay), CStringGetTextDatum(id), expires_at};
      dl::Run(plans.mark_replay_leased, mark_replay, nullptr, false, SPI_OK_UPDATE);
    }
    return id;
  });
}

// One look: ends expired leases of the subscription, claims units until max_events are
// handed out, records the lease.
Look LookOnce(const Request &request, MemoryContext context) {
  Look look;
  Datum expired_args[] = {Int32GetDatum(request.subscription_id)};
  if (ExpireLeases(plans.expired, expired_args) > 0) look.wrote = true;

  std::vector<int32> claimed;
  Unit first{};
  std::vector<LeasedUnit> leased;
  ItemList leased_items{};
  std::vector<bool> from_replay;
  int handed = 0;
  // Live units first, then the subscription's replay (if one runs) with the room left.
  bool replay_looked = false;
  while (handed < request.max_events) {
    Unit unit{};
    if (!ClaimLeaseUnit(request, claimed, claimed.empty() ? nullptr : &first, &unit, context)) {
      if (replay_looked || !ClaimLeaseReplay(request, &unit, context)) break;
      replay_looked = true;
    } else {
      if (claimed.empty()) first = unit;
      claimed.push_back(unit.partition);
    }
    const char *problem = CallPostgres([&] { return OwnerProblem(unit); });
    if (problem != nullptr) {
      CallPostgres([&] {
        Datum args[] = {Int32GetDatum(unit.subscription_id), CStringGetTextDatum(problem)};
        dl::Run(plans.pause, args, nullptr, false, SPI_OK_UPDATE);
        ereport(WARNING, (errmsg("evproc: subscription \"%s\" paused: %s", unit.name, problem)));
      });
      look.wrote = true;
      break;
    }
    // Read with a snapshot taken after the claim, as a worker does: the lease that held
    // the unit before may have ended after our first snapshot.
    unit.batch_size = request.max_events - handed;
    ItemList items{};
    Position before{unit.tick_id, unit.window_tick, unit.has_cursor, unit.cursor_id};
    Position at = before;
    dl::ReplayPosition replay_before{unit.replay_cursor, unit.replay_chunk, false};
    dl::ReplayPosition replay_at = replay_before;
    CallPostgres([&] {
      PushActiveSnapshot(GetTransactionSnapshot());
      if (unit.retries_due) dl::ReadDueRetries(unit, &items, context);
      if (unit.replay) dl::ReadReplay(unit, &replay_at, &items, context);
    });
    // After an expiry each event of the expired lease is handed out alone, until one is
    // acknowledged or nacked: the consumer may have died of one of them, and handing
    // them out together again would charge every innocent head an attempt at each death,
    // until all of them were dead letters (docs/consumers.md, "Ending a lease").
    bool alone = ExpiredHeadDue(items);
    if (alone && handed > 0) {
      CallPostgres([] { PopActiveSnapshot(); });
      break;  // the lease so far goes out; this unit waits for a read of its own
    }
    if (alone) {
      items = ItemList{};
      unit.batch_size = 1;
      CallPostgres([&] { dl::ReadDueRetries(unit, &items, context); });
    }
    if (!unit.replay && !alone) dl::ReadWindows(unit, &at, &items, context);
    CallPostgres([] { PopActiveSnapshot(); });
    // Events of keys parked before the read wait behind their head, in order (each read
    // says whether its event's key is parked, as a worker's does).
    int unit_handed = 0;
    for (int i = 0; i < items.count; ++i) {
      Item &item = items.items[i];
      if (!item.from_retry && item.key_parked) {
        item.outcome = Outcome::kParked;
      } else {
        item.outcome = Outcome::kPending;
        ++unit_handed;
      }
    }
    if (unit_handed == 0) {
      // Nothing to hand out: the unit moves on at once, as a worker's batch would.
      if (unit.replay) {
        (void)dl::WriteReplayOutcome(unit, items, replay_at);
      } else {
        (void)dl::WriteOutcome(unit, items, at);
      }
      look.wrote = true;
      continue;
    }
    leased.push_back(LeasedUnit{unit.replay ? -1 : unit.partition, before, at,
                                unit.has_history_from, unit.history_from, unit.replay_id,
                                replay_before, replay_at});
    for (int i = 0; i < items.count; ++i) {
      CallPostgres([&] { dl::Append(&leased_items, items.items[i], context); });
      from_replay.push_back(unit.replay);
      if (items.items[i].outcome != Outcome::kParked) {
        CallPostgres([&] { dl::Append(&look.handed, items.items[i], context); });
      }
    }
    handed += unit_handed;
    if (alone) break;
  }
  if (leased.empty()) return look;
  look.lease_id = RecordLease(request, leased, leased_items, from_replay, context);
  look.wrote = true;
  return look;
}

// PostgreSQL code: the moments that may end a wait (see kReadNextDue): 0 when none.
void NextDue(const Request &request, TimestampTz *retry_due, TimestampTz *lease_expiry) {
  Datum args[] = {Int32GetDatum(request.subscription_id)};
  dl::Run(plans.next_due, args, nullptr, false, SPI_OK_SELECT);
  bool isnull = false;
  Datum due = dl::Column(0, 1, &isnull);
  *retry_due = isnull ? 0 : DatumGetTimestampTz(due);
  Datum expiry = dl::Column(0, 2, &isnull);
  *lease_expiry = isnull ? 0 : DatumGetTimestampTz(expiry);
}

// Looks until events come, the wait ends, or a moment comes that only a later
// transaction can serve (a retry falls due: its read compares with now()).
Look Read(const Request &request, int64 wait_us, MemoryContext context) {
  if (wait_us <= 0) return LookOnce(request, context);
  ReaderRegistration registration;
  TimestampTz deadline = CallPostgres([] { return GetCurrentTimestamp(); }) + wait_us;
  for (;;) {
    MemoryContext outer = CurrentMemoryContext;
    ResourceOwner owner = CurrentResourceOwner;
    CallPostgres([&] {
      BeginInternalSubTransaction(nullptr);
      MemoryContextSwitchTo(outer);
    });
    uint32 wakes_before = ReaderWakes();  // atomics only: nothing to guard
    Look look = LookOnce(request, context);
    if (look.wrote) {
      CallPostgres([&] {
        ReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(outer);
        CurrentResourceOwner = owner;
      });
      return look;
    }
    // Found nothing: give back the claims (row locks) before waiting.
    CallPostgres([&] {
      RollbackAndReleaseCurrentSubTransaction();
      MemoryContextSwitchTo(outer);
      CurrentResourceOwner = owner;
    });
    TimestampTz now = CallPostgres([] { return GetCurrentTimestamp(); });
    if (now >= deadline) return look;
    TimestampTz retry_due = 0;
    TimestampTz lease_expiry = 0;
    CallPostgres([&] { NextDue(request, &retry_due, &lease_expiry); });
    if (retry_due != 0 && retry_due <= now) return look;
    TimestampTz until = deadline;
    if (retry_due != 0 && retry_due < until) until = retry_due;
    if (lease_expiry != 0 && lease_expiry < until) until = lease_expiry;
    long timeout_ms = static_cast<long>((until - now + 999) / 1000);
    // Woken during the look: look again; its latch may have been reset by a lock wait.
    if (ReaderWakes() != wakes_before) continue;
    CallPostgres([&] { WaitForReaderWake(timeout_ms); });
    if (retry_due != 0 && CallPostgres([] { return GetCurrentTimestamp(); }) >= retry_due)
      return look;
  }
}

// PostgreSQL code: one result row of an event handed out.
void PutRow(Tuplestorestate *store, TupleDesc descriptor, const char *lease_id, const Item &item) {
  HeapTupleHeader event = DatumGetHeapTupleHeader(item.event);
  // evproc.event: id, topic, key, type, payload, headers, enqueued_at, attempt, replay.
  static const int kFromEvent[] = {1, 3, 4, 5, 6, 7, 8, 9};
  Datum values[9];
  bool nulls[9];
  values[0] = CStringGetTextDatum(lease_id);
  nulls[0] = false;
  for (int i = 0; i < 8; ++i) {
    bool isnull = false;
    values[i + 1] = GetAttributeByNum(event, static_cast<AttrNumber>(kFromEvent[i]), &isnull);
    nulls[i + 1] = isnull;
  }
  tuplestore_putvalues(store, descriptor, values, nulls);
}

}  // namespace
}  // namespace evproc::lease

// evproc.read_impl(caller, subscription, max_events, lease, wait): see extension/lease.sql.
EVPROC_CPP_FUNCTION(evproc_lease_read) {
  using evproc::pg::CallPostgres;
  using namespace evproc::lease;
  Request request{};
  int64 wait_us = 0;
  MemoryContext context = nullptr;
  CallPostgres([&] {
    InitMaterializedSRF(fcinfo, 0);
    request.caller = PG_GETARG_OID(0);
    if (PG_ARGISNULL(2) || PG_GETARG_INT32(2) < 1 || PG_GETARG_INT32(2) > kMostEvents) {
      ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                      errmsg("max_events must be between 1 and %d, got %s", kMostEvents,
                             PG_ARGISNULL(2) ? "NULL" : psprintf("%d", PG_GETARG_INT32(2)))));
    }
    request.max_events = PG_GETARG_INT32(2);
    if (!PG_ARGISNULL(3)) {
      request.lease_us = IntervalUs(PG_GETARG_INTERVAL_P(3));
      if (request.lease_us <= 0 || request.lease_us > kMostLeaseUs) {
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("lease must be between 0 and 1 day")));
      }
    }
    if (!PG_ARGISNULL(4)) {
      wait_us = IntervalUs(PG_GETARG_INTERVAL_P(4));
      if (wait_us < 0 || wait_us > kMostWaitUs) {
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("wait must be between 0 and 1 hour")));
      }
    }
    context = AllocSetContextCreate(CurrentMemoryContext, "evproc read", ALLOCSET_DEFAULT_SIZES);
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
    EnsurePlans();
    // Before anything else: a caller who may not read learns nothing of the events.
    CheckSubscription(request.caller,
                      PG_ARGISNULL(1) ? CStringGetTextDatum("") : PG_GETARG_DATUM(1), &request);
  });
  Look look = Read(request, wait_us, context);
  CallPostgres([&] {
    SPI_finish();
    auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    MemoryContext previous = MemoryContextSwitchTo(result->econtext->ecxt_per_query_memory);
    for (int i = 0; i < look.handed.count; ++i)
      PutRow(result->setResult, result->setDesc, look.lease_id, look.handed.items[i]);
    MemoryContextSwitchTo(previous);
  });
  return static_cast<Datum>(0);
}

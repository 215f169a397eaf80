// The end of a lease (docs/design.md, extension/lease.sql): evproc_ack (evproc.ack_impl) and
// expiry (at the next read of the subscription, and evproc.expire_leases() in the
// launcher's maintenance). The lease's events take exactly the path a worker's batch
// takes once its handler returned: delivered, or failed (a nack, an expiry) into the
// retry line with backoff and after max_attempts the dead letters, later events of a
// failed key behind it in order; then its units move to where the read left them.
#include <string>
#include <unordered_map>
#include <unordered_set>
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

extern "C" {
#include "catalog/pg_type_d.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
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

// SQLSTATEs of a consumer's failures, kept in the retry line and the dead letters.
constexpr int kLeaseExpired = MAKE_SQLSTATE('E', 'V', '0', '0', '1');
constexpr int kNacked = MAKE_SQLSTATE('E', 'V', '0', '0', '2');

// A unit of the lease (partition -1: the subscription's replay) and where the read left
// it.
struct LeaseUnit {
  int32 partition;
  Position after;
  bool has_history_from;
  TimestampTz history_from;
  int32 replay_id;
  dl::ReplayPosition replay_after;
};

// What a nack (or the expiry) says about one event.
struct Failure {
  bool from_replay;  // the event was read by the lease's replay
  bool failed;
  const char *message;  // the consumer's error
  bool has_retry_after;
  int64 retry_after_us;
};

// PostgreSQL code: the lease's subscription, as a unit without a partition.
void ReadSubscription(const char *id, Unit *unit, MemoryContext context) {
  Datum args[] = {CStringGetTextDatum(id)};
  if (dl::Run(plans.lease_subscription, args, nullptr, false, SPI_OK_SELECT) != 1)
    elog(ERROR, "evproc: lease \"%s\" vanished", id);
  bool isnull = false;
  unit->subscription_id = DatumGetInt32(dl::Column(0, 1, &isnull));
  unit->name = dl::CopiedText(0, 2, context);
  unit->topic_id = DatumGetInt32(dl::Column(0, 3, &isnull));
  unit->topic = dl::CopiedText(0, 4, context);
  unit->max_attempts = DatumGetInt32(dl::Column(0, 5, &isnull));
  unit->backoff_base_us = DatumGetInt64(dl::Column(0, 6, &isnull));
  unit->backoff_cap_us = DatumGetInt64(dl::Column(0, 7, &isnull));
  unit->block_on_dead = DatumGetBool(dl::Column(0, 8, &isnull));
  unit->failure_budget = DatumGetFloat8(dl::Column(0, 9, &isnull));
  unit->breaker_min_attempts = DatumGetInt32(dl::Column(0, 10, &isnull));
  unit->replay = false;
}

// PostgreSQL code: the number of units; fills `units` (an array of that many).
int ReadUnits(const char *id, LeaseUnit **units, MemoryContext context) {
  Datum args[] = {CStringGetTextDatum(id)};
  uint64 rows = dl::Run(plans.lease_units, args, nullptr, false, SPI_OK_SELECT);
  *units =
      static_cast<LeaseUnit *>(MemoryContextAllocZero(context, sizeof(LeaseUnit) * (rows + 1)));
  for (uint64 row = 0; row < rows; ++row) {
    bool isnull = false;
    LeaseUnit &unit = (*units)[row];
    unit.partition = DatumGetInt32(dl::Column(row, 1, &isnull));
    unit.after.tick_id = DatumGetInt64(dl::Column(row, 5, &isnull));
    Datum window = dl::Column(row, 6, &isnull);
    unit.after.window_tick = isnull ? 0 : DatumGetInt64(window);
    Datum cursor = dl::Column(row, 7, &isnull);
    unit.after.has_cursor = !isnull;
    unit.after.cursor_id = isnull ? 0 : DatumGetInt64(cursor);
    Datum history = dl::Column(row, 8, &isnull);
    unit.has_history_from = !isnull;
    unit.history_from = isnull ? DT_NOBEGIN : DatumGetTimestampTz(history);
    if (unit.partition < 0) {
      unit.replay_id = DatumGetInt32(dl::Column(row, 9, &isnull));
      unit.replay_after =
          dl::ReplayPosition{unit.after.cursor_id, DatumGetInt64(dl::Column(row, 10, &isnull)),
                             DatumGetBool(dl::Column(row, 11, &isnull))};
    }
  }
  return static_cast<int>(rows);
}

// PostgreSQL code: the lease's events in order (outcome kPending: handed out, kParked:
// waiting behind a key parked before the read) and their nacks.
void ReadEvents(const char *id, ItemList *items, Failure **failures, MemoryContext context) {
  Datum args[] = {CStringGetTextDatum(id)};
  uint64 rows = dl::Run(plans.lease_events, args, nullptr, false, SPI_OK_SELECT);
  *failures = static_cast<Failure *>(MemoryContextAllocZero(context, sizeof(Failure) * (rows + 1)));
  for (uint64 row = 0; row < rows; ++row) {
    bool isnull = false;
    Item item{};
    item.event_id = DatumGetInt64(dl::Column(row, 1, &isnull));
    item.partition = DatumGetInt32(dl::Column(row, 2, &isnull));
    item.key = dl::CopiedText(row, 3, context);
    item.from_retry = DatumGetBool(dl::Column(row, 4, &isnull));
    item.failed_attempts = DatumGetInt32(dl::Column(row, 5, &isnull));
    Datum first = dl::Column(row, 6, &isnull);
    item.has_first_failed_at = !isnull;
    item.first_failed_at = isnull ? 0 : DatumGetTimestampTz(first);
    item.enqueued_at = DatumGetTimestampTz(dl::Column(row, 7, &isnull));
    item.outcome = DatumGetBool(dl::Column(row, 8, &isnull)) ? Outcome::kPending : Outcome::kParked;
    Failure &failure = (*failures)[row];
    failure.message = dl::CopiedText(row, 9, context);
    failure.failed = DatumGetBool(dl::Column(row, 10, &isnull));
    Datum retry_after = dl::Column(row, 11, &isnull);
    failure.has_retry_after = !isnull;
    failure.retry_after_us = isnull ? 0 : DatumGetInt64(retry_after);
    failure.from_replay = DatumGetBool(dl::Column(row, 12, &isnull));
    dl::Append(items, item, context);
  }
}

ErrorData *MakeError(int sqlstate, const char *message, const char *detail_text,
                     MemoryContext context) {
  return CallPostgres([&] {
    auto *error = static_cast<ErrorData *>(MemoryContextAllocZero(context, sizeof(ErrorData)));
    error->elevel = ERROR;
    error->sqlerrcode = sqlstate;
    error->message = MemoryContextStrdup(context, message);
    error->detail = detail_text != nullptr ? MemoryContextStrdup(context, detail_text) : nullptr;
    return error;
  });
}

// The full events of the items whose outcome is written in full (parked or failed):
// from the retry line or from the log.
void LoadEvents(const Unit &unit, ItemList *items, MemoryContext context) {
  std::vector<Datum> retry_ids;
  std::vector<Datum> log_ids;
  for (int i = 0; i < items->count; ++i) {
    const Item &item = items->items[i];
    if (item.outcome != Outcome::kFailed && item.outcome != Outcome::kParked &&
        item.outcome != Outcome::kHeld) {
      continue;
    }
    (item.from_retry ? retry_ids : log_ids).push_back(Int64GetDatum(item.event_id));
  }
  std::unordered_map<int64, Datum> events;
  auto load = [&](SPIPlanPtr plan, const std::vector<Datum> &ids, bool from_log) {
    if (ids.empty()) return;
    std::vector<bool> nulls(ids.size(), false);
    uint64 rows = CallPostgres([&] {
      Datum array = ArrayWithNulls(ids, nulls, INT8OID);
      Datum args[] = {Int32GetDatum(unit.subscription_id), array, 0};
      if (from_log) {
        args[0] = Int32GetDatum(unit.topic_id);
        args[2] = CStringGetTextDatum(unit.topic);
      }
      return dl::Run(plan, args, nullptr, false, SPI_OK_SELECT);
    });
    for (uint64 row = 0; row < rows; ++row) {
      bool isnull = false;
      int64 id = CallPostgres([&] { return DatumGetInt64(dl::Column(row, 1, &isnull)); });
      events[id] = CallPostgres([&] { return dl::CopiedColumn(row, 2, &isnull, context); });
    }
  };
  load(plans.retry_events, retry_ids, false);
  load(plans.log_events, log_ids, true);
  for (int i = 0; i < items->count; ++i) {
    Item &item = items->items[i];
    if (item.outcome != Outcome::kFailed && item.outcome != Outcome::kParked &&
        item.outcome != Outcome::kHeld) {
      continue;
    }
    auto found = events.find(item.event_id);
    if (found == events.end()) {
      CallPostgres([&] {
        elog(ERROR, "evproc: event %lld of a lease of subscription \"%s\" is gone",
             static_cast<long long>(item.event_id), unit.name);
      });
    }
    item.event = found->second;
  }
}

// The circuit breaker judges the consumer's failures as a handler's.
void JudgeBreaker(const Unit &unit, const dl::Tally &tally) {
  dl::JudgeBreaker(unit, tally.delivered + tally.failed);
}

}  // namespace

int64 EndLease(const char *id, bool expired, const int64 *held, int held_count) {
  MemoryContext context = CallPostgres([] {
    return AllocSetContextCreate(CurrentMemoryContext, "evproc lease", ALLOCSET_DEFAULT_SIZES);
  });
  Unit unit{};
  LeaseUnit *units = nullptr;
  int unit_count = 0;
  ItemList items{};
  Failure *failures = nullptr;
  CallPostgres([&] {
    ReadSubscription(id, &unit, context);
    unit_count = ReadUnits(id, &units, context);
    ReadEvents(id, &items, &failures, context);
  });
  // Lock the units (in partition order, like unsubscribe) before writing their lines.
  std::vector<Datum> partitions;
  int32 replay_id = 0;
  for (int i = 0; i < unit_count; ++i) {
    if (units[i].partition < 0) {
      replay_id = units[i].replay_id;
    } else {
      partitions.push_back(Int32GetDatum(units[i].partition));
    }
  }
  std::vector<bool> no_nulls(partitions.size(), false);
  CallPostgres([&] {
    if (!partitions.empty()) {
      Datum args[] = {Int32GetDatum(unit.subscription_id),
                      ArrayWithNulls(partitions, no_nulls, INT4OID)};
      dl::Run(plans.lock_units, args, nullptr, false, SPI_OK_SELECT);
    }
    if (replay_id != 0) {
      Datum args[] = {Int32GetDatum(replay_id)};
      dl::Run(plans.lock_replay, args, nullptr, false, SPI_OK_SELECT);
    }
  });

  // The outcome, as Batch::Deliver would have decided it: a failed key holds back its
  // later events (a retry stays in line, a window event parks behind it).
  TimestampTz now = CallPostgres([] { return GetCurrentTransactionStartTimestamp(); });
  const char *expired_detail =
      CallPostgres([&] { return psprintf("lease %s expired before it was acknowledged", id); });
  const char *nack_detail =
      CallPostgres([&] { return psprintf("failed by a consumer (evproc_nack, lease %s)", id); });
  std::unordered_set<std::string> failed_keys;
  std::unordered_set<int64> held_ids(held, held + held_count);
  for (int i = 0; i < items.count; ++i) {
    Item &item = items.items[i];
    if (item.outcome == Outcome::kParked) continue;
    if (item.key != nullptr && failed_keys.count(item.key) != 0) {
      item.outcome = item.from_retry ? Outcome::kPending : Outcome::kParked;
      continue;
    }
    // Never sent (a sink worker's held events): no attempt. A retry stays in line as it
    // was; an event read from the log heads its key's line, due now. Either way its
    // key's later events of the lease wait behind it, as behind a failure.
    if (!expired && held_ids.count(item.event_id) != 0) {
      item.outcome = item.from_retry ? Outcome::kPending : Outcome::kHeld;
      if (item.key != nullptr) failed_keys.emplace(item.key);
      continue;
    }
    const Failure &failure = failures[i];
    if (!failure.failed && !expired) {
      item.outcome = Outcome::kDelivered;
      continue;
    }
    item.outcome = Outcome::kFailed;
    item.error = failure.failed
                     ? MakeError(kNacked, failure.message, nack_detail, context)
                     : MakeError(kLeaseExpired, "lease expired", expired_detail, context);
    if (item.key != nullptr) failed_keys.emplace(item.key);
    // An expired event comes again at once; a nack may say when.
    if (!failure.failed) item.retry_at = now;
    if (failure.failed && failure.has_retry_after) item.retry_at = now + failure.retry_after_us;
  }
  LoadEvents(unit, &items, context);
  // Each unit's events are one batch's outcome: written, and the unit moved to where
  // the read left it, exactly as a worker's batch of that unit.
  int64 delivered = 0;
  for (int u = 0; u < unit_count; ++u) {
    const LeaseUnit &leased = units[u];
    Unit moved = unit;
    moved.partition = leased.partition;
    moved.has_history_from = leased.has_history_from;
    moved.history_from = leased.history_from;
    moved.replay = leased.partition < 0;
    moved.replay_id = leased.replay_id;
    ItemList unit_items{};
    for (int i = 0; i < items.count; ++i) {
      bool mine = moved.replay
                      ? failures[i].from_replay
                      : !failures[i].from_replay && items.items[i].partition == moved.partition;
      if (mine) CallPostgres([&] { dl::Append(&unit_items, items.items[i], context); });
    }
    dl::Tally tally = moved.replay ? dl::WriteReplayOutcome(moved, unit_items, leased.replay_after)
                                   : dl::WriteOutcome(moved, unit_items, leased.after);
    delivered += tally.delivered;
    JudgeBreaker(moved, tally);
  }
  CallPostgres([&] {
    Datum release[] = {Int32GetDatum(unit.subscription_id), CStringGetTextDatum(id)};
    dl::Run(plans.release_units, release, nullptr, false, SPI_OK_UPDATE);
    if (replay_id != 0) {
      Datum lease_id[] = {CStringGetTextDatum(id)};
      dl::Run(plans.release_replay, lease_id, nullptr, false, SPI_OK_UPDATE);
    }
    Datum lease[] = {CStringGetTextDatum(id)};
    dl::Run(plans.delete_lease, lease, nullptr, false, SPI_OK_DELETE);
  });
  CallPostgres([] { WakeReadersAtCommit(); });
  return delivered;
}

int64 ExpireLeases(SPIPlanPtr plan, const Datum *args) {
  MemoryContext context = CallPostgres([] { return CurrentMemoryContext; });
  char **ids = nullptr;
  uint64 count = CallPostgres([&] {
    uint64 rows = dl::Run(plan, args, nullptr, false, SPI_OK_SELECT);
    ids = static_cast<char **>(palloc(sizeof(char *) * (rows + 1)));
    for (uint64 row = 0; row < rows; ++row) ids[row] = dl::CopiedText(row, 1, context);
    return rows;
  });
  for (uint64 i = 0; i < count; ++i) EndLease(ids[i], true, nullptr, 0);
  return static_cast<int64>(count);
}

}  // namespace evproc::lease

// evproc.ack_impl(caller, subscription, lease): see extension/lease.sql.
EVPROC_CPP_FUNCTION(evproc_lease_ack) {
  using evproc::pg::CallPostgres;
  const char *id = CallPostgres([&] {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
    evproc::lease::EnsurePlans();
    Datum args[] = {PG_GETARG_DATUM(0),
                    PG_ARGISNULL(1) ? CStringGetTextDatum("") : PG_GETARG_DATUM(1),
                    PG_ARGISNULL(2) ? CStringGetTextDatum("") : PG_GETARG_DATUM(2)};
    evproc::delivery::Run(evproc::lease::plans.checked_lease, args, nullptr, false, SPI_OK_SELECT);
    return evproc::delivery::CopiedText(0, 1, CurrentMemoryContext);
  });
  int64 delivered = evproc::lease::EndLease(id, false, nullptr, 0);
  CallPostgres([] { SPI_finish(); });
  return Int32GetDatum(static_cast<int32>(delivered));
}

namespace evproc::lease {

int64 AckHolding(Oid caller, const char *subscription, const char *lease, const int64 *held,
                 int held_count) {
  const char *id = CallPostgres([&] {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
    EnsurePlans();
    Datum args[] = {ObjectIdGetDatum(caller), CStringGetTextDatum(subscription),
                    CStringGetTextDatum(lease)};
    delivery::Run(plans.checked_lease, args, nullptr, false, SPI_OK_SELECT);
    return delivery::CopiedText(0, 1, CurrentMemoryContext);
  });
  int64 delivered = EndLease(id, false, held, held_count);
  CallPostgres([] { SPI_finish(); });
  return delivered;
}

}  // namespace evproc::lease

// evproc.expire_leases(): the launcher's maintenance ends every expired lease.
EVPROC_CPP_FUNCTION(evproc_expire_leases) {
  (void)fcinfo;
  using evproc::pg::CallPostgres;
  CallPostgres([] {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
    evproc::lease::EnsurePlans();
  });
  int64 count = evproc::lease::ExpireLeases(evproc::lease::plans.all_expired, nullptr);
  CallPostgres([] { SPI_finish(); });
  return Int32GetDatum(static_cast<int32>(count));
}

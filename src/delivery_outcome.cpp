#include "delivery_outcome.hpp"

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <vector>

#include "core/backoff.hpp"
#include "delivery_plans.hpp"
#include "delivery_ready.hpp"
#include "error_boundary.hpp"
#include "metrics_local.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "common/pg_prng.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
}

namespace evproc::delivery {
namespace {

using pg::CallPostgres;

struct ErrorFields {
  Datum values[5];
  char nulls[5];
};

ErrorFields FieldsOf(const ErrorData *error) {
  ErrorFields fields{};
  const char *texts[5] = {error != nullptr ? pstrdup(unpack_sql_state(error->sqlerrcode)) : nullptr,
                          error != nullptr ? CappedErrorText(error->message) : nullptr,
                          error != nullptr ? CappedErrorText(error->detail) : nullptr,
                          error != nullptr ? CappedErrorText(error->hint) : nullptr,
                          error != nullptr ? CappedErrorText(error->context) : nullptr};
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

// The unit's new position. progress.history_from is dropped once the unit left tick 0;
// the windows keep the bound anyway: the claim reads it from the subscription's
// start_from.
void Advance(const Unit &unit, const Position &at, bool retries_changed, int64 delivered) {
  bool keep_history = unit.has_history_from && at.tick_id == 0;
  // Where units are marked ready, whether this one still is (delivery_ready.hpp).
  bool keep_ready = false;
  bool ready = plans.advance_ready != nullptr && StillReady(unit, at, &keep_ready);
  Datum args[9] = {Int32GetDatum(unit.subscription_id),
                   Int32GetDatum(unit.partition),
                   Int64GetDatum(at.tick_id),
                   Int64GetDatum(at.window_tick),
                   Int64GetDatum(at.cursor_id),
                   TimestampTzGetDatum(unit.history_from),
                   BoolGetDatum(retries_changed),
                   Int64GetDatum(delivered),
                   BoolGetDatum(ready)};
  char nulls[10] = {' ',
                    ' ',
                    ' ',
                    NullFlag(at.window_tick == 0),
                    NullFlag(!at.has_cursor),
                    NullFlag(!keep_history),
                    ' ',
                    ' ',
                    NullFlag(keep_ready),
                    '\0'};
  // The row is found by the ctid of its newest version (kAdvance): the batch holds it
  // locked, so exactly that row must be there.
  if (Run(plans.advance_ready != nullptr ? plans.advance_ready : plans.advance, args, nulls, false,
          SPI_OK_UPDATE) != 1) {
    elog(ERROR, "evproc: the progress row of subscription %d, partition %d was not found",
         unit.subscription_id, unit.partition);
  }
}
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
// replayed event that failed (or was held, never sent) joins the retry line (or the dead
// letters): it counts as pending again, like a re-driven dead letter.
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
        if (item.outcome == Outcome::kParked || item.outcome == Outcome::kFailed ||
            item.outcome == Outcome::kHeld) {
          ++requeued;
        }
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
            // A consumer's nack may say when (retry_after), an expired lease is due now.
            TimestampTz next = item.retry_at != 0 ? item.retry_at : now + delay;
            Park(unit, item, true, false, attempts, next, item.error, now);
          });
          parked_in(item);
        }
        break;
      }
      case Outcome::kHeld:
        // Never sent: the head of its key's retry line (later events of its key park
        // behind it), due now, with the attempts it had: none is counted, no error, and
        // the breaker does not hear of it. As if it had not been read, except that its
        // key's order is kept by the line rather than by the unit's position.
        CallPostgres(
            [&] { Park(unit, item, true, false, item.failed_attempts, now, nullptr, now); });
        parked_in(item);
        break;
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

}  // namespace

const char *CappedErrorText(const char *text) {
  if (text == nullptr) return nullptr;
  size_t length = strlen(text);
  if (length <= static_cast<size_t>(kMostErrorFieldBytes)) return text;
  // Whole characters of the database's encoding (the handler's text is in it): a cut
  // in the middle of one would store an invalid string.
  int kept =
      pg_mbcliplen(text, static_cast<int>(std::min<size_t>(length, INT_MAX)), kMostErrorFieldBytes);
  return psprintf("%.*s... [cut: %zu bytes in all]", kept, text, length);
}

void SetReason(SPIPlanPtr plan, const Unit &unit, const char *reason) {
  Datum args[] = {Int32GetDatum(unit.subscription_id), CStringGetTextDatum(reason)};
  Run(plan, args, nullptr, false, SPI_OK_UPDATE);
}

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

Tally WriteOutcome(const Unit &unit, const ItemList &items, const Position &at) {
  Written written = WriteItems(unit, items);
  CallPostgres([&] { Advance(unit, at, written.retries_changed, written.tally.delivered); });
  CountOutcome(unit, items, written.tally);
  return written.tally;
}
}  // namespace evproc::delivery

// The sink worker's statements (sink_lease.hpp). Leases are the pull consumers' (issue
// 14, extension/lease.sql): a sink subscription is a pull subscription whose consumer is
// a sink worker. Read with evproc.read_impl, failures written with evproc.nack_impl, the
// lease ended as evproc.ack_impl ends it (lease::AckHolding, which also takes the events
// never sent), all as the subscription's owner (the caller argument) from the worker's
// own short transactions. What leases cannot say themselves
// is done here after the ack: a refused event goes to the dead letters at once
// (evproc.sink_dead_now), a fatal answer pauses the subscription.
// PostgreSQL code only (called through CallPostgres): no C++ objects with destructors
// (lease::AckHolding is C++ behind its own boundary: a PgError it throws passes through).
#include <cstring>

#include "core/latency.hpp"
#include "extension_gate.hpp"
#include "lease_plans.hpp"
#include "sink_lease.hpp"
#include "spi_plan.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace evproc::sinkdb {

namespace {

SPIPlanPtr subscriptions_plan = nullptr;
SPIPlanPtr release_plan = nullptr;
SPIPlanPtr read_plan = nullptr;
SPIPlanPtr expire_plan = nullptr;
SPIPlanPtr nack_plan = nullptr;
SPIPlanPtr dead_plan = nullptr;
SPIPlanPtr pause_plan = nullptr;
SPIPlanPtr stats_plan = nullptr;

constexpr const char *kSubscriptions = R"sql(
SELECT s.id, s.name, t.name, s.owner::oid, s.sink::text, s.batch_size,
       NOT s.paused AND (s.breaker_open_until IS NULL OR s.breaker_open_until <= now())
  FROM evproc.subscription s JOIN evproc.topic t ON t.id = s.topic_id
 WHERE s.sink IS NOT NULL AND s.id % $2 = $1
 ORDER BY s.id)sql";

// Leases of this worker's subscriptions can only be an earlier incarnation's.
constexpr const char *kReleaseStale = R"sql(
UPDATE evproc.lease l SET expires_at = pg_catalog.clock_timestamp()
  FROM evproc.subscription s
 WHERE s.id = l.subscription_id AND s.sink IS NOT NULL AND s.id % $2 = $1
   AND l.expires_at > pg_catalog.clock_timestamp())sql";

constexpr const char *kExpire = R"sql(
UPDATE evproc.lease SET expires_at = pg_catalog.clock_timestamp()
 WHERE id = $1 AND expires_at > pg_catalog.clock_timestamp())sql";

constexpr const char *kRead = R"sql(
SELECT r.lease, r.id, r.key, r.type, r.payload::text, r.headers::text,
       to_char(r.enqueued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       r.attempt, r.replay
  FROM evproc.read_impl($1, $2, $3, $4 * interval '1 millisecond', interval '0') r)sql";

constexpr const char *kNack = R"sql(
SELECT evproc.nack_impl($1, $2, $3, $4, $5,
                        CASE WHEN $6 >= 0 THEN $6 * interval '1 millisecond' END))sql";

constexpr const char *kDeadNow = "SELECT evproc.sink_dead_now($1, $2, $3, $4)";

constexpr const char *kPause = "SELECT evproc.pause_impl($1, $2, $3)";

constexpr const char *kStats = R"sql(
INSERT INTO evproc.sink_stats AS st (subscription_id, requests, answers_2xx, answers_3xx,
       answers_4xx, answers_5xx, transport_errors, bytes_sent, bytes_received,
       latency_buckets, last_error, last_error_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
        CASE WHEN $11 IS NOT NULL THEN now() END, now())
ON CONFLICT (subscription_id) DO UPDATE
   SET requests = st.requests + excluded.requests,
       answers_2xx = st.answers_2xx + excluded.answers_2xx,
       answers_3xx = st.answers_3xx + excluded.answers_3xx,
       answers_4xx = st.answers_4xx + excluded.answers_4xx,
       answers_5xx = st.answers_5xx + excluded.answers_5xx,
       transport_errors = st.transport_errors + excluded.transport_errors,
       bytes_sent = st.bytes_sent + excluded.bytes_sent,
       bytes_received = st.bytes_received + excluded.bytes_received,
       latency_buckets = ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0)
                                 FROM unnest(st.latency_buckets, excluded.latency_buckets) AS x(a, b)),
       last_error = coalesce(excluded.last_error, st.last_error),
       last_error_at = coalesce(excluded.last_error_at, st.last_error_at),
       updated_at = now())sql";

char *TextOrNull(HeapTuple tuple, TupleDesc descriptor, int column) {
  bool isnull = false;
  Datum value = SPI_getbinval(tuple, descriptor, column, &isnull);
  return isnull ? nullptr : TextDatumGetCString(value);
}

char *Keep(const char *text) {
  if (text == nullptr) return nullptr;
  auto *copy = static_cast<char *>(SPI_palloc(std::strlen(text) + 1));
  std::strcpy(copy, text);
  return copy;
}

Datum TextOrNullDatum(const char *text, char *null_flag) {
  *null_flag = text == nullptr ? 'n' : ' ';
  return text == nullptr ? static_cast<Datum>(0) : CStringGetTextDatum(text);
}

void Run(SPIPlanPtr plan, Datum *values, const char *nulls, int expected) {
  int result = SPI_execute_plan(plan, values, nulls, false, 0);
  if (result != expected)
    elog(ERROR, "evproc sink: statement failed: %s", SPI_result_code_string(result));
}

}  // namespace

bool Begin() {
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  ExtensionGate gate = EnterExtension(nullptr);
  if (gate != ExtensionGate::kInstalled) {
    AbortCurrentTransaction();
    return false;
  }
  SPI_connect();
  PushActiveSnapshot(GetTransactionSnapshot());
  return true;
}

void Commit() {
  PopActiveSnapshot();
  SPI_finish();
  CommitTransactionCommand();
}

int LoadSubscriptions(int index, int workers, SinkSubscription **out) {
  Oid types[2] = {INT4OID, INT4OID};
  SPIPlanPtr plan = PrepareOnce(&subscriptions_plan, kSubscriptions, 2, types);
  Datum values[2] = {Int32GetDatum(index), Int32GetDatum(workers)};
  Run(plan, values, nullptr, SPI_OK_SELECT);
  int count = static_cast<int>(SPI_processed);
  // SPI_palloc: in the transaction's context, which outlives SPI_finish (the caller
  // copies what it keeps before committing).
  auto *rows = static_cast<SinkSubscription *>(SPI_palloc(sizeof(SinkSubscription) * (count + 1)));
  for (int i = 0; i < count; ++i) {
    HeapTuple tuple = SPI_tuptable->vals[i];
    TupleDesc descriptor = SPI_tuptable->tupdesc;
    bool isnull = false;
    SinkSubscription &row = rows[i];
    row.id = DatumGetInt32(SPI_getbinval(tuple, descriptor, 1, &isnull));
    row.name = Keep(TextOrNull(tuple, descriptor, 2));
    row.topic = Keep(TextOrNull(tuple, descriptor, 3));
    row.sink = Keep(TextOrNull(tuple, descriptor, 5));
    row.owner = DatumGetObjectId(SPI_getbinval(tuple, descriptor, 4, &isnull));
    row.batch_size = DatumGetInt32(SPI_getbinval(tuple, descriptor, 6, &isnull));
    row.active = DatumGetBool(SPI_getbinval(tuple, descriptor, 7, &isnull));
  }
  *out = rows;
  return count;
}

void ReleaseStaleLeases(int index, int workers) {
  Oid types[2] = {INT4OID, INT4OID};
  SPIPlanPtr plan = PrepareOnce(&release_plan, kReleaseStale, 2, types);
  Datum values[2] = {Int32GetDatum(index), Int32GetDatum(workers)};
  Run(plan, values, nullptr, SPI_OK_UPDATE);
}

void ExpireLease(const char *lease) {
  Oid types[1] = {TEXTOID};
  SPIPlanPtr plan = PrepareOnce(&expire_plan, kExpire, 1, types);
  Datum values[1] = {CStringGetTextDatum(lease)};
  Run(plan, values, nullptr, SPI_OK_UPDATE);
}

LeaseResult Lease(const SinkSubscription &subscription, int max_events, int64 lease_ms) {
  Oid types[4] = {OIDOID, TEXTOID, INT4OID, INT8OID};
  SPIPlanPtr plan = PrepareOnce(&read_plan, kRead, 4, types);
  Datum values[4] = {ObjectIdGetDatum(subscription.owner), CStringGetTextDatum(subscription.name),
                     Int32GetDatum(max_events), Int64GetDatum(lease_ms)};
  Run(plan, values, nullptr, SPI_OK_SELECT);
  LeaseResult result{nullptr, 0, nullptr};
  int count = static_cast<int>(SPI_processed);
  if (count == 0) return result;
  result.count = count;
  result.events = static_cast<LeasedEvent *>(SPI_palloc(sizeof(LeasedEvent) * count));
  TupleDesc descriptor = SPI_tuptable->tupdesc;
  for (int i = 0; i < count; ++i) {
    HeapTuple tuple = SPI_tuptable->vals[i];
    bool isnull = false;
    if (i == 0) result.lease = Keep(TextOrNull(tuple, descriptor, 1));
    LeasedEvent &event = result.events[i];
    event.id = DatumGetInt64(SPI_getbinval(tuple, descriptor, 2, &isnull));
    event.key = Keep(TextOrNull(tuple, descriptor, 3));
    event.type = Keep(TextOrNull(tuple, descriptor, 4));
    event.payload = Keep(TextOrNull(tuple, descriptor, 5));
    event.headers = Keep(TextOrNull(tuple, descriptor, 6));
    event.enqueued_at = Keep(TextOrNull(tuple, descriptor, 7));
    event.attempt = DatumGetInt32(SPI_getbinval(tuple, descriptor, 8, &isnull));
    event.replay = DatumGetBool(SPI_getbinval(tuple, descriptor, 9, &isnull));
  }
  return result;
}

void EndLease(const SinkSubscription &subscription, const char *lease, int count,
              const EventOutcome *outcomes, const BatchStats &stats) {
  Datum owner = ObjectIdGetDatum(subscription.owner);
  Datum name = CStringGetTextDatum(subscription.name);
  Datum lease_text = CStringGetTextDatum(lease);
  {
    Oid types[6] = {OIDOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, INT8OID};
    SPIPlanPtr plan = PrepareOnce(&nack_plan, kNack, 6, types);
    for (int i = 0; i < count; ++i) {
      const EventOutcome &outcome = outcomes[i];
      // Held events (never sent) are not failed: the ack below returns them.
      if (outcome.fate == Fate::kDelivered || outcome.fate == Fate::kHeld) continue;
      Datum values[6] = {owner,
                         name,
                         lease_text,
                         Int64GetDatum(outcome.event_id),
                         CStringGetTextDatum(outcome.error != nullptr ? outcome.error : "failed"),
                         Int64GetDatum(outcome.retry_after_ms)};
      Run(plan, values, nullptr, SPI_OK_SELECT);
    }
  }
  {
    // The ack (evproc.ack_impl's checks and outcome), told which events were never sent:
    // they return without an attempt counted (a transport without room, a destination
    // that failed earlier in the batch, a worker stopping), so a sink's own trouble never
    // moves an event towards the dead letters.
    auto *held = static_cast<int64 *>(palloc(sizeof(int64) * (count + 1)));
    int held_count = 0;
    for (int i = 0; i < count; ++i) {
      if (outcomes[i].fate == Fate::kHeld) held[held_count++] = outcomes[i].event_id;
    }
    lease::AckHolding(subscription.owner, subscription.name, lease, held, held_count);
  }
  // Refused events: dead letters at once (they were nacked above, so they head their key's
  // retry line now).
  int dead = 0;
  for (int i = 0; i < count; ++i) dead += outcomes[i].fate == Fate::kDead ? 1 : 0;
  if (dead > 0) {
    auto *ids = static_cast<Datum *>(palloc(sizeof(Datum) * dead));
    auto *messages = static_cast<Datum *>(palloc(sizeof(Datum) * dead));
    auto *contexts = static_cast<Datum *>(palloc(sizeof(Datum) * dead));
    int n = 0;
    for (int i = 0; i < count; ++i) {
      if (outcomes[i].fate != Fate::kDead) continue;
      ids[n] = Int64GetDatum(outcomes[i].event_id);
      messages[n] =
          CStringGetTextDatum(outcomes[i].error != nullptr ? outcomes[i].error : "refused");
      contexts[n] = CStringGetTextDatum(outcomes[i].context != nullptr ? outcomes[i].context : "");
      ++n;
    }
    Oid types[4] = {INT4OID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
    SPIPlanPtr plan = PrepareOnce(&dead_plan, kDeadNow, 4, types);
    Datum values[4] = {
        Int32GetDatum(subscription.id),
        PointerGetDatum(construct_array(ids, dead, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
        PointerGetDatum(construct_array(messages, dead, TEXTOID, -1, false, TYPALIGN_INT)),
        PointerGetDatum(construct_array(contexts, dead, TEXTOID, -1, false, TYPALIGN_INT))};
    Run(plan, values, nullptr, SPI_OK_SELECT);
  }
  for (int i = 0; i < count; ++i) {
    if (outcomes[i].fate != Fate::kPause) continue;
    Oid types[3] = {OIDOID, TEXTOID, TEXTOID};
    SPIPlanPtr plan = PrepareOnce(&pause_plan, kPause, 3, types);
    Datum values[3] = {
        owner, name,
        CStringGetTextDatum(outcomes[i].error != nullptr ? outcomes[i].error : "sink failed")};
    Run(plan, values, nullptr, SPI_OK_SELECT);
    break;
  }
  {
    Oid types[11] = {INT4OID, INT8OID, INT8OID, INT8OID,      INT8OID, INT8OID,
                     INT8OID, INT8OID, INT8OID, INT8ARRAYOID, TEXTOID};
    SPIPlanPtr plan = PrepareOnce(&stats_plan, kStats, 11, types);
    Datum buckets[core::kLatencyBuckets];
    for (int i = 0; i < core::kLatencyBuckets; ++i)
      buckets[i] = Int64GetDatum(stats.latency_buckets[i]);
    char nulls[11] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
    Datum values[11] = {Int32GetDatum(subscription.id),
                        Int64GetDatum(stats.requests),
                        Int64GetDatum(stats.answers_2xx),
                        Int64GetDatum(stats.answers_3xx),
                        Int64GetDatum(stats.answers_4xx),
                        Int64GetDatum(stats.answers_5xx),
                        Int64GetDatum(stats.transport_errors),
                        Int64GetDatum(stats.bytes_sent),
                        Int64GetDatum(stats.bytes_received),
                        PointerGetDatum(construct_array(buckets, core::kLatencyBuckets, INT8OID, 8,
                                                        FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
                        TextOrNullDatum(stats.last_error, &nulls[10])};
    Run(plan, values, nulls, SPI_OK_INSERT);
  }
}

}  // namespace evproc::sinkdb

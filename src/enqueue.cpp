// evproc_enqueue and evproc_enqueue_batch: validate, deduplicate, append to the log.
//
// This is PostgreSQL-facing code on the hot path: only POD locals and palloc'd memory,
// so an ERROR anywhere (SPI, detoasting, interrupts) may longjmp through it safely.
// Nothing is written before every event of the call has been validated, and all writes
// share the caller's transaction: an error leaves nothing behind.
#include <cstring>
#include <string_view>

#include "api_trampoline.hpp"
#include "commit_wake.hpp"
#include "log_insert.hpp"
#include "metrics.hpp"
#include "metrics_local.hpp"
#include "core/partition_hash.hpp"
#include "core/schema_api.hpp"
#include "error_boundary.hpp"
#include "pg_headers.hpp"
#include "settings.hpp"
#include "spi_plan.hpp"
#include "topic_cache.hpp"

extern "C" {
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
}

namespace evproc {
namespace {

struct EventInput {
  text *key;  // nullptr: no key
  text *type;
  Jsonb *payload;
  Jsonb *headers;
  text *dedup_id;
};

SPIPlanPtr dedup_claim_plan = nullptr;
SPIPlanPtr dedup_lookup_plan = nullptr;

// "key" for a single event, "events[3].key" inside a batch: errors name the field.
const char *FieldName(int index, const char *field) {
  return index < 0 ? field : psprintf("events[%d].%s", index, field);
}

[[noreturn]] void ReportInvalid(int index, const char *field, const char *problem) {
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                  errmsg("%s %s", FieldName(index, field), problem)));
  pg_unreachable();
}

void CheckText(text *value, int index, const char *field, int max_bytes, bool required) {
  if (value == nullptr) {
    if (required) {
      ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                      errmsg("%s must not be null", FieldName(index, field))));
    }
    return;
  }
  int bytes = VARSIZE_ANY_EXHDR(value);
  if (bytes == 0) ReportInvalid(index, field, "must not be empty (use NULL for none)");
  if (bytes > max_bytes) {
    ereport(ERROR, (errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
                    errmsg("%s is too long: %d bytes, the limit is %d", FieldName(index, field),
                           bytes, max_bytes)));
  }
}

// The JSON counterpart of CheckText: an object of at most max_bytes (jsonb size).
void CheckJsonObject(Jsonb *value, int index, const char *field, int max_bytes, bool required,
                     const char *size_hint) {
  if (value == nullptr) {
    if (required) {
      ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                      errmsg("%s must not be null", FieldName(index, field))));
    }
    return;
  }
  if (!JB_ROOT_IS_OBJECT(value) || JB_ROOT_IS_SCALAR(value)) {
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("%s must be a JSON object%s", FieldName(index, field),
                           required ? "" : " or NULL")));
  }
  int bytes = static_cast<int>(VARSIZE(value));
  if (bytes > max_bytes) {
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("%s is too large: %d bytes, the limit is %d", FieldName(index, field),
                           bytes, max_bytes),
                    size_hint != nullptr ? errhint("%s", size_hint) : 0));
  }
}

void CheckEvent(const char *topic_name, const TopicInfo *topic, const EventInput *event,
                int index) {
  CheckText(event->key, index, "key", kMaxKeyBytes, false);
  CheckText(event->type, index, "type", kMaxTypeBytes, false);
  CheckText(event->dedup_id, index, "dedup_id", kMaxDedupIdBytes, false);
  CheckJsonObject(event->payload, index, "payload", max_payload_bytes, true,
                  "The limit is evproc.max_payload_bytes (jsonb size).");
  CheckJsonObject(event->headers, index, "headers", kMaxHeadersBytes, false, nullptr);
  if (topic->schema != nullptr) {
    char *document = JsonbToCString(nullptr, &event->payload->root, VARSIZE(event->payload));
    char violation[512];
    if (!core::SchemaValidate(topic->schema, document, std::strlen(document), violation,
                              sizeof(violation))) {
      ereport(ERROR, (errcode(ERRCODE_CHECK_VIOLATION),
                      errmsg("%s violates the schema of topic \"%s\": %s",
                             FieldName(index, "payload"), topic_name, violation)));
    }
    pfree(document);
  }
}

// Publishing needs the 'publish' privilege on the topic (docs/security.md "Security and
// privileges"). Checked before the events are looked at: a caller who may not publish
// learns nothing of the topic's schema and counts no rejection.
void CheckPublish(const char *topic_name, const TopicInfo *topic, Oid caller) {
  if (MayPublish(topic, caller)) return;
  ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                  errmsg("permission denied to publish to topic \"%s\"", topic_name),
                  errhint("A member of the topic's owner role grants it: SELECT "
                          "evproc_grant('%s', '<role>', 'publish');",
                          topic_name)));
}

// Runs `check` (reading and checking one event: CheckEvent, ReadBatchEvent): a malformed
// event counts as a rejection of its topic (evproc_topic_stats) before its error
// propagates. `check` holds no C++ objects with destructors (an ERROR longjmps).
template <typename Check>
void CountingRejections(const TopicInfo *topic, const Check &check) {
  PG_TRY();
  { check(); }
  PG_CATCH();
  {
    metrics::CountRejected(topic->id, false);
    PG_RE_THROW();
  }
  PG_END_TRY();
}

// max_pending (docs/operations.md "Backpressure"): 53400 when the topic's depth, i.e. the pending
// events of its slowest subscription (shared-memory counters, constant time) plus what this
// transaction enqueued and has not committed, would pass the limit with `adding` more.
// A topic no subscription drains has no depth: retention bounds it instead.
void CheckBackpressure(const char *topic_name, const TopicInfo *topic, int64 adding) {
  if (topic->max_pending <= 0) return;
  metrics::TopicStats *stats = metrics::FindTopic(MyDatabaseId, topic->id, true);
  if (stats == nullptr) return;
  int64 depth =
      metrics::TopicDepth(MyDatabaseId, *stats) + metrics::UncommittedPublished(topic->id);
  if (depth + adding <= topic->max_pending) return;
  metrics::CountRejected(topic->id, true);
  ereport(ERROR,
          (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
           errmsg("topic \"%s\" is full: %lld events pending, max_pending is %lld", topic_name,
                  static_cast<long long>(depth), static_cast<long long>(topic->max_pending)),
           errdetail("Pending counts the events its slowest subscription has not handled yet; "
                     "this call would add %lld.",
                     static_cast<long long>(adding)),
           errhint("Retry later: publishing resumes as subscriptions catch up. Or raise "
                   "max_pending with evproc_alter_topic.")));
}

int32 PartitionOf(const TopicInfo *topic, const text *key, int64 id) {
  if (key == nullptr) return static_cast<int32>(id % topic->partitions);  // spread keyless events
  return core::PartitionForKey(std::string_view(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key)),
                               topic->partitions);
}

Oid EventIdSequence() {
  Oid evproc_namespace = get_namespace_oid("evproc", false);
  Oid sequence = get_relname_relid("event_id_seq", evproc_namespace);
  if (!OidIsValid(sequence)) elog(ERROR, "evproc: sequence evproc.event_id_seq is missing");
  return sequence;
}

// Records dedup_id for new_id unless a live entry exists; returns the id that owns it.
// Two transactions with the same dedup id serialize on the primary key: the second
// waits, then sees the first's row if it committed or inserts its own if it rolled back.
int64 ClaimDedupId(const TopicInfo *topic, text *dedup_id, int64 new_id, TimestampTz now) {
  static const Oid claim_types[5] = {INT4OID, TEXTOID, INT8OID, TIMESTAMPTZOID, INTERVALOID};
  SPIPlanPtr claim =
      PrepareOnce(&dedup_claim_plan,
                  "INSERT INTO evproc.dedup AS d (topic_id, dedup_id, event_id, expires_at) "
                  "VALUES ($1, $2, $3, $4 + $5) "
                  "ON CONFLICT (topic_id, dedup_id) DO UPDATE "
                  "SET event_id = excluded.event_id, expires_at = excluded.expires_at "
                  "WHERE d.expires_at <= $4 RETURNING d.event_id",
                  5, claim_types);
  Datum args[5] = {Int32GetDatum(topic->id), PointerGetDatum(dedup_id), Int64GetDatum(new_id),
                   TimestampTzGetDatum(now), IntervalPGetDatum(&topic->dedup_window)};
  int rc = SPI_execute_plan(claim, args, nullptr, false, 1);
  if (rc != SPI_OK_INSERT_RETURNING)
    elog(ERROR, "evproc: dedup claim failed: %s", SPI_result_code_string(rc));
  if (SPI_processed == 1) return new_id;

  // A live entry exists (and is now locked by us): return the event it names.
  static const Oid lookup_types[2] = {INT4OID, TEXTOID};
  SPIPlanPtr lookup = PrepareOnce(
      &dedup_lookup_plan, "SELECT event_id FROM evproc.dedup WHERE topic_id = $1 AND dedup_id = $2",
      2, lookup_types);
  rc = SPI_execute_plan(lookup, args, nullptr, false, 1);
  if (rc != SPI_OK_SELECT || SPI_processed != 1) {
    ereport(ERROR, (errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
                    errmsg("could not resolve dedup id of a concurrent enqueue"),
                    errhint("Retry the transaction.")));
  }
  bool isnull = false;
  return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

// Appends one event (src/log_insert.cpp: a direct insert into its log partition).
void InsertOne(const TopicInfo *topic, const EventInput *event, int64 id, TimestampTz now) {
  LogRow row{id,
             PartitionOf(topic, event->key, id),
             event->key,
             event->type,
             event->payload,
             event->headers,
             event->dedup_id};
  AppendToLog(topic->id, &row, 1, now);
  NoteEnqueued(topic->id, row.partition);
  metrics::NotePublished(topic->id, 1);
}

text *ArgText(FunctionCallInfo fcinfo, int n) {
  return PG_ARGISNULL(n) ? nullptr : PG_GETARG_TEXT_PP(n);
}

const char *TopicName(FunctionCallInfo fcinfo) {
  if (PG_ARGISNULL(0)) {
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("topic must not be null")));
  }
  const char *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
  if (name[0] == '\0') {
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("topic must not be empty")));
  }
  return name;
}

// Finds events[index].field; false when it is absent or JSON null.
bool FindField(JsonbContainer *object, const char *field, JsonbValue *value) {
  return getKeyJsonValueFromContainer(object, field, static_cast<int>(std::strlen(field)), value) !=
             nullptr &&
         value->type != jbvNull;
}

text *BatchText(JsonbContainer *object, const char *field, int index) {
  JsonbValue value;
  if (!FindField(object, field, &value)) return nullptr;
  if (value.type != jbvString) ReportInvalid(index, field, "must be a JSON string or null");
  return cstring_to_text_with_len(value.val.string.val, value.val.string.len);
}

Jsonb *BatchJson(JsonbContainer *object, const char *field, int index) {
  JsonbValue value;
  if (!FindField(object, field, &value)) return nullptr;
  if (value.type != jbvBinary) ReportInvalid(index, field, "must be a JSON object");
  return JsonbValueToJsonb(&value);
}

// Reads events[index] of a batch into an EventInput, naming the field on any error.
void ReadBatchEvent(JsonbContainer *array, int index, EventInput *event) {
  JsonbValue *element = getIthJsonbValueFromContainer(array, index);
  if (element->type != jbvBinary || !JsonContainerIsObject(element->val.binary.data)) {
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("events[%d] must be a JSON object", index)));
  }
  JsonbContainer *object = element->val.binary.data;
  // Unknown fields are refused: a misspelt "dedupe_id" must not silently disable dedup.
  JsonbIterator *it = JsonbIteratorInit(object);
  JsonbValue token;
  JsonbIteratorToken kind;
  while ((kind = JsonbIteratorNext(&it, &token, true)) != WJB_DONE) {
    if (kind != WJB_KEY) continue;
    std::string_view name(token.val.string.val, token.val.string.len);
    if (name != "key" && name != "payload" && name != "type" && name != "dedup_id" &&
        name != "headers") {
      ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                      errmsg("events[%d] has unknown field \"%.*s\"", index,
                             static_cast<int>(name.size()), name.data()),
                      errhint("Fields are key, payload, type, dedup_id and headers.")));
    }
  }
  event->key = BatchText(object, "key", index);
  event->type = BatchText(object, "type", index);
  event->dedup_id = BatchText(object, "dedup_id", index);
  event->payload = BatchJson(object, "payload", index);
  event->headers = BatchJson(object, "headers", index);
}

// Appends the fresh events of a batch in one pass (one multi-row heap insert).
void InsertMany(const TopicInfo *topic, const EventInput *events, const int64 *ids,
                const bool *fresh, int count, TimestampTz now) {
  auto *rows = static_cast<LogRow *>(palloc(sizeof(LogRow) * (count + 1)));
  int fresh_count = 0;
  for (int i = 0; i < count; ++i) {
    if (!fresh[i]) continue;
    const EventInput &event = events[i];
    rows[fresh_count++] = LogRow{ids[i],        PartitionOf(topic, event.key, ids[i]),
                                 event.key,     event.type,
                                 event.payload, event.headers,
                                 event.dedup_id};
  }
  if (fresh_count == 0) return;
  AppendToLog(topic->id, rows, fresh_count, now);
  for (int i = 0; i < fresh_count; ++i) NoteEnqueued(topic->id, rows[i].partition);
  metrics::NotePublished(topic->id, fresh_count);
}

}  // namespace
}  // namespace evproc

// evproc_enqueue(topic, key, payload, type, dedup_id, headers) -> bigint
EVPROC_CPP_FUNCTION(evproc_enqueue) {
  using namespace evproc;
  const char *topic_name = TopicName(fcinfo);
  EventInput event{ArgText(fcinfo, 1), ArgText(fcinfo, 3),
                   PG_ARGISNULL(2) ? nullptr : PG_GETARG_JSONB_P(2),
                   PG_ARGISNULL(5) ? nullptr : PG_GETARG_JSONB_P(5), ArgText(fcinfo, 4)};
  const TopicInfo *topic = AcquireTopic(topic_name);
  CheckPublish(topic_name, topic, GetUserId());
  CountingRejections(topic, [&] { CheckEvent(topic_name, topic, &event, -1); });
  CheckBackpressure(topic_name, topic, 1);

  int64 id = nextval_internal(EventIdSequence(), false);
  TimestampTz now = GetCurrentTimestamp();
  // evproc's tables are written as their owner: publishers need no privileges on them.
  // On ERROR the transaction's abort restores the caller.
  SavedUser caller = BecomeOwner(CachedExtensionOwner());
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
  int64 result = id;
  if (event.dedup_id != nullptr) result = ClaimDedupId(topic, event.dedup_id, id, now);
  if (result == id) {
    InsertOne(topic, &event, id, now);
  } else {
    metrics::CountDedupHit(topic->id);
  }
  SPI_finish();
  RestoreUser(caller);
  ReleaseTopic();
  PG_RETURN_INT64(result);
}

// evproc_enqueue_batch(topic, events jsonb) -> bigint[] (ids in input order)
EVPROC_CPP_FUNCTION(evproc_enqueue_batch) {
  using namespace evproc;
  const char *topic_name = TopicName(fcinfo);
  if (PG_ARGISNULL(1)) {
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("events must not be null")));
  }
  Jsonb *batch = PG_GETARG_JSONB_P(1);
  if (!JB_ROOT_IS_ARRAY(batch) || JB_ROOT_IS_SCALAR(batch)) {
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("events must be a JSON array of event objects")));
  }
  int count = static_cast<int>(JB_ROOT_COUNT(batch));
  if (count > max_batch_events) {
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("events holds %d events, the limit is %d", count, max_batch_events),
                    errhint("The limit is evproc.max_batch_events.")));
  }
  const TopicInfo *topic = AcquireTopic(topic_name);
  CheckPublish(topic_name, topic, GetUserId());
  auto *events = static_cast<EventInput *>(palloc0(sizeof(EventInput) * (count + 1)));
  for (int i = 0; i < count; ++i) {
    CountingRejections(topic, [&] {
      ReadBatchEvent(&batch->root, i, &events[i]);
      CheckEvent(topic_name, topic, &events[i], i);
    });
  }
  CheckBackpressure(topic_name, topic, count);

  Oid sequence = EventIdSequence();
  TimestampTz now = GetCurrentTimestamp();
  auto *ids = static_cast<int64 *>(palloc(sizeof(int64) * (count + 1)));
  auto *fresh = static_cast<bool *>(palloc(sizeof(bool) * (count + 1)));
  auto *result = static_cast<Datum *>(palloc(sizeof(Datum) * (count + 1)));
  SavedUser caller = BecomeOwner(CachedExtensionOwner());  // as in evproc_enqueue
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
  for (int i = 0; i < count; ++i) {
    ids[i] = nextval_internal(sequence, false);
    int64 owner = ids[i];
    // Dedup ids are claimed in input order, so a repeat inside one batch maps to the
    // first occurrence, exactly as two separate calls would.
    if (events[i].dedup_id != nullptr) owner = ClaimDedupId(topic, events[i].dedup_id, ids[i], now);
    fresh[i] = owner == ids[i];
    if (!fresh[i]) metrics::CountDedupHit(topic->id);
    result[i] = Int64GetDatum(owner);
  }
  InsertMany(topic, events, ids, fresh, count, now);
  SPI_finish();
  RestoreUser(caller);
  ReleaseTopic();
  int dims[1] = {count};
  int lower_bounds[1] = {1};
  PG_RETURN_ARRAYTYPE_P(construct_md_array(result, nullptr, 1, dims, lower_bounds, INT8OID, 8, true,
                                           TYPALIGN_DOUBLE));
}

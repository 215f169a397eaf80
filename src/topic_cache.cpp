#include "topic_cache.hpp"

#include <cstring>

#include "api_trampoline.hpp"
#include "core/schema_api.hpp"
#include "spi_plan.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
}

namespace evproc {
namespace {

constexpr int kTopicNameBytes = 64;  // names are at most 63 bytes (CHECK on evproc.topic)

struct CacheEntry {
  char name[kTopicNameBytes];  // hash key
  TopicInfo info;
};

HTAB *topic_cache = nullptr;
Oid topic_relid = InvalidOid;
Oid extension_owner = InvalidOid;
bool cache_stale = true;
// Lookups in progress: a stale cache is only flushed when no caller holds an entry.
int active_uses = 0;
SPIPlanPtr lookup_plan = nullptr;

void OnRelcacheInvalidation(Datum, Oid relid) {
  // Runs inside PostgreSQL's invalidation processing: only flag, never free here.
  if (relid == InvalidOid || relid == topic_relid) cache_stale = true;
}

void FlushCache() {
  if (topic_cache != nullptr) {
    HASH_SEQ_STATUS scan;
    hash_seq_init(&scan, topic_cache);
    while (auto *entry = static_cast<CacheEntry *>(hash_seq_search(&scan))) {
      core::SchemaFree(const_cast<core::CompiledSchema *>(entry->info.schema));
      if (entry->info.publishers != nullptr) pfree(entry->info.publishers);
    }
    hash_destroy(topic_cache);
  }
  HASHCTL ctl{};
  ctl.keysize = kTopicNameBytes;
  ctl.entrysize = sizeof(CacheEntry);
  ctl.hcxt = TopMemoryContext;
  topic_cache =
      hash_create("evproc topic cache", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
  Oid evproc_namespace = get_namespace_oid("evproc", true);
  topic_relid =
      OidIsValid(evproc_namespace) ? get_relname_relid("topic", evproc_namespace) : InvalidOid;
  extension_owner = ExtensionOwner(true);
  cache_stale = false;
}

[[noreturn]] void ReportUnknownTopic(const char *name) {
  ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("topic \"%s\" does not exist", name),
                  errhint("Create it with evproc_create_topic().")));
  pg_unreachable();
}

// Reads one topic row. Returns false when there is none.
bool LoadTopic(const char *name, TopicInfo *info) {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
  static const Oid arg_types[1] = {TEXTOID};
  SPIPlanPtr lookup = PrepareOnce(
      &lookup_plan,
      "SELECT id, partitions, coalesce(max_pending, 0), dedup_window, payload_schema::text, "
      "owner::oid, publishers::oid[] FROM evproc.topic WHERE name = $1",
      1, arg_types);
  Datum args[1] = {CStringGetTextDatum(name)};
  int rc = SPI_execute_plan(lookup, args, nullptr, true, 1);
  if (rc != SPI_OK_SELECT)
    elog(ERROR, "evproc: topic lookup failed: %s", SPI_result_code_string(rc));
  bool found = SPI_processed == 1;
  if (found) {
    HeapTuple row = SPI_tuptable->vals[0];
    TupleDesc desc = SPI_tuptable->tupdesc;
    bool isnull = false;
    info->id = DatumGetInt32(SPI_getbinval(row, desc, 1, &isnull));
    info->partitions = DatumGetInt32(SPI_getbinval(row, desc, 2, &isnull));
    info->max_pending = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
    info->dedup_window = *DatumGetIntervalP(SPI_getbinval(row, desc, 4, &isnull));
    info->schema = nullptr;
    info->owner = DatumGetObjectId(SPI_getbinval(row, desc, 6, &isnull));
    // In TopMemoryContext with the entry (freed by FlushCache).
    ArrayType *publishers = DatumGetArrayTypeP(SPI_getbinval(row, desc, 7, &isnull));
    Datum *roles = nullptr;
    int count = 0;
    deconstruct_array(publishers, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &roles, nullptr, &count);
    info->publisher_count = count;
    info->publishers =
        count == 0 ? nullptr
                   : static_cast<Oid *>(MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * count));
    for (int i = 0; i < count; ++i) info->publishers[i] = DatumGetObjectId(roles[i]);
    char *schema_text = SPI_getvalue(row, desc, 5);
    if (schema_text != nullptr) {
      char error[512];
      core::CompiledSchema *schema =
          core::SchemaCompile(schema_text, std::strlen(schema_text), error, sizeof(error));
      // The stored schema was validated when it was set; failing here means the table
      // was edited behind evproc's back.
      if (schema == nullptr) {
        ereport(ERROR,
                (errcode(ERRCODE_DATA_CORRUPTED),
                 errmsg("stored payload schema of topic \"%s\" is invalid: %s", name, error)));
      }
      info->schema = schema;
    }
  }
  SPI_finish();
  return found;
}

}  // namespace

const TopicInfo *AcquireTopic(const char *name) {
  if (std::strlen(name) >= kTopicNameBytes) ReportUnknownTopic(name);
  AcceptInvalidationMessages();
  if (topic_cache == nullptr || (cache_stale && active_uses == 0)) FlushCache();
  bool found = false;
  auto *entry = static_cast<CacheEntry *>(hash_search(topic_cache, name, HASH_FIND, &found));
  if (entry == nullptr) {
    if (!OidIsValid(extension_owner)) extension_owner = ExtensionOwner(false);
    TopicInfo info;
    // evproc.topic is read as its owner: publishers hold no privileges on evproc's tables.
    SavedUser saved = BecomeOwner(extension_owner);
    bool loaded = LoadTopic(name, &info);
    RestoreUser(saved);
    if (!loaded) ReportUnknownTopic(name);
    // LoadTopic may have processed invalidations; the entry is still correct because it
    // was read after them, so it is kept even if the cache was flagged meanwhile.
    entry = static_cast<CacheEntry *>(hash_search(topic_cache, name, HASH_ENTER, &found));
    entry->info = info;
  }
  ++active_uses;
  return &entry->info;
}

Oid CachedExtensionOwner() { return extension_owner; }

bool MayPublish(const TopicInfo *topic, Oid role) {
  if (is_member_of_role(role, topic->owner)) return true;
  for (int i = 0; i < topic->publisher_count; ++i) {
    if (is_member_of_role(role, topic->publishers[i])) return true;
  }
  return false;
}

void ReleaseTopic() {
  if (active_uses > 0) --active_uses;
}

void RegisterTopicCacheInvalidation() {
  CacheRegisterRelcacheCallback(OnRelcacheInvalidation, PointerGetDatum(nullptr));
  // An ERROR between AcquireTopic and ReleaseTopic skips the release.
  RegisterXactCallback(
      [](XactEvent event, void *) {
        if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) active_uses = 0;
      },
      nullptr);
  RegisterSubXactCallback(
      [](SubXactEvent event, SubTransactionId, SubTransactionId, void *) {
        if (event == SUBXACT_EVENT_ABORT_SUB) active_uses = 0;
      },
      nullptr);
}

}  // namespace evproc

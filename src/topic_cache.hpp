// Per-backend cache of topic settings, so enqueue does not query evproc.topic per event.
//
// Correctness: a statement trigger on evproc.topic registers a relcache invalidation of
// that table for every change (src/topic_admin.cpp). PostgreSQL delivers it to this
// backend at the next command and to every other backend when the change commits; the
// callback only marks the cache stale, and the next top-level lookup rebuilds it. A
// rolled-back change is undone the same way, since an aborting backend replays its own
// invalidations.
#pragma once

#include "pg_headers.hpp"

extern "C" {
#include "datatype/timestamp.h"
}

namespace evproc::core {
struct CompiledSchema;
}

namespace evproc {

struct TopicInfo {
  int32 id;
  int32 partitions;
  int64 max_pending;  // 0 when unlimited
  Interval dedup_window;
  const core::CompiledSchema *schema;  // nullptr when the topic has no payload schema
  Oid owner;                           // the topic's owner (evproc.topic.owner)
  int publisher_count;                 // roles granted 'publish' (evproc.topic.publishers)
  Oid *publishers;
};

// Looks up a topic by name; raises 42704 when it does not exist. The returned pointer
// stays valid until the caller's matching ReleaseTopic. The topic row is read as the
// extension owner, so callers need no privileges on evproc.topic.
const TopicInfo *AcquireTopic(const char *name);
void ReleaseTopic();

// The extension owner, as of the last AcquireTopic (the cache is rebuilt when evproc.topic
// is dropped, so a re-created extension is noticed).
Oid CachedExtensionOwner();

// Whether `role` may publish to the topic: a member of its owner or of a role granted
// 'publish' (superusers are members of every role).
bool MayPublish(const TopicInfo *topic, Oid role);

void RegisterTopicCacheInvalidation();

}  // namespace evproc

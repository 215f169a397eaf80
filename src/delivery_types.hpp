// The plain data one batch of delivery passes between its steps (see delivery.cpp): the
// claimed unit, the events it read (items), and where the unit or replay stands.
// POD only: PostgreSQL-facing code fills them, and an ERROR longjmps through it, so
// nothing here may own C++ resources.
#pragma once

#include <cstring>

#include "core/replay_step.hpp"
#include "pg_headers.hpp"

extern "C" {
#include "utils/elog.h"
#include "utils/memutils.h"
}

namespace evproc::delivery {

// What a subscription's owner may do, as the claim finds it (delivery::OwnerState).
enum class OwnerStatus : uint8 {
  kOk,
  kMissing,      // the role was dropped
  kSuperuser,    // handlers never run as a superuser
  kNoExecute,    // may not execute the handler
  kNoSubscribe,  // holds 'subscribe' on the topic no more
};

struct Unit {
  int32 subscription_id;
  int32 partition;
  int64 tick_id;
  int64 window_tick;  // 0: none
  bool has_cursor;
  int64 cursor_id;
  TimestampTz history_from;  // events enqueued before it are not the subscription's
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
  OwnerStatus owner_status;  // what the owner may do (delivery::OwnerState)
  // The function the subscription is bound to (evproc.subscription.handler_oid) and
  // whether it was bound in this extension (not before a restore, nor never): a bound
  // subscription runs handler_fn only if it is bound_fn.
  Oid bound_fn;
  bool bound_here;
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

// kHeld: leased by a sink worker that never sent it (its transport had no room, the
// destination failed earlier in the batch, the worker was stopping): back in line, due
// at once, with no attempt counted (lease_end.cpp).
enum class Outcome { kPending, kDelivered, kFailed, kParked, kHeld };

struct Item {
  int64 event_id;
  int32 partition;
  Datum event;  // evproc.event
  const char *key;
  bool from_retry;
  // A window or replay event whose key has a parked head (read with it): it waits behind
  // that head, in order.
  bool key_parked;
  // A retry whose last attempt was a lease that expired (EV001): maybe the event that
  // killed its consumer, so a read hands it out alone (lease_read.cpp).
  bool lease_expired;
  int32 failed_attempts;  // before this delivery
  TimestampTz first_failed_at;
  bool has_first_failed_at;
  TimestampTz enqueued_at;
  Outcome outcome;
  ErrorData *error;
  TimestampTz retry_at;  // a failure's next attempt instead of the backoff (0: backoff)
};

// POD list in the batch context: filled by PostgreSQL-facing code, which must not own
// C++ containers (an ERROR longjmps through it).
struct ItemList {
  Item *items;
  int count;
  int capacity;
};

// Appends to a list in `context` (PostgreSQL code: allocates there).
inline void Append(ItemList *list, const Item &item, MemoryContext context) {
  if (list->count == list->capacity) {
    int capacity = list->capacity == 0 ? 64 : list->capacity * 2;
    auto *grown = static_cast<Item *>(MemoryContextAlloc(context, sizeof(Item) * capacity));
    if (list->count > 0) std::memcpy(grown, list->items, sizeof(Item) * list->count);
    list->items = grown;
    list->capacity = capacity;
  }
  list->items[list->count++] = item;
}

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

// Where a replay stands: ids up to cursor were looked at; the next read spans chunk ids.
using ReplayPosition = core::ReplayStep;

// What a batch's outcome counts.
struct Tally {
  int64 delivered = 0;
  int64 failed = 0;
  int64 dead = 0;
};

}  // namespace evproc::delivery

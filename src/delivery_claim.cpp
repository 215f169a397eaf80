#include "delivery_claim.hpp"

#include "delivery_plans.hpp"
#include "delivery_ready.hpp"
#include "handler_call.hpp"
#include "pg_compat.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
}

namespace evproc::delivery {

namespace {

// The function the subscription is bound to; at an extension version without bindings
// (before 0.3.0), the one its name resolves to.
void ReadBinding(Unit *unit) {
  unit->bound_fn = unit->handler_fn;
  unit->bound_here = true;
  if (plans.bound_handler == nullptr) return;
  Datum args[] = {Int32GetDatum(unit->subscription_id)};
  if (Run(plans.bound_handler, args, nullptr, false, SPI_OK_SELECT) != 1) return;
  bool isnull = false;
  Datum bound_fn = Column(0, 1, &isnull);
  unit->bound_fn = isnull ? InvalidOid : DatumGetObjectId(bound_fn);
  Datum bound_in = Column(0, 2, &isnull);
  unit->bound_here = !isnull && DatumGetObjectId(bound_in) == plans.extension;
}

}  // namespace

OwnerStatus OwnerState(Oid owner, Oid handler_fn, ArrayType *topic_roles) {
  if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner))) return OwnerStatus::kMissing;
  if (superuser_arg(owner)) return OwnerStatus::kSuperuser;
  // A handler dropped since the claim resolved it is reported by HandlerProblem.
  if (OidIsValid(handler_fn) && SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(handler_fn)) &&
      !compat::MayExecute(handler_fn, owner)) {
    return OwnerStatus::kNoExecute;
  }
  // evproc.may_subscribe's rule: a member of the topic's owner or of a grantee (a
  // grantee dropped since is a member of nothing).
  if (topic_roles != nullptr) {
    Datum *roles = nullptr;
    bool *nulls = nullptr;
    int count = 0;
    deconstruct_array(topic_roles, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &roles, &nulls, &count);
    for (int i = 0; i < count; ++i) {
      if (!nulls[i] && is_member_of_role(owner, DatumGetObjectId(roles[i]))) {
        return OwnerStatus::kOk;
      }
    }
  }
  return OwnerStatus::kNoSubscribe;
}

bool ClaimUnit(Unit *unit, bool replay, MemoryContext context) {
  if (replay) {
    if (Run(plans.claim_replay, nullptr, nullptr, false, SPI_OK_SELECT) == 0) return false;
  } else {
    HintedClaim hinted = ClaimHintedUnit();
    if (hinted == HintedClaim::kNone) return false;
    if (hinted == HintedClaim::kReadAll) {
      bool found = Run(ClaimPlan(), nullptr, nullptr, false, SPI_OK_SELECT) > 0;
      ReadAllFound(found);
      if (!found) return false;
    }
  }
  UnitFromRow(unit, 0, replay, context);
  // After UnitFromRow: the binding's statement replaces SPI's result.
  ReadBinding(unit);
  return true;
}

void UnitFromRow(Unit *unit, uint64 row, bool replay, MemoryContext context) {
  bool isnull = false;
  unit->subscription_id = DatumGetInt32(Column(row, 1, &isnull));
  unit->partition = DatumGetInt32(Column(row, 2, &isnull));
  unit->tick_id = DatumGetInt64(Column(row, 3, &isnull));
  Datum window_tick = Column(row, 4, &isnull);
  unit->window_tick = isnull ? 0 : DatumGetInt64(window_tick);
  Datum cursor_id = Column(row, 5, &isnull);
  unit->has_cursor = !isnull;
  unit->cursor_id = isnull ? 0 : DatumGetInt64(cursor_id);
  Datum history_from = Column(row, 6, &isnull);
  unit->has_history_from = !isnull;
  unit->history_from = isnull ? DT_NOBEGIN : DatumGetTimestampTz(history_from);
  Datum retry_due_at = Column(row, 7, &isnull);
  unit->has_retries = !isnull;
  unit->retries_due =
      !isnull && DatumGetTimestampTz(retry_due_at) <= GetCurrentTransactionStartTimestamp();
  unit->name = CopiedText(row, 8, context);
  unit->topic_id = DatumGetInt32(Column(row, 9, &isnull));
  unit->topic = CopiedText(row, 10, context);
  Datum fn = Column(row, 11, &isnull);
  unit->handler_fn = isnull ? InvalidOid : DatumGetObjectId(fn);
  unit->batch_form = DatumGetBool(Column(row, 12, &isnull));
  unit->owner = DatumGetObjectId(Column(row, 13, &isnull));
  Datum topic_roles = Column(row, 14, &isnull);
  unit->owner_status =
      OwnerState(unit->owner, unit->handler_fn, isnull ? nullptr : DatumGetArrayTypeP(topic_roles));
  unit->batch_size = DatumGetInt32(Column(row, 15, &isnull));
  unit->max_attempts = DatumGetInt32(Column(row, 16, &isnull));
  unit->backoff_base_us = DatumGetInt64(Column(row, 17, &isnull));
  unit->backoff_cap_us = DatumGetInt64(Column(row, 18, &isnull));
  unit->timeout_ms = DatumGetInt32(Column(row, 19, &isnull));
  unit->block_on_dead = DatumGetBool(Column(row, 20, &isnull));
  unit->failure_budget = DatumGetFloat8(Column(row, 21, &isnull));
  unit->breaker_min_attempts = DatumGetInt32(Column(row, 22, &isnull));
  unit->handler = CopiedText(row, 23, context);
  unit->replay = replay;
  if (replay) {
    unit->replay_id = DatumGetInt32(Column(row, 24, &isnull));
    unit->replay_cursor = DatumGetInt64(Column(row, 25, &isnull));
    unit->replay_chunk = DatumGetInt64(Column(row, 26, &isnull));
    unit->replay_last_id = DatumGetInt64(Column(row, 27, &isnull));
    unit->replay_from = DatumGetTimestampTz(Column(row, 28, &isnull));
    unit->replay_to = DatumGetTimestampTz(Column(row, 29, &isnull));
    unit->replay_key = CopiedText(row, 30, context);
  }
}

TimestampTz NextDue() {
  Run(plans.next_due, nullptr, nullptr, true, SPI_OK_SELECT);
  bool isnull = false;
  Datum due = Column(0, 1, &isnull);
  return isnull ? 0 : DatumGetTimestampTz(due);
}

void BindHandlerIfNeeded(const Unit &unit) {
  if (unit.bound_here) return;
  Datum args[] = {Int32GetDatum(unit.subscription_id), ObjectIdGetDatum(unit.handler_fn)};
  Run(plans.bind_handler, args, nullptr, false, SPI_OK_UPDATE);
}

const char *OwnerSearchPath(const Unit &unit, MemoryContext context) {
  Datum args[] = {ObjectIdGetDatum(unit.owner), ObjectIdGetDatum(MyDatabaseId)};
  if (Run(plans.owner_search_path, args, nullptr, true, SPI_OK_SELECT) == 1) {
    char *path = CopiedText(0, 1, context);
    if (path != nullptr) return path;
  }
  return MemoryContextStrdup(context, ServerSearchPath());
}

const char *HandlerProblem(const Unit &unit) {
  if (!OidIsValid(unit.handler_fn)) {
    return psprintf("handler %s does not exist (dropped?); recreate it and call evproc_resume",
                    unit.handler);
  }
  if (unit.bound_here && unit.handler_fn != unit.bound_fn) {
    return psprintf(
        "handler %s is not the function the subscription was made with or last resumed with: "
        "it was dropped and created again; check it and call evproc_resume",
        unit.handler);
  }
  return OwnerStatusText(unit);
}

const char *OwnerStatusText(const Unit &unit) {
  switch (unit.owner_status) {
    case OwnerStatus::kMissing:
      return psprintf("the subscription's owner role (oid %u) was dropped", unit.owner);
    case OwnerStatus::kSuperuser:
      return psprintf("owner %s is now a superuser; handlers never run as a superuser",
                      GetUserNameFromId(unit.owner, false));
    case OwnerStatus::kNoExecute:
      return psprintf("owner %s may not execute handler %s", GetUserNameFromId(unit.owner, false),
                      unit.handler);
    case OwnerStatus::kNoSubscribe:
      return psprintf("owner %s no longer holds the 'subscribe' privilege on topic \"%s\"",
                      GetUserNameFromId(unit.owner, false), unit.topic);
    case OwnerStatus::kOk:
      break;
  }
  return nullptr;
}

}  // namespace evproc::delivery

#include "lease_plans.hpp"

#include "delivery_plans.hpp"
#include "lease_sql.hpp"

extern "C" {
#include "catalog/pg_type_d.h"
#include "commands/extension.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
}

namespace evproc::lease {

using delivery::Prepare;  // kept generic plans, as delivery's

Plans plans;

namespace {

void FreePlans() {
  SPIPlanPtr *all[] = {&plans.consumer_subscription,
                       &plans.claim,
                       &plans.claim_next,
                       &plans.claim_replay,
                       &plans.mark_replay_leased,
                       &plans.lock_replay,
                       &plans.release_replay,
                       &plans.insert_lease,
                       &plans.mark_leased,
                       &plans.expired,
                       &plans.all_expired,
                       &plans.lease_subscription,
                       &plans.lease_units,
                       &plans.lease_events,
                       &plans.retry_events,
                       &plans.log_events,
                       &plans.next_attempt_at,
                       &plans.lock_units,
                       &plans.release_units,
                       &plans.delete_lease,
                       &plans.next_due,
                       &plans.pause,
                       &plans.checked_lease};
  for (SPIPlanPtr *plan : all) {
    if (*plan != nullptr) SPI_freeplan(*plan);
    *plan = nullptr;
  }
}

}  // namespace

void EnsurePlans() {
  if (!delivery::EnsurePlans()) {
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("extension \"evproc\" is not installed in this database")));
  }
  if (plans.extension == delivery::plans.extension) return;
  FreePlans();
  const Oid check_types[] = {OIDOID, TEXTOID};
  const Oid claim_types[] = {INT4OID, INT4ARRAYOID};
  const Oid insert_types[] = {INT4OID,
                              INT4ARRAYOID,
                              INT8ARRAYOID,
                              INT8ARRAYOID,
                              INT8ARRAYOID,
                              INT8ARRAYOID,
                              INT8ARRAYOID,
                              INT8ARRAYOID,
                              TIMESTAMPTZARRAYOID,
                              INT8ARRAYOID,
                              INT4ARRAYOID,
                              TEXTARRAYOID,
                              BOOLARRAYOID,
                              INT4ARRAYOID,
                              TIMESTAMPTZARRAYOID,
                              TIMESTAMPTZARRAYOID,
                              BOOLARRAYOID,
                              INT8OID,
                              INT4ARRAYOID,
                              INT8ARRAYOID,
                              BOOLARRAYOID,
                              BOOLARRAYOID};
  const Oid mark_types[] = {INT4OID, INT4ARRAYOID, TEXTOID, TIMESTAMPTZOID};
  const Oid one_id[] = {INT4OID};
  const Oid one_text[] = {TEXTOID};
  const Oid events_types[] = {INT4OID, INT8ARRAYOID};
  const Oid log_types[] = {INT4OID, INT8ARRAYOID, TEXTOID};
  const Oid at_types[] = {INT4OID, INT8ARRAYOID, TIMESTAMPTZARRAYOID};
  const Oid lock_types[] = {INT4OID, INT4ARRAYOID};
  const Oid release_types[] = {INT4OID, TEXTOID};
  const Oid reason_types[] = {INT4OID, TEXTOID};
  const Oid lease_check_types[] = {OIDOID, TEXTOID, TEXTOID};
  const Oid replay_mark_types[] = {INT4OID, TEXTOID, TIMESTAMPTZOID};
  plans.consumer_subscription = Prepare(sql::kConsumerSubscription, 2, check_types);
  plans.claim = Prepare(sql::kClaimLeaseUnit, 2, claim_types);
  const Oid claim_next_types[] = {INT4OID, INT4ARRAYOID, INT4OID};
  plans.claim_next = Prepare(sql::kClaimNextLeaseUnit, 3, claim_next_types);
  plans.claim_replay = Prepare(sql::kClaimLeaseReplay, 1, one_id);
  plans.mark_replay_leased = Prepare(sql::kMarkReplayLeased, 3, replay_mark_types);
  plans.lock_replay = Prepare(sql::kLockReplay, 1, one_id);
  plans.release_replay = Prepare(sql::kReleaseReplay, 1, one_text);
  plans.insert_lease = Prepare(sql::kInsertLease, 22, insert_types);
  plans.mark_leased = Prepare(sql::kMarkLeased, 4, mark_types);
  plans.expired = Prepare(sql::kExpiredLeases, 1, one_id);
  plans.all_expired = Prepare(sql::kAllExpiredLeases, 0, nullptr);
  plans.lease_subscription = Prepare(sql::kLeaseSubscription, 1, one_text);
  plans.lease_units = Prepare(sql::kLeaseUnits, 1, one_text);
  plans.lease_events = Prepare(sql::kLeaseEvents, 1, one_text);
  plans.retry_events = Prepare(sql::kRetryEvents, 2, events_types);
  plans.log_events = Prepare(sql::kLogEvents, 3, log_types);
  plans.next_attempt_at = Prepare(sql::kNextAttemptAt, 3, at_types);
  plans.lock_units = Prepare(sql::kLockUnits, 2, lock_types);
  plans.release_units = Prepare(sql::kReleaseUnits, 2, release_types);
  plans.delete_lease = Prepare(sql::kDeleteLease, 1, one_text);
  plans.next_due = Prepare(sql::kReadNextDue, 1, one_id);
  plans.pause = Prepare(sql::kPauseConsumer, 2, reason_types);
  plans.checked_lease = Prepare(sql::kCheckedLease, 3, lease_check_types);
  plans.extension = delivery::plans.extension;
}

Datum ArrayWithNulls(const std::vector<Datum> &values, const std::vector<bool> &nulls, Oid type) {
  int16 length = 0;
  bool by_value = false;
  char align = 0;
  get_typlenbyvalalign(type, &length, &by_value, &align);
  int count = static_cast<int>(values.size());
  auto *null_flags = static_cast<bool *>(palloc(sizeof(bool) * (count + 1)));
  for (int i = 0; i < count; ++i) null_flags[i] = nulls[i];
  int dims[1] = {count};
  int lower[1] = {1};
  return PointerGetDatum(construct_md_array(const_cast<Datum *>(values.data()), null_flags, 1, dims,
                                            lower, type, length, by_value, align));
}

}  // namespace evproc::lease

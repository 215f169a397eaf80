#include "delivery_plans.hpp"

#include "delivery_statements.hpp"

extern "C" {
#include "catalog/pg_type_d.h"
#include "commands/extension.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/memutils.h"
}

namespace evproc::delivery {

Plans plans;

// Generic plans from the first execution: the plans do not depend on the values (the
// window read is an index range scan whatever its bounds), and re-planning each batch
// would cost more than running it.
SPIPlanPtr Prepare(const char *text, int nargs, const Oid *types) {
  SPIPlanPtr plan =
      SPI_prepare_cursor(text, nargs, const_cast<Oid *>(types), CURSOR_OPT_GENERIC_PLAN);
  if (plan == nullptr) {
    elog(ERROR, "evproc: could not prepare a delivery or lease statement: %s",
         SPI_result_code_string(SPI_result));
  }
  SPI_keepplan(plan);
  return plan;
}

namespace {

void FreePlans() {
  SPIPlanPtr *all[] = {
      &plans.claim,          &plans.next_due,          &plans.bounds,         &plans.due_retries,
      &plans.window_pending, &plans.window_range,      &plans.delete_retries, &plans.park,
      &plans.dead_letter,    &plans.promote,           &plans.advance,        &plans.pause,
      &plans.trip,           &plans.claim_replay,      &plans.replay_events,  &plans.advance_replay,
      &plans.retry_due,      &plans.owner_search_path, &plans.claim_ready,    &plans.advance_ready,
      &plans.set_ready,      &plans.claim_hinted};
  for (SPIPlanPtr *plan : all) {
    if (*plan != nullptr) SPI_freeplan(*plan);
    *plan = nullptr;
  }
}

}  // namespace

bool EnsurePlans() {
  Oid extension = get_extension_oid("evproc", true);
  if (!OidIsValid(extension)) return false;
  if (extension == plans.extension) return true;
  FreePlans();
  if (SPI_execute(sql::kEventType, true, 1) != SPI_OK_SELECT || SPI_processed != 1) {
    elog(ERROR, "evproc: could not read the delivery types");
  }
  bool isnull = false;
  Oid event_type =
      DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

  const Oid bounds_types[] = {INT8OID, INT8OID, INT4OID};
  const Oid due_types[] = {INT4OID, INT4OID, INT4OID};
  const Oid window_types[] = {INT4OID, INT4OID, XID8ARRAYOID,   XID8OID, PG_SNAPSHOTOID, XID8OID,
                              INT8OID, INT8OID, TIMESTAMPTZOID, TEXTOID, INT4OID};
  const Oid delete_types[] = {INT4OID, INT8ARRAYOID};
  const Oid park_types[] = {INT4OID, INT4OID, TEXTOID, INT8OID,        event_type,
                            BOOLOID, BOOLOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID,
                            TEXTOID, TEXTOID, TEXTOID, TEXTOID,        TEXTOID};
  const Oid dead_types[] = {INT4OID, INT4OID, event_type, INT4OID,        TEXTOID,        TEXTOID,
                            TEXTOID, TEXTOID, TEXTOID,    TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID};
  const Oid promote_types[] = {INT4OID, INT4OID, TEXTARRAYOID};
  const Oid advance_types[] = {INT4OID, INT4OID,        INT8OID, INT8OID,
                               INT8OID, TIMESTAMPTZOID, BOOLOID, INT8OID};
  const Oid reason_types[] = {INT4OID, TEXTOID};

  const Oid replay_types[] = {INT8OID,        INT8OID, INT8OID, INT4OID, TIMESTAMPTZOID,
                              TIMESTAMPTZOID, TEXTOID, INT4OID, INT8OID, TEXTOID};
  const Oid advance_replay_types[] = {INT4OID, INT8OID, INT8OID, INT8OID, INT8OID, BOOLOID};
  const Oid retry_due_types[] = {INT4OID, INT4ARRAYOID};
  plans.claim = Prepare(sql::kClaimUnit, 0, nullptr);
  plans.claim_replay = Prepare(sql::kClaimReplay, 0, nullptr);
  plans.replay_events = Prepare(sql::kReplayEvents, 10, replay_types);
  plans.advance_replay = Prepare(sql::kAdvanceReplay, 6, advance_replay_types);
  plans.retry_due = Prepare(sql::kRetryDue, 2, retry_due_types);
  plans.next_due = Prepare(sql::kNextDue, 0, nullptr);
  plans.bounds = Prepare(sql::kWindowBounds, 3, bounds_types);
  plans.due_retries = Prepare(sql::kDueRetries, 3, due_types);
  plans.window_pending = Prepare(sql::kWindowPending, 11, window_types);
  plans.window_range = Prepare(sql::kWindowRange, 11, window_types);
  plans.delete_retries = Prepare(sql::kDeleteRetries, 2, delete_types);
  plans.park = Prepare(sql::kParkEvent, 15, park_types);
  plans.dead_letter = Prepare(sql::kDeadLetter, 12, dead_types);
  plans.promote = Prepare(sql::kPromoteHeads, 3, promote_types);
  plans.advance = Prepare(sql::kAdvance, 8, advance_types);
  plans.pause = Prepare(sql::kPause, 2, reason_types);
  plans.trip = Prepare(sql::kTripBreaker, 2, reason_types);
  const Oid role_in_database[] = {OIDOID, OIDOID};
  plans.owner_search_path = Prepare(sql::kOwnerSearchPath, 2, role_in_database);
  // Handlers bound by oid: from extension version 0.3.0 on.
  if (SPI_execute(sql::kHasBindings, true, 1) != SPI_OK_SELECT || SPI_processed != 1) {
    elog(ERROR, "evproc: could not read the subscription table's columns");
  }
  if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull))) {
    const Oid bind_types[] = {INT4OID, OIDOID};
    const Oid one_id[] = {INT4OID};
    plans.bound_handler = Prepare(sql::kBoundHandler, 1, one_id);
    plans.bind_handler = Prepare(sql::kBindHandler, 2, bind_types);
  }
  // Units marked ready: from extension version 0.3.0 on.
  if (SPI_execute(sql::kHasReady, true, 1) != SPI_OK_SELECT || SPI_processed != 1) {
    elog(ERROR, "evproc: could not read the progress table's columns");
  }
  if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull))) {
    const Oid advance_ready_types[] = {INT4OID,        INT4OID, INT8OID, INT8OID, INT8OID,
                                       TIMESTAMPTZOID, BOOLOID, INT8OID, BOOLOID};
    const Oid unit_types[] = {INT4OID, INT4OID};
    plans.claim_ready = Prepare(sql::kClaimReadyUnit, 0, nullptr);
    plans.claim_hinted = Prepare(sql::kClaimHintedUnit, 2, unit_types);
    plans.advance_ready = Prepare(sql::kAdvanceReady, 9, advance_ready_types);
    plans.set_ready = Prepare(sql::kSetReady, 2, unit_types);
  }
  plans.event_type = event_type;
  plans.extension = extension;
  return true;
}

// The statements that read the event log. Their generic plans are made, and made
// again after every analyze of a log partition, with the statistics of that moment: a
// partition analyzed while empty (new, or right after a truncate) makes a sequential scan
// look free, and the window read would then scan the whole partition at every batch until
// the next analyze (seconds of latency, delivery falling behind; t/017_plan_stability.pl).
// They run with sequential scans discouraged: each has an index that serves it whatever
// the statistics. So does the ready claim (kClaimReadyUnit), whose partial indexes hold
// only the units with work: right after a restart every unit is ready, and a plan made
// then would otherwise scan every unit at each claim. And the window's bounds
// (kWindowBounds), which read evproc.tick by its key: a plan made while the tick table
// was a page or two scanned it whole at every batch once it had grown (a tick a
// millisecond, deleted by maintenance, vacuumed by autovacuum only): 5,000 scans a second
// of 44 pages at 1,000 events/s after a drain (bench/compare's latency phase, issue 13).
// The other statements on the small,
// often-updated tables (progress, retry) keep sequential scans: there they are the right
// plan, and an index scan can walk long chains of dead entries.
// The statements that find a unit's progress row newest version first (a backward scan
// of progress_unit_idx, LIMIT 1: kClaimHintedUnit) run without bitmap scans as well,
// which would read every version of the row; so does the look for the next due retry
// (kNextDue), which reads the units with a retry time through their partial index.
namespace {
bool WithoutSeqScans(SPIPlanPtr plan) {
  return plan == plans.window_pending || plan == plans.window_range || plan == plans.bounds ||
         plan == plans.replay_events || plan == plans.next_due ||
         (plans.claim_ready != nullptr && plan == plans.claim_ready);
}
bool NewestVersionFirst(SPIPlanPtr plan) {
  return plan != nullptr && (plan == plans.claim_hinted || plan == plans.advance ||
                             plan == plans.advance_ready || plan == plans.set_ready);
}
}  // namespace

uint64 Run(SPIPlanPtr plan, const Datum *args, const char *nulls, bool read_only, int expected) {
  int guc_level = -1;
  bool newest_first = NewestVersionFirst(plan);
  if (newest_first || WithoutSeqScans(plan)) {
    guc_level = NewGUCNestLevel();
    (void)set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                            true, 0, false);
    if (newest_first) {
      (void)set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
                              GUC_ACTION_SAVE, true, 0, false);
    }
  }
  int rc = SPI_execute_plan(plan, const_cast<Datum *>(args), nulls, read_only, 0);
  // (On an ERROR the transaction's or subtransaction's abort closes the level.)
  if (guc_level >= 0) AtEOXact_GUC(true, guc_level);
  if (rc != expected)
    elog(ERROR, "evproc: delivery statement failed: %s", SPI_result_code_string(rc));
  return SPI_processed;
}

Datum Column(uint64 row, int column, bool *isnull) {
  return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column, isnull);
}

Datum CopiedColumn(uint64 row, int column, bool *isnull, MemoryContext context) {
  Datum value = Column(row, column, isnull);
  if (*isnull) return value;
  Form_pg_attribute attribute = TupleDescAttr(SPI_tuptable->tupdesc, column - 1);
  MemoryContext previous = MemoryContextSwitchTo(context);
  value = datumCopy(value, attribute->attbyval, attribute->attlen);
  MemoryContextSwitchTo(previous);
  return value;
}

char *CopiedText(uint64 row, int column, MemoryContext context) {
  bool isnull = false;
  Datum value = Column(row, column, &isnull);
  if (isnull) return nullptr;
  return MemoryContextStrdup(context, TextDatumGetCString(value));
}

Datum TextOrNull(const char *value) { return value == nullptr ? 0 : CStringGetTextDatum(value); }

}  // namespace evproc::delivery

// One batch of delivery in its transaction (docs/design.md, "The path of one event"):
// the extension gate, the pinned search_path, SPI and the snapshot around the steps
// claim (delivery_claim), read (delivery_read), deliver with poison isolation
// (delivery_isolation), write the outcome (delivery_outcome) and judge the breaker
// (delivery_breaker), then the commit that makes the handler's effects and the unit's
// new position one.
#include "delivery.hpp"

#include "delivery_breaker.hpp"
#include "delivery_claim.hpp"
#include "delivery_isolation.hpp"
#include "delivery_outcome.hpp"
#include "delivery_plans.hpp"
#include "delivery_read.hpp"
#include "delivery_ready.hpp"
#include "error_boundary.hpp"
#include "extension_gate.hpp"
#include "metrics.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/namespace.h"
#include "pgstat.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace evproc {
namespace {

using namespace delivery;  // NOLINT(google-build-using-namespace): this file runs its steps
using pg::CallPostgres;

// evproc's statements run with search_path = pg_catalog, pg_temp: the session's (set by
// the server's or the database's configuration, which a database owner may change)
// must not change what they mean while they run as a superuser. Handlers get their
// owner's (OwnerSearchPath). Returns the GUC nest level to close with AtEOXact_GUC (an abort
// closes it too).
int PinSearchPath() {
  int level = NewGUCNestLevel();
  (void)set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
                          GUC_ACTION_SAVE, true, 0, false);
  return level;
}

MemoryContext BatchContext() {
  static MemoryContext context = nullptr;
  if (context == nullptr) {
    context = CallPostgres([] {
      return AllocSetContextCreate(TopMemoryContext, "evproc batch", ALLOCSET_DEFAULT_SIZES);
    });
  }
  return context;
}

void DeliverClaimed(const Unit &unit, MemoryContext context, BatchResult *out);

// One batch inside the current transaction, SPI connected.
BatchResult DeliverBatch(MemoryContext context, bool report_activity) {
  BatchResult result{};

  // Live units and replays take turns at being looked for first, so neither starves the
  // other while both have work.
  static bool replay_first = false;
  replay_first = !replay_first;
  Unit unit{};
  bool claimed = CallPostgres([&] {
    return EnsurePlans() &&
           (ClaimUnit(&unit, replay_first, context) || ClaimUnit(&unit, !replay_first, context));
  });
  if (!claimed) {
    result.next_due = CallPostgres([] { return OidIsValid(plans.extension) ? NextDue() : 0; });
    NoteNextDue(result.next_due);
    return result;
  }
  result.worked = true;
  result.subscription = unit.name;
  result.partition = unit.partition;
  if (report_activity) {
    CallPostgres([&] {
      metrics::WorkerBusy(unit.subscription_id, unit.partition, unit.replay);
      pgstat_report_activity(
          STATE_RUNNING,
          unit.replay
              ? psprintf("evproc: subscription %s replay %d", unit.name, unit.replay_id)
              : psprintf("evproc: subscription %s partition %d", unit.name, unit.partition));
    });
  }
  // The unit's rows are read with a snapshot taken after the claim: the worker that held
  // the unit before may have committed (parked keys, cursor) after our first snapshot.
  // (On an error the transaction's abort pops it.)
  CallPostgres([] { PushActiveSnapshot(GetTransactionSnapshot()); });
  DeliverClaimed(unit, context, &result);
  CallPostgres([] { PopActiveSnapshot(); });
  return result;
}

// The steps of the claimed unit's batch: read, deliver, write the outcome, judge.
void DeliverClaimed(const Unit &unit, MemoryContext context, BatchResult *out) {
  BatchResult &result = *out;
  const char *problem = CallPostgres([&] { return HandlerProblem(unit); });
  if (problem != nullptr) {
    CallPostgres([&] {
      SetReason(plans.pause, unit, problem);
      ereport(WARNING, (errmsg("evproc: subscription \"%s\" paused: %s", unit.name, problem)));
    });
    result.paused = true;
    return;
  }
  CallPostgres([&] { BindHandlerIfNeeded(unit); });

  ItemList items{};
  if (unit.retries_due) CallPostgres([&] { ReadDueRetries(unit, &items, context); });
  Position at{unit.tick_id, unit.window_tick, unit.has_cursor, unit.cursor_id};
  ReplayPosition replay_at{unit.replay_cursor, unit.replay_chunk, false};
  // Each event read says whether its key is parked (Item::key_parked, read in the same
  // statement, only where the unit has parked keys): a batch costs the same beside one
  // parked key or a hundred thousand (issue 19).
  if (unit.replay) {
    CallPostgres([&] { ReadReplay(unit, &replay_at, &items, context); });
  } else {
    ReadWindows(unit, &at, &items, context);
  }

  const char *search_path = CallPostgres([&] { return OwnerSearchPath(unit, context); });
  ChargedEvents charged =
      CallPostgres([&] { return TakeCharges(unit.subscription_id, unit.partition, context); });
  ErrorData *broken = DeliverIsolated(unit, items, search_path, charged, context);
  if (broken != nullptr) {
    // The handler fails before looking at any event: nothing is charged, the unit does
    // not move, and the subscription waits for an operator.
    CallPostgres([&] {
      const char *reason =
          psprintf("handler %s is broken: %s: %s; fix it and call evproc_resume", unit.handler,
                   unpack_sql_state(broken->sqlerrcode),
                   broken->message != nullptr ? CappedErrorText(broken->message) : "");
      SetReason(plans.pause, unit, reason);
      ereport(WARNING, (errmsg("evproc: subscription \"%s\" paused: %s", unit.name, reason)));
    });
    result.paused = true;
    return;
  }
  Tally tally =
      unit.replay ? WriteReplayOutcome(unit, items, replay_at) : WriteOutcome(unit, items, at);
  JudgeBreaker(unit, tally.delivered + tally.failed);
  result.delivered = tally.delivered;
  result.failed = tally.failed;
  result.dead = tally.dead;
}

}  // namespace

BatchResult RunOneBatch() {
  MemoryContext context = BatchContext();
  ExtensionGate gate = ExtensionGate::kInstalled;
  int guc_level = 0;
  SetReadyMayClear(true);
  CallPostgres([&] {
    MemoryContextReset(context);
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    // First the extension gate (extension_gate.hpp): DROP EXTENSION waits for this batch. A
    // batch that would start during a drop does not queue behind it but backs off: the
    // launcher stops the workers once the drop commits, and its SIGTERM must find them
    // between batches (a clean stop), not in a lock wait (a FATAL). Gone or at a version
    // the library does not serve, the batch is empty and the launcher stops the worker.
    gate = EnterExtension(nullptr);
    if (gate != ExtensionGate::kInstalled) {
      CommitTransactionCommand();
      return;
    }
    guc_level = PinSearchPath();
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
    PushActiveSnapshot(GetTransactionSnapshot());
  });
  if (gate == ExtensionGate::kBusy) {
    BatchResult later{};
    later.next_due = GetCurrentTimestamp();  // due now: look again after a short wait
    return later;
  }
  if (gate != ExtensionGate::kInstalled) return BatchResult{};
  BatchResult result = DeliverBatch(context, true);
  CallPostgres([&] {
    PopActiveSnapshot();
    SPI_finish();
    AtEOXact_GUC(true, guc_level);
    CommitTransactionCommand();
    pgstat_report_activity(STATE_IDLE, nullptr);
  });
  ReadyAfterCommit();
  return result;
}

BatchResult RunOneBatchInTransaction() {
  MemoryContext context = BatchContext();
  int guc_level = 0;
  SetReadyMayClear(false);  // the caller commits: no look after the commit
  CallPostgres([&] {
    MemoryContextReset(context);
    guc_level = PinSearchPath();
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
  });
  BatchResult result = DeliverBatch(context, false);
  CallPostgres([&] {
    SPI_finish();
    AtEOXact_GUC(true, guc_level);
  });
  return result;
}

}  // namespace evproc

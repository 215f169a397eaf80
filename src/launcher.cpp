// The launcher: one static background worker per server (docs/design.md "Processes").
//
//  * Ticks: when a commit asked for one (src/commit_wake.cpp), it records a snapshot in
//    evproc.tick, listing the partitions that got events, and wakes as many idle workers
//    as partitions a subscription awaits. Ticks are at least evproc.tick_interval apart,
//    further under load (core/tick_pace.hpp); commits nobody awaits get one a second.
//  * Supervision: keeps the maintenance worker (maintenance_worker.cpp: the metrics
//    registry and evproc.maintain()), evproc.workers delivery workers and
//    evproc.sink_workers sink workers (sink_supervisor.hpp) running,
//    restarts any that die (with a pause, so a worker that dies at once does not spin),
//    and stops extra ones when the setting is lowered. Delivery workers start once the
//    maintenance worker registered the subscriptions (their backlog counted before any
//    is delivered), or at once when it has no slot.
//  * It does nothing else: no statement of its own can wait behind maintenance or an
//    application's locks, so ticks keep coming whatever they do.
//  * Lifecycle: before connecting it waits for evproc.database to exist
//    (database_check.hpp); it leaves the database when DROP DATABASE asks
//    (utility_hook.hpp); it follows the extension being dropped and created, entering
//    the extension gate (extension_gate.hpp) in each of its transactions. Each change of
//    state is one log line.
#include <csetjmp>
#include <cstring>

#include "background.hpp"
#include "commit_wake.hpp"
#include "core/tick_pace.hpp"
#include "core/version.hpp"
#include "database_check.hpp"
#include "extension_gate.hpp"
#include "pg_compat.hpp"
#include "ready_flags.hpp"
#include "shared_state.hpp"
#include "sink_supervisor.hpp"
#include "spi_plan.hpp"
#include "utility_hook.hpp"

extern "C" {
#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "catalog/pg_type_d.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace evproc {

void RegisterLauncher() {
  BackgroundWorker worker{};
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  worker.bgw_restart_time = 5;
  std::strncpy(worker.bgw_library_name, "evproc", BGW_MAXLEN - 1);
  std::strncpy(worker.bgw_function_name, "evproc_launcher_main", BGW_MAXLEN - 1);
  std::strncpy(worker.bgw_name, "evproc launcher", BGW_MAXLEN - 1);
  std::strncpy(worker.bgw_type, "evproc launcher", BGW_MAXLEN - 1);
  RegisterBackgroundWorker(&worker);
}

}  // namespace evproc

namespace {

using evproc::kMaxWorkers;

using evproc::ExtensionGate;

constexpr long kNoExtensionWaitMs = 2000;
constexpr long kGateBusyWaitMs = 200;
constexpr long kSuperviseWaitMs = 1000;
// Commits no subscription awaits (commit_wake.cpp) get a tick this often.
constexpr long kLazyTickMs = 1000;
constexpr int64 kRestartPauseUs = INT64CONST(1000000);
// Registering a worker when no slot is free costs a scan of the slot array: looking
// every 2 seconds starts the missing workers soon after a slot frees up.
constexpr int64 kNoSlotRetryUs = INT64CONST(2000000);

// The delivery workers are members 0..kMaxWorkers-1, the maintenance worker is the last.
constexpr int kMaintenance = kMaxWorkers;
constexpr int kMembers = kMaxWorkers + 1;

struct Pool {
  BackgroundWorkerHandle *handles[kMembers];
  TimestampTz not_before[kMembers];
  bool waiting_for_slot[kMembers];
  bool warned_no_slot;  // once per shortage: cleared when every worker runs again
};
Pool pool;

enum class ExtensionState { kUnknown, kInstalled, kMissing, kUnsupported };

// The installed version as of the last look, for the log lines about it.
char installed_version[NAMEDATALEN];

// Looks at the extension through its gate, without waiting behind a DROP EXTENSION.
ExtensionGate CheckExtension(Oid *extension) {
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  evproc::ExtensionRow row{InvalidOid, InvalidOid, nullptr};
  ExtensionGate gate = evproc::EnterExtension(&row);
  if (gate == ExtensionGate::kInstalled || gate == ExtensionGate::kUnsupported) {
    *extension = row.oid;
    strlcpy(installed_version, row.version != nullptr ? row.version : "?",
            sizeof installed_version);
  }
  CommitTransactionCommand();
  return gate;
}

// The installed extension's objects are of a version this library does not serve: one
// WARNING per version met, saying which step of the upgrade is missing.
void ReportUnsupportedVersion() {
  const auto library = evproc::core::kLibraryVersion;
  const int library_length = static_cast<int>(library.size());
  switch (evproc::core::FitOf(installed_version)) {
    case evproc::core::VersionFit::kOlder:
      ereport(WARNING,
              (errmsg("evproc: extension \"evproc\" in database \"%s\" is at version %s, "
                      "older than this library (%.*s) serves; nothing is delivered",
                      evproc::database_name, installed_version, library_length, library.data()),
               errdetail("Events are still enqueued and kept; delivery starts after the update."),
               errhint("Run ALTER EXTENSION evproc UPDATE in database \"%s\".",
                       evproc::database_name)));
      break;
    case evproc::core::VersionFit::kNewer:
      ereport(WARNING,
              (errmsg("evproc: extension \"evproc\" in database \"%s\" is at version %s, "
                      "newer than the library this server runs (%.*s); nothing is delivered",
                      evproc::database_name, installed_version, library_length, library.data()),
               errdetail("Events are still enqueued and kept; delivery starts after the restart."),
               errhint("Restart PostgreSQL: it loads evproc's library once, at start, and a "
                       "newer one was installed since.")));
      break;
    default:
      ereport(
          WARNING,
          (errmsg("evproc: extension \"evproc\" in database \"%s\" is at version \"%s\", "
                  "which library %.*s does not know; nothing is delivered",
                  evproc::database_name, installed_version, library_length, library.data()),
           errhint("ALTER EXTENSION evproc UPDATE TO '%.*s'.", library_length, library.data())));
      break;
  }
}

// The extension the launcher serves (its OID tells a re-created one apart).
Oid served_extension = InvalidOid;

// Starts a transaction inside the extension gate. False, with no transaction, when the
// extension is being dropped, is gone, or is not the one the launcher serves: the main
// loop then looks at the extension again.
bool BeginGated() {
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  evproc::ExtensionRow row{InvalidOid, InvalidOid, nullptr};
  if (evproc::EnterExtension(&row) == ExtensionGate::kInstalled && row.oid == served_extension) {
    return true;
  }
  CommitTransactionCommand();
  return false;
}

void StopWorker(int index) { evproc::StopDatabaseWorker(&pool.handles[index]); }

// The delivery workers, the maintenance worker and the sink workers.
void StopWorkers() {
  for (int i = 0; i < kMembers; ++i) StopWorker(i);
  evproc::StopSinkWorkers();
  if (evproc::Shared() != nullptr) {
    pg_atomic_write_u32(&evproc::Shared()->registry_database, InvalidOid);
  }
}

void StopAllWorkers(int /*code*/, Datum /*arg*/) {
  StopWorkers();
  if (evproc::Shared() != nullptr) {
    pg_atomic_write_u32(&evproc::Shared()->launcher_procno, evproc::kNoProc);
    pg_atomic_write_u32(&evproc::Shared()->launcher_database, InvalidOid);
  }
}

bool StartWorker(int index) {
  if (index == kMaintenance) {
    return evproc::StartDatabaseWorker("evproc_maintenance_main", "evproc maintenance",
                                       "evproc maintenance", index, &pool.handles[index]);
  }
  char name[BGW_MAXLEN];
  snprintf(name, sizeof name, "evproc worker %d", index);
  return evproc::StartDatabaseWorker("evproc_worker_main", name, "evproc worker", index,
                                     &pool.handles[index]);
}

// Whether delivery workers may start: the maintenance worker registered the
// subscriptions in the metrics (their backlog is counted before any of it is delivered,
// so the count is exact), or it cannot run for want of a slot (delivery goes first).
bool RegistryReady() {
  return pg_atomic_read_u32(&evproc::Shared()->registry_database) == MyDatabaseId ||
         pool.waiting_for_slot[kMaintenance];
}

// Keeps the maintenance worker and workers 0..evproc.workers-1 running; returns how soon
// to look again (ms).
long Supervise() {
  TimestampTz now = GetCurrentTimestamp();
  long next_look = -1;
  bool started_after_wait = false;
  // The maintenance worker first: it is one, and it takes its slot before the workers.
  for (int n = 0; n < kMembers; ++n) {
    int i = n == 0 ? kMaintenance : n - 1;
    if (i != kMaintenance && i >= evproc::worker_count) {
      StopWorker(i);
      pool.waiting_for_slot[i] = false;
      continue;
    }
    if (i != kMaintenance && pool.handles[i] == nullptr && !RegistryReady()) {
      next_look = kSuperviseWaitMs;  // it wakes us when done
      continue;
    }
    pid_t pid = 0;
    if (pool.handles[i] != nullptr &&
        GetBackgroundWorkerPid(pool.handles[i], &pid) != BGWH_STOPPED) {
      continue;
    }
    if (pool.handles[i] != nullptr) {
      if (i == kMaintenance) {
        ereport(LOG, (errmsg("evproc maintenance worker exited; restarting it")));
      } else {
        ereport(LOG, (errmsg("evproc worker %d exited; restarting it", i)));
      }
      pfree(pool.handles[i]);
      pool.handles[i] = nullptr;
      pool.not_before[i] = now + kRestartPauseUs;
    }
    if (now < pool.not_before[i]) {
      next_look = kSuperviseWaitMs;
      continue;
    }
    if (StartWorker(i)) {
      started_after_wait |= pool.waiting_for_slot[i];
      pool.waiting_for_slot[i] = false;
      continue;
    }
    // No free slot: one WARNING per shortage, not one per attempt.
    if (!pool.warned_no_slot) {
      ereport(WARNING,
              (i == kMaintenance
                   ? errmsg("evproc could not start its maintenance worker: no free background "
                            "worker slot")
                   : errmsg("evproc could not start worker %d: no free background worker slot", i),
               errdetail("The launcher tries again every 2 seconds; the workers it has deliver "
                         "meanwhile."),
               errhint("Raise max_worker_processes (it must cover evproc.workers + 2 and "
                       "every other extension's workers) or lower evproc.workers.")));
      pool.warned_no_slot = true;
    }
    pool.handles[i] = nullptr;
    pool.waiting_for_slot[i] = true;
    pool.not_before[i] = now + kNoSlotRetryUs;
    next_look = kSuperviseWaitMs;
  }
  bool waiting = false;
  for (bool w : pool.waiting_for_slot) waiting |= w;
  if (pool.warned_no_slot && !waiting) {
    if (started_after_wait) {
      ereport(LOG, (errmsg("evproc: all %d workers run now that background worker slots are free",
                           evproc::worker_count)));
    }
    pool.warned_no_slot = false;
  }
  return next_look;
}

constexpr int kMostListedSlots = 1024;  // beyond: NULL, every unit looks

// The tick's dirty list, or nullptr (NULL: any partition may have commits).
ArrayType *DirtyList(const int *slots, int count, bool every_slot) {
  if (every_slot || count > kMostListedSlots) return nullptr;
  Datum values[kMostListedSlots];
  for (int i = 0; i < count; ++i) values[i] = Int32GetDatum(slots[i]);
  return construct_array(values, count, INT4OID, 4, true, TYPALIGN_INT);
}

// The statement that records a tick, prepared once (the plan cache re-plans it when
// evproc.tick is re-created): no parse and plan per tick. What evproc.take_tick() does.
SPIPlanPtr tick_plan = nullptr;

// Takes a tick in its own transaction. Returns its id, or -1 when the extension gate
// was closed.
int64 TakeTick(const int *slots, int count, bool every_slot) {
  if (!BeginGated()) return -1;
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc launcher: SPI_connect failed");
  PushActiveSnapshot(GetTransactionSnapshot());
  static const Oid types[] = {INT4ARRAYOID};
  SPIPlanPtr plan = evproc::PrepareOnce(
      &tick_plan,
      "INSERT INTO evproc.tick (snapshot, dirty) VALUES (pg_catalog.pg_current_snapshot(), $1) "
      "RETURNING id",
      1, types);
  ArrayType *dirty = DirtyList(slots, count, every_slot);
  Datum args[] = {PointerGetDatum(dirty)};
  char nulls[] = {dirty == nullptr ? 'n' : ' ', '\0'};
  if (SPI_execute_plan(plan, args, nulls, false, 1) != SPI_OK_INSERT_RETURNING ||
      SPI_processed != 1) {
    elog(ERROR, "evproc launcher: could not take a tick");
  }
  bool isnull = false;
  int64 tick =
      DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
  PopActiveSnapshot();
  SPI_finish();
  CommitTransactionCommand();
  return tick;
}

// The extension is not installed (at start), or was dropped: one line per change.
void ReportExtensionMissing(ExtensionState before) {
  if (before == ExtensionState::kInstalled) {
    ereport(LOG, (errmsg("evproc: extension \"evproc\" was dropped from database \"%s\"; its "
                         "workers stop until CREATE EXTENSION evproc",
                         evproc::database_name)));
  } else {
    ereport(LOG, (errmsg("evproc: extension \"evproc\" is not installed in database \"%s\"; "
                         "delivery starts after CREATE EXTENSION evproc",
                         evproc::database_name),
                  errhint("evproc.database names the database whose evproc is served.")));
  }
}

void ReportWorkerCount(int before) {
  if (evproc::worker_count == before) return;
  if (evproc::worker_count == 0) {
    ereport(LOG, (errmsg("evproc.workers changed from %d to 0: all workers stop", before),
                  errdetail("No events are delivered until evproc.workers is raised.")));
  } else {
    ereport(LOG, (errmsg("evproc.workers changed from %d to %d", before, evproc::worker_count)));
  }
}

// DROP DATABASE, RENAME or SET TABLESPACE of our database asked us to leave it
// (utility_hook.hpp). Exit code 1: the postmaster starts the launcher again in 5 seconds,
// and it waits for the database (under its name in evproc.database).
void LeaveDatabase() {
  switch (evproc::DatabaseLeaveReason()) {
    case evproc::LeaveReason::kRename:
      ereport(LOG, (errmsg("evproc launcher leaves database \"%s\", which is being renamed",
                           evproc::database_name),
                    errdetail("Its workers stop; the launcher starts again in 5 seconds and "
                              "waits until a database named \"%s\" exists.",
                              evproc::database_name),
                    errhint("Set evproc.database to the new name and restart PostgreSQL, or "
                            "rename the database back.")));
      break;
    case evproc::LeaveReason::kMove:
      ereport(LOG, (errmsg("evproc launcher leaves database \"%s\", which is being moved to "
                           "another tablespace",
                           evproc::database_name),
                    errdetail("Its workers stop; the launcher starts again in 5 seconds and "
                              "connects once the move is done.")));
      break;
    default:
      ereport(LOG, (errmsg("evproc launcher leaves database \"%s\", which is being dropped",
                           evproc::database_name),
                    errdetail("Its workers stop; the launcher starts again in 5 seconds and "
                              "waits until the database exists.")));
      break;
  }
  proc_exit(1);  // StopAllWorkers runs on the way out
}

// Marks ready the units of `slots` (all with every_unit) and of those left from before
// (ready_flags.hpp), in a gated transaction of its own. Returns how many units became
// ready, or -1 when the extension gate was closed.
int FlagReady(const int *slots, int count, bool every_unit) {
  evproc::ready::Remember(slots, count, every_unit);
  if (!evproc::ready::Pending()) return 0;
  if (!BeginGated()) return -1;
  int flagged = evproc::ready::FlagInTransaction(served_extension, installed_version);
  CommitTransactionCommand();
  evproc::ready::HintFlagged();
  return flagged;
}

// The collected slots may hold events visible in `tick`.
void MarkDirty(const int *slots, int count, int64 tick) {
  for (int i = 0; i < count; ++i) {
    pg_atomic_write_u64(&evproc::Shared()->slots[slots[i]].dirty_tick, static_cast<uint64>(tick));
  }
}

}  // namespace

extern "C" void evproc_launcher_main(Datum /*main_arg*/) {
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);
  BackgroundWorkerUnblockSignals();
  // A missing database would make the connection below FATAL, and the postmaster would
  // restart us into it every 5 seconds: wait for the database first.
  evproc::WaitForDatabase();
  BackgroundWorkerInitializeConnection(evproc::database_name, nullptr, 0);
  // Connected, so no drop of this database is under way: a request to leave is stale.
  evproc::ForgetLeaveRequest();
  pgstat_report_appname("evproc launcher");
  // A tick lost in a crash is simply taken again; its commit need not wait for a flush
  // (workers' commits flush the WAL that holds it).
  SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
  // Our statements (the tick, the flagging) must mean what they say whatever search_path
  // the database's owner configures: we run as a superuser.
  SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
  // Each of our statements reads its tables by an index (the flagging: progress_slot_idx
  // and the subscription's key). Their generic plans are made once, often while the
  // tables are a page or two; evproc.progress then grows by the dead versions of a
  // thousand updates a second between two autovacuum runs, and a sequential scan of it
  // at every tick made ticks slower, so fewer (latency at 1,000 events/s after a drain,
  // p50 / p99: 1.96 / 7.39 ms with 560 ticks a second, 1.54 / 6.24 with 714, issue 13).
  SetConfigOption("enable_seqscan", "off", PGC_SUSET, PGC_S_OVERRIDE);
  // Nor bitmap scans: the flagging reads each unit's row newest version first, a backward
  // index scan that stops at the first row (kFlagReady); a bitmap scan would read every
  // version of it, and under a transaction held open they are never pruned.
  SetConfigOption("enable_bitmapscan", "off", PGC_SUSET, PGC_S_OVERRIDE);

  evproc::SharedState *state = evproc::Shared();
  pg_atomic_write_u32(&state->launcher_procno, evproc::compat::MyProcIndex());
  // The maintenance worker this launcher starts registers the subscriptions first.
  pg_atomic_write_u32(&state->registry_database, InvalidOid);
  before_shmem_exit(StopAllWorkers, 0);
  ereport(LOG, (errmsg("evproc launcher started for database \"%s\"", evproc::database_name)));

  // Plain locals live across the longjmp below: they are only written before it or are
  // re-derived after it, so none needs volatile.
  static bool ticked_once = false;
  static TimestampTz last_tick_at = 0;
  static TimestampTz next_extension_check = 0;
  static ExtensionState extension_state = ExtensionState::kUnknown;
  // Ticks' spacing: evproc.tick_interval at low rates, wider while every worker is busy
  // (up to 25 ms) and above evproc.tick_widen_above events a second (up to 50 ms; the
  // latency at 1,000 events/s had p99 9.1 ms with the busy workers' ceiling at 50 ms too,
  // 6.4 with 25, in one run each; core/tick_pace.hpp).
  static evproc::core::TickPace pace(evproc::tick_interval_ms, 25, 50);
  pace.SetWidenRate(evproc::tick_widen_above);

  sigjmp_buf recover;
  if (sigsetjmp(recover, 1) != 0) {
    evproc::RecoverFromError();
    next_extension_check = 0;
    evproc::SleepOnLatch(kSuperviseWaitMs);
  }
  PG_exception_stack = &recover;

  for (;;) {
    CHECK_FOR_INTERRUPTS();
    evproc::ReportStats();  // a busy loop may not sleep for a long time
    if (evproc::DatabaseToLeave() == MyDatabaseId) LeaveDatabase();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      int workers_before = evproc::worker_count;
      ProcessConfigFile(PGC_SIGHUP);
      pace.SetFloor(evproc::tick_interval_ms);
      pace.SetWidenRate(evproc::tick_widen_above);
      ReportWorkerCount(workers_before);
    }
    TimestampTz now = GetCurrentTimestamp();
    // Whether the extension exists is checked once a second, not at every tick; a drop
    // in between closes the gate of the next transaction, which sends us back here.
    if (now >= next_extension_check) {
      Oid extension = InvalidOid;
      ExtensionGate gate = CheckExtension(&extension);
      if (gate == ExtensionGate::kBusy) {  // a DROP EXTENSION is under way
        evproc::SleepOnLatch(kGateBusyWaitMs);
        continue;
      }
      if (gate == ExtensionGate::kMissing || gate == ExtensionGate::kUnsupported) {
        static char reported_version[NAMEDATALEN];
        if (gate == ExtensionGate::kMissing && extension_state != ExtensionState::kMissing) {
          ReportExtensionMissing(extension_state);
        } else if (gate == ExtensionGate::kUnsupported &&
                   (extension_state != ExtensionState::kUnsupported ||
                    strcmp(reported_version, installed_version) != 0)) {
          ReportUnsupportedVersion();
          strlcpy(reported_version, installed_version, sizeof reported_version);
        }
        extension_state = gate == ExtensionGate::kMissing ? ExtensionState::kMissing
                                                          : ExtensionState::kUnsupported;
        StopWorkers();
        ticked_once = false;
        evproc::SleepOnLatch(kNoExtensionWaitMs);
        continue;
      }
      if (extension_state == ExtensionState::kUnsupported) {
        ereport(LOG, (errmsg("evproc: extension \"evproc\" in database \"%s\" is at version %s, "
                             "which this library serves; delivery starts",
                             evproc::database_name, installed_version)));
      } else if (extension_state == ExtensionState::kMissing) {
        ereport(LOG, (errmsg("evproc: extension \"evproc\" was created in database \"%s\"; "
                             "delivery starts",
                             evproc::database_name)));
      } else if (extension_state == ExtensionState::kInstalled && extension != served_extension) {
        // Dropped and created again between two looks: start over as after a start, with
        // fresh workers (nothing of the old extension's ticks carries over).
        ereport(LOG, (errmsg("evproc: extension \"evproc\" was dropped and created again in "
                             "database \"%s\"; its workers start again",
                             evproc::database_name)));
        StopWorkers();
        ticked_once = false;
      }
      extension_state = ExtensionState::kInstalled;
      served_extension = extension;
      next_extension_check = now + USECS_PER_SEC;
    }
    long wait = Supervise();
    long sink_wait = evproc::SuperviseSinkWorkers();
    if (sink_wait >= 0 && (wait < 0 || sink_wait < wait)) wait = sink_wait;
    if (wait < 0) wait = kSuperviseWaitMs * 10;

    // Commits that no subscription awaits (paused, breaker open, none) only mark their
    // slots, without setting our latch: we look at least once a second, and one tick a
    // second takes those marks.
    if (ticked_once && wait > kLazyTickMs) wait = kLazyTickMs;
    long since_tick = TimestampDifferenceMilliseconds(last_tick_at, now);
    bool requested = evproc::TickRequested(false);
    if (!requested && ticked_once && evproc::TickRequested(true)) {
      if (since_tick >= kLazyTickMs) {
        requested = true;
      } else if (kLazyTickMs - since_tick < wait) {
        wait = kLazyTickMs - since_tick;
      }
    }
    if (!ticked_once || requested) {
      // A worker asleep with nothing to do takes the window at once: the interval busy
      // workers widened is not for it (it wakes us when it lies down, shared_state.hpp).
      long interval = static_cast<long>(pace.IntervalMs(evproc::AnyWorkerAsleep()));
      if (!ticked_once || since_tick >= interval) {
        TimestampTz tick_start = GetCurrentTimestamp();
        // The marks are taken before the tick's snapshot (commit_wake.cpp says why no
        // commit is missed). The first tick after a start lists nothing (NULL): every
        // unit looks once.
        static int dirty_slots[evproc::kPartitionSlots];
        int dirty_count = evproc::TakeCommittedSlots(dirty_slots);
        int64 tick = TakeTick(dirty_slots, dirty_count, !ticked_once);
        if (tick < 0) {
          next_extension_check = 0;
          continue;
        }
        evproc::CommittedSlotsTicked();
        pace.CountedEvents(evproc::EventsCommitted(), static_cast<double>(tick_start) / 1000.0);
        // After a start (or the extension created again) the stamps of before name
        // ticks of before, possibly ahead of this one: they go; the floor covers them.
        if (!ticked_once) {
          for (auto &slot : state->slots) pg_atomic_write_u64(&slot.dirty_tick, 0);
        }
        MarkDirty(dirty_slots, dirty_count, tick);
        bool every_worker = !ticked_once || evproc::TakeWorkersWanted();
        bool first_tick = !ticked_once;
        if (!ticked_once) {
          pg_atomic_write_u64(&state->floor_tick, static_cast<uint64>(tick));
          pg_atomic_write_u32(&state->launcher_database, MyDatabaseId);
        }
        ticked_once = true;
        last_tick_at = now;
        // After a start every unit is looked at once (stamps of before were lost).
        // Units made ready without a hint (after a start every unit; a commit that changed
        // subscriptions or re-drove work made some ready in SQL): the workers read every
        // ready unit until that finds none (delivery_ready.hpp).
        if (every_worker) evproc::HintsLost();
        int flagged = FlagReady(dirty_slots, dirty_count, first_tick);
        if (flagged < 0) {
          next_extension_check = 0;
          continue;
        }
        // Straight to the workers that will take the units: as many idle ones as slots
        // a subscription awaits (every one after a start or a subscription change). A
        // tick whose work no idle worker could take finds every worker busy: the next
        // one waits longer (core/tick_pace.hpp).
        int awaited = every_worker ? kMaxWorkers : evproc::AwaitedSlots(dirty_slots, dirty_count);
        if (flagged > awaited) awaited = flagged;
        int woken = evproc::WakeIdleWorkers(awaited);
        if (awaited > 0) evproc::WakeReaders();  // pull subscriptions' waiting readers
        pace.Ticked(static_cast<double>(GetCurrentTimestamp() - tick_start) / 1000.0,
                    awaited == 0 || woken > 0);
        continue;  // commits may have come in meanwhile
      }
      long remaining = interval - since_tick;
      if (remaining < wait) wait = remaining < 1 ? 1 : remaining;
    }
    // Units a tick could not mark ready (someone held them): tried again shortly.
    if (ticked_once && evproc::ready::Pending()) {
      static TimestampTz next_flag_at = 0;
      if (now >= next_flag_at) {
        next_flag_at = now + evproc::ready::kRetryMs * 1000;
        int flagged = FlagReady(nullptr, 0, false);
        if (flagged < 0) {
          next_extension_check = 0;
          continue;
        }
        if (flagged > 0) evproc::WakeIdleWorkers(flagged);
      }
      if (wait > evproc::ready::kRetryMs) wait = evproc::ready::kRetryMs;
    }
    evproc::SleepOnLatch(wait);
  }
}

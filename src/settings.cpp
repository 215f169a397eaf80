// Every evproc GUC, defined in one place (from _PG_init).
#include "settings.hpp"

#include "shared_state.hpp"

extern "C" {
#include "miscadmin.h"
#include "utils/guc.h"
}

namespace evproc {

int max_payload_bytes = 1024 * 1024;
int max_batch_events = 10000;

char *database_name = nullptr;
int worker_count = 2;
int tick_interval_ms = 1;
int tick_widen_above = 2000;
int maintenance_interval_s = 10;
bool worker_synchronous_commit = false;
int partition_interval_s = 3600;
int max_handler_timeout_ms = 10 * 60 * 1000;
int handler_grace_ms = 5000;
char *sink_allowed_destinations = nullptr;
int sink_worker_count = 1;
int sink_max_in_flight = 64;

namespace {

void DefineEnqueueSettings() {
  DefineCustomIntVariable("evproc.max_payload_bytes",
                          "Largest event payload accepted by enqueue (jsonb size in bytes).",
                          nullptr, &max_payload_bytes, 1024 * 1024, 64, 64 * 1024 * 1024, PGC_SUSET,
                          GUC_UNIT_BYTE, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "evproc.max_batch_events", "Most events accepted by one evproc_enqueue_batch call.", nullptr,
      &max_batch_events, 10000, 1, 1000000, PGC_SUSET, 0, nullptr, nullptr, nullptr);
}

void DefineBackgroundSettings() {
  DefineCustomIntVariable("evproc.workers", "Number of delivery workers the launcher keeps.",
                          nullptr, &worker_count, 2, 0, kMaxWorkers, PGC_SIGHUP, 0, nullptr,
                          nullptr, nullptr);
  DefineCustomIntVariable(
      "evproc.tick_interval",
      "Shortest time between two ticks (snapshots that bound delivery windows).", nullptr,
      &tick_interval_ms, 1, 1, 10000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "evproc.tick_widen_above",
      "Rate of committed events (per second) above which ticks space out, 0 for never.",
      "From this rate to twice it, the time between ticks grows from evproc.tick_interval "
      "to 50 ms, so that each batch carries more events under load.",
      &tick_widen_above, 2000, 0, INT_MAX, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("evproc.maintenance_interval",
                          "Time between two runs of evproc.maintain() by the maintenance worker.",
                          nullptr, &maintenance_interval_s, 10, 1, 3600, PGC_SIGHUP, GUC_UNIT_S,
                          nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "evproc.worker_synchronous_commit",
      "Whether delivery workers wait for the WAL flush of each batch's commit.",
      "Off by default: a batch lost in a crash is lost with its handler's effects and is "
      "simply delivered again, so exactly-once effects hold either way.",
      &worker_synchronous_commit, false, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "evproc.partition_interval", "Target time span of one partition of the event log.",
      "Maintenance sizes each new partition of evproc.log to hold about this much time at "
      "the xid rate it observed; retention drops whole partitions.",
      &partition_interval_s, 3600, 1, 30 * 24 * 3600, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr,
      nullptr);
}

// A handler's time is bounded by the server, whatever its subscription says: a tenant
// may set handler_timeout to a day, the superuser caps it (handler_call.hpp,
// handler_watch.hpp).
void DefineHandlerSettings() {
  DefineCustomIntVariable(
      "evproc.max_handler_timeout", "Longest a handler may run, whatever its handler_timeout.",
      "A subscription's handler_timeout above it counts as this much.", &max_handler_timeout_ms,
      10 * 60 * 1000, 1, 24 * 3600 * 1000, PGC_SUSET, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "evproc.handler_grace",
      "How long past its timeout a handler that caught the cancel may go on before its "
      "delivery worker ends itself.",
      "The worker is started again and the handler's events are charged an attempt.",
      &handler_grace_ms, 5000, 100, 3600 * 1000, PGC_SUSET, GUC_UNIT_MS, nullptr, nullptr, nullptr);
}

// PGC_POSTMASTER settings may only be defined while the postmaster preloads the library:
// defined later (a backend loading evproc on its first call, without
// shared_preload_libraries) PostgreSQL ends the session with a FATAL.
void DefinePostmasterSettings() {
  DefineCustomStringVariable("evproc.database", "Database whose evproc the launcher serves.",
                             nullptr, &database_name, "postgres", PGC_POSTMASTER, 0, nullptr,
                             nullptr, nullptr);
}

void DefineSinkSettings() {
  DefineCustomStringVariable(
      "evproc.sink_allowed_destinations",
      "Where sinks may connect: host names, *.domain, addresses and CIDR blocks, comma-separated.",
      "Loopback and link-local addresses are refused unless listed by address or block. "
      "Checked when subscribing and on each address a sink connects to.",
      &sink_allowed_destinations, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  // PGC_POSTMASTER: defined only while the postmaster preloads the library (defined by a
  // backend loading evproc later, PostgreSQL would end the session).
  if (process_shared_preload_libraries_in_progress) {
    DefineCustomIntVariable("evproc.sink_workers", "Sink worker processes (0: sinks are not run).",
                            nullptr, &sink_worker_count, 1, 0, 32, PGC_POSTMASTER, 0, nullptr,
                            nullptr, nullptr);
  }
  DefineCustomIntVariable("evproc.sink_max_in_flight",
                          "Requests a sink worker keeps in flight at most, over all its sinks.",
                          nullptr, &sink_max_in_flight, 64, 1, 4096, PGC_SIGHUP, 0, nullptr,
                          nullptr, nullptr);
}

}  // namespace

void DefineSettings() {
  DefineEnqueueSettings();
  DefineBackgroundSettings();
  DefineHandlerSettings();
  DefineSinkSettings();
  if (process_shared_preload_libraries_in_progress) {
    DefinePostmasterSettings();
    // Reserved only when preloaded: loaded later, evproc.database is left undefined, and
    // reserving the prefix would turn its line in postgresql.conf (a server whose preload
    // was removed) into a WARNING in every session that uses evproc.
    MarkGUCPrefixReserved("evproc");
  }
}

}  // namespace evproc

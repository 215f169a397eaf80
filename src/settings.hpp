// evproc's GUCs, all defined in settings.cpp and documented in docs/operations.md "Settings".
#pragma once

#include "pg_headers.hpp"

namespace evproc {

// Longest key, type and dedup id accepted by enqueue, in bytes. Fixed (not settings) so
// that what one server accepted another one accepts too; documented in docs/api.md "Enqueue".
constexpr int kMaxKeyBytes = 512;
constexpr int kMaxTypeBytes = 128;
constexpr int kMaxDedupIdBytes = 256;
constexpr int kMaxHeadersBytes = 64 * 1024;

// Enqueue.
extern int max_payload_bytes;  // evproc.max_payload_bytes
extern int max_batch_events;   // evproc.max_batch_events

// The background processes. evproc.database is defined only when evproc is preloaded
// (database_name stays nullptr otherwise): no launcher runs then.
extern char *database_name;             // evproc.database
extern int worker_count;                // evproc.workers
extern int tick_interval_ms;            // evproc.tick_interval
extern int tick_widen_above;            // evproc.tick_widen_above (events a second)
extern int maintenance_interval_s;      // evproc.maintenance_interval
extern bool worker_synchronous_commit;  // evproc.worker_synchronous_commit
extern int partition_interval_s;        // evproc.partition_interval (read by SQL maintenance)

// Handlers.
extern int max_handler_timeout_ms;  // evproc.max_handler_timeout: caps handler_timeout
extern int handler_grace_ms;        // evproc.handler_grace: then the worker ends itself

// Sinks (docs/sinks.md).
extern char *sink_allowed_destinations;  // evproc.sink_allowed_destinations
extern int sink_worker_count;            // evproc.sink_workers
extern int sink_max_in_flight;           // evproc.sink_max_in_flight (per worker)

// From _PG_init.
void DefineSettings();

}  // namespace evproc

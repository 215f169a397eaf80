// The sink workers (docs/design.md, docs/sinks.md): "evproc sink N" background processes,
// dynamic, started and stopped by the launcher with its delivery workers
// (sink_supervisor.hpp) and connected to the database it serves, evproc.sink_workers of
// them. Each serves the sink subscriptions
// whose id modulo evproc.sink_workers is its index: leases a batch in a short
// transaction, sends it through the subscription's transport (src/sink/transport.hpp)
// with no transaction open, and acknowledges or fails the lease in another short one.
// Apart from the delivery workers, so a slow endpoint never slows a SQL handler.
#pragma once

#include "pg_headers.hpp"
#include "settings.hpp"

extern "C" {
PGDLLEXPORT void evproc_sink_main(Datum main_arg);
}

namespace evproc {

extern bool in_sink_worker;  // this process is a sink worker

}  // namespace evproc

// The sink workers' supervision (docs/design.md "Processes", docs/sinks.md): the launcher
// keeps evproc.sink_workers sink workers running as dynamic background workers of its
// own, connected by OID to the database it serves, exactly as its delivery workers. So
// they follow its lifecycle: they start once the extension is installed (and of a
// version this library serves), and stop when it is dropped, when the database is
// dropped, renamed or moved (the launcher leaves it), and with the launcher.
#pragma once

#include "pg_headers.hpp"

namespace evproc {

// Starts the sink workers that do not run, restarting one that exited after a pause.
// Returns how soon to look again (ms), or -1 when every one runs.
long SuperviseSinkWorkers();
// Stops every sink worker (SIGTERM; they leave between two steps).
void StopSinkWorkers();

}  // namespace evproc

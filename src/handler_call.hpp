// One call of a subscription's handler, isolated (docs/design.md "Delivering a batch"):
//  * in a subtransaction, so a failure rolls back exactly the handler's effects and the
//    batch can go on with the other events;
//  * as the subscription's owner, in a security-restricted operation (no SET ROLE back
//    to the worker's superuser, no PREPARE, LISTEN, cursor WITH HOLD or first temporary
//    object), with its owner's search_path and every setting it changes restored after
//    the call, its session-level advisory locks released and the sequence caches reset:
//    nothing it does stays with the worker's session;
//  * under the subscription's timeout (statement_timeout's machinery), which it cannot
//    outlive (handler_watch.hpp).
#pragma once

#include "pg_headers.hpp"

extern "C" {
#include "utils/elog.h"
}

namespace evproc {

struct HandlerTarget {
  int32 subscription_id;  // and the unit's partition (-1: a replay): for the watchdog
  int32 partition;
  Oid function;
  bool batch_form;  // f(evproc.event[]) rather than f(evproc.event)
  Oid owner;
  int timeout_ms;
  Oid event_type;           // evproc.event
  const char *search_path;  // the owner's (OwnerSearchPath, delivery_claim.hpp)
};

// The server's search_path (postgresql.conf, ALTER SYSTEM or the command line) as the
// postmaster had it when it loaded evproc: what a session gets where no ALTER ROLE /
// ALTER DATABASE setting applies. The worker's own value cannot serve: its database's
// setting overrides it. Noted by _PG_init while preloading (the backends and workers
// inherit it); a session that loads evproc itself gets PostgreSQL's default. A change
// of the server's search_path reaches handlers at the next server restart.
void NoteServerSearchPath();
const char *ServerSearchPath();

// Calls the handler on events[0..count) (their ids: ids[0..count)). Returns nullptr on
// success, or the error (copied into `error_context`) after rolling the subtransaction
// back. A call that went on past its timeout fails with 57014 even if the handler caught
// the cancel and returned; one still running past its timeout plus a grace period ends
// its worker (handler_watch.hpp). A cancel of the worker (pg_cancel_backend) while the
// handler ran, caught or not, is not returned: it is raised again (pg::PgError), so
// that the whole batch rolls back and no attempt is charged.
ErrorData *CallHandlerIsolated(const HandlerTarget &target, const Datum *events, const int64 *ids,
                               int count, MemoryContext error_context);

}  // namespace evproc

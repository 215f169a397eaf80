// One call of a subscription's handler, isolated (docs/design.md "Delivering a batch"):
//  * in a subtransaction, so a failure rolls back exactly the handler's effects and the
//    batch can go on with the other events;
//  * as the subscription's owner, in a security-restricted operation (no SET ROLE back
//    to the worker's superuser), with GUC changes confined to the call;
//  * under the subscription's timeout (statement_timeout's machinery).
#pragma once

#include "pg_headers.hpp"

extern "C" {
#include "utils/elog.h"
}

namespace evproc {

struct HandlerTarget {
  Oid function;
  bool batch_form;  // f(evproc.event[]) rather than f(evproc.event)
  Oid owner;
  int timeout_ms;
  Oid event_type;           // evproc.event
  const char *search_path;  // the session's: evproc's own statements run with theirs pinned
};

// Calls the handler on events[0..count). Returns nullptr on success, or the error
// (copied into `error_context`) after rolling the subtransaction back. A cancel of the
// worker (pg_cancel_backend) is not returned: it is raised again (pg::PgError), so that
// the whole batch rolls back and no attempt is charged.
ErrorData *CallHandlerIsolated(const HandlerTarget &target, const Datum *events, int count,
                               MemoryContext error_context);

}  // namespace evproc

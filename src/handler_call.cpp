#include "handler_call.hpp"

#include <cstring>

#include "error_boundary.hpp"
#include "handler_watch.hpp"

extern "C" {
#include "access/xact.h"
#include "commands/sequence.h"
#include "storage/lock.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
}

namespace evproc {
namespace {

// PostgreSQL's boot value of search_path.
const char *server_search_path = "\"$user\", public";

struct Call {
  const HandlerTarget *target;
  const Datum *events;
  const int64 *ids;
  int count;
};

// SIGINT: a cancel (pg_cancel_backend, or the timeout's own, which StatementTimeoutHandler
// sends). A handler may catch the error it raises (EXCEPTION WHEN query_canceled); it
// cannot hide that the signal came: each one is counted here, then passed on to the
// handler the process had (StatementCancelHandler).
volatile sig_atomic_t cancel_signals = 0;
pqsigfunc previous_sigint = nullptr;

void CountCancel(SIGNAL_ARGS) {
  cancel_signals = cancel_signals + 1;
  if (previous_sigint != nullptr && previous_sigint != SIG_IGN && previous_sigint != SIG_DFL)
    previous_sigint(postgres_signal_arg);
}

void CountCancels() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  previous_sigint = pqsignal(SIGINT, CountCancel);
}

void InvokeOnce(FmgrInfo *flinfo, Datum argument) {
  LOCAL_FCINFO(fcinfo, 1);
  InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, nullptr, nullptr);
  fcinfo->args[0].value = argument;
  fcinfo->args[0].isnull = false;
  // The result (void, or anything) is ignored; a NULL result is fine.
  (void)FunctionCallInvoke(fcinfo);
  // The next call sees this one's writes.
  CommandCounterIncrement();
}

// PostgreSQL code only (no C++ objects): runs inside the subtransaction. On ERROR the
// subtransaction's abort restores the user, security context and GUC nesting.
void RunAsOwner(const Call &call) {
  const HandlerTarget &target = *call.target;
  Oid saved_user = InvalidOid;
  int saved_security = 0;
  GetUserIdAndSecContext(&saved_user, &saved_security);
  SetUserIdAndSecContext(
      target.owner, saved_security | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
  int guc_level = NewGUCNestLevel();
  // The handler resolves names as a session of its owner would (OwnerSearchPath), not
  // with the path pinned for evproc's statements nor the worker's session's.
  (void)set_config_option("search_path", target.search_path, PGC_USERSET, PGC_S_SESSION,
                          GUC_ACTION_SAVE, true, 0, false);
  FmgrInfo flinfo;
  fmgr_info(target.function, &flinfo);
  CountCancels();
  sig_atomic_t cancels_before = cancel_signals;
  TimestampTz started = GetCurrentTimestamp();
  enable_timeout_after(STATEMENT_TIMEOUT, target.timeout_ms);
  WatchCall(target.subscription_id, target.partition, call.ids, call.count, target.timeout_ms);
  if (target.batch_form) {
    int16 length = 0;
    bool by_value = false;
    char align = 0;
    get_typlenbyvalalign(target.event_type, &length, &by_value, &align);
    ArrayType *array = construct_array(const_cast<Datum *>(call.events), call.count,
                                       target.event_type, length, by_value, align);
    InvokeOnce(&flinfo, PointerGetDatum(array));
  } else {
    for (int i = 0; i < call.count; ++i) {
      WatchEvent(call.ids[i]);
      InvokeOnce(&flinfo, call.events[i]);
    }
  }
  disable_timeout(STATEMENT_TIMEOUT, false);
  UnwatchCall();
  // The handler returned, but it may have caught the cancel that its timeout or an
  // operator raised while it ran: the call fails all the same, inside the
  // subtransaction (its effects roll back), with the error it would have failed with.
  // Past its timeout it is the handler's failure (charged); otherwise it was cancelled,
  // which CallHandlerIsolated raises again for the whole batch.
  bool timed_out = TimestampDifferenceExceeds(started, GetCurrentTimestamp(), target.timeout_ms);
  if (timed_out || cancel_signals != cancels_before) {
    // Raised here: a cancel still pending would fail evproc's own statements next.
    QueryCancelPending = false;
    (void)get_timeout_indicator(STATEMENT_TIMEOUT, true);
  }
  if (timed_out) {
    ereport(
        ERROR,
        (errcode(ERRCODE_QUERY_CANCELED), errmsg("canceling statement due to statement timeout"),
         errdetail("The handler returned after its handler_timeout of %d ms.", target.timeout_ms)));
  }
  if (cancel_signals != cancels_before) {
    ereport(ERROR,
            (errcode(ERRCODE_QUERY_CANCELED), errmsg("canceling statement due to user request")));
  }
  // Not a commit of the settings: every setting the handler changed, also for the
  // session (SET, set_config(..., false)), goes back to what it was before the call.
  AtEOXact_GUC(false, guc_level);
  SetUserIdAndSecContext(saved_user, saved_security);
}

// What a handler could leave in the worker's session for the batches after its own, of
// other subscriptions and owners (issue 12.5), is cleared after each call, before the
// batch commits, as DISCARD ALL would: session-level advisory locks (no one else could
// release them) and the sequence caches (currval(), lastval() of another owner's
// sequences). Settings are restored by RunAsOwner (or the subtransaction's abort). The
// rest of what DISCARD ALL clears a handler cannot make: it runs in a security-restricted
// operation, which refuses SET ROLE / SESSION AUTHORIZATION, PREPARE, LISTEN, cursors
// WITH HOLD and a session's first temporary object (a worker never makes one itself; a
// session calling evproc.deliver_batch() that has temporary objects lends its temporary
// schema).
// evproc.deliver_batch() clears the same in the calling session.
void ClearSessionState() {
  LockReleaseSession(USER_LOCKMETHOD);
  ResetSequenceCaches();
}

// pg_cancel_backend of the worker while the handler ran: the operator's, not the
// handler's failure. The handler timeout raises the same SQLSTATE (57014, statement
// timeout's machinery); the untranslated message tells them apart.
bool CancelledByOperator(const ErrorData *failure) {
  return failure->sqlerrcode == ERRCODE_QUERY_CANCELED && failure->message_id != nullptr &&
         std::strcmp(failure->message_id, "canceling statement due to user request") == 0;
}

}  // namespace

void NoteServerSearchPath() {
  if (!process_shared_preload_libraries_in_progress) return;
  const char *path = GetConfigOption("search_path", false, false);
  if (path != nullptr) server_search_path = MemoryContextStrdup(TopMemoryContext, path);
}

const char *ServerSearchPath() { return server_search_path; }

ErrorData *CallHandlerIsolated(const HandlerTarget &target, const Datum *events, const int64 *ids,
                               int count, MemoryContext error_context) {
  MemoryContext caller_context = CurrentMemoryContext;
  ResourceOwner caller_owner = CurrentResourceOwner;
  Call call{&target, events, ids, count};
  pg::CallPostgres([&] {
    BeginInternalSubTransaction(nullptr);
    // A caught error is copied into the current context: it must outlive the
    // subtransaction, whose own context its abort destroys.
    MemoryContextSwitchTo(error_context);
  });
  ErrorData *failure = nullptr;
  try {
    pg::CallPostgres([&] { RunAsOwner(call); });
  } catch (const pg::PgError &error) {
    failure = error.data();
  }
  pg::CallPostgres([&] {
    if (failure == nullptr) {
      ReleaseCurrentSubTransaction();
    } else {
      disable_timeout(STATEMENT_TIMEOUT, false);
      UnwatchCall();
      RollbackAndReleaseCurrentSubTransaction();
    }
    MemoryContextSwitchTo(caller_context);
    CurrentResourceOwner = caller_owner;
    ClearSessionState();
  });
  // A cancel stops the whole batch: it propagates like an error of evproc's own
  // statements, the batch rolls back and runs again, and no attempt is charged to the
  // events (an operator cancelling a stuck worker must not push them to the dead letters).
  if (failure != nullptr && CancelledByOperator(failure)) {
    pg::CallPostgres([&] { ReThrowError(failure); });
  }
  return failure;
}

}  // namespace evproc

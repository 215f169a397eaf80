#include "handler_call.hpp"

#include <cstring>

#include "error_boundary.hpp"

extern "C" {
#include "access/xact.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/timeout.h"
}

namespace evproc {
namespace {

struct Call {
  const HandlerTarget *target;
  const Datum *events;
  int count;
};

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
  // The handler resolves names as the worker's session would (the server's or the
  // database's search_path), not with the path pinned for evproc's statements.
  (void)set_config_option("search_path", target.search_path, PGC_USERSET, PGC_S_SESSION,
                          GUC_ACTION_SAVE, true, 0, false);
  FmgrInfo flinfo;
  fmgr_info(target.function, &flinfo);
  enable_timeout_after(STATEMENT_TIMEOUT, target.timeout_ms);
  if (target.batch_form) {
    int16 length = 0;
    bool by_value = false;
    char align = 0;
    get_typlenbyvalalign(target.event_type, &length, &by_value, &align);
    ArrayType *array = construct_array(const_cast<Datum *>(call.events), call.count,
                                       target.event_type, length, by_value, align);
    InvokeOnce(&flinfo, PointerGetDatum(array));
  } else {
    for (int i = 0; i < call.count; ++i) InvokeOnce(&flinfo, call.events[i]);
  }
  disable_timeout(STATEMENT_TIMEOUT, false);
  AtEOXact_GUC(true, guc_level);
  SetUserIdAndSecContext(saved_user, saved_security);
}

// pg_cancel_backend of the worker while the handler ran: the operator's, not the
// handler's failure. The handler timeout raises the same SQLSTATE (57014, statement
// timeout's machinery); the untranslated message tells them apart.
bool CancelledByOperator(const ErrorData *failure) {
  return failure->sqlerrcode == ERRCODE_QUERY_CANCELED && failure->message_id != nullptr &&
         std::strcmp(failure->message_id, "canceling statement due to user request") == 0;
}

}  // namespace

ErrorData *CallHandlerIsolated(const HandlerTarget &target, const Datum *events, int count,
                               MemoryContext error_context) {
  MemoryContext caller_context = CurrentMemoryContext;
  ResourceOwner caller_owner = CurrentResourceOwner;
  Call call{&target, events, count};
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
      RollbackAndReleaseCurrentSubTransaction();
    }
    MemoryContextSwitchTo(caller_context);
    CurrentResourceOwner = caller_owner;
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

#include "error_boundary.hpp"

#include <cstring>
#include <new>

namespace evproc::pg {

const char *PgError::what() const noexcept {
  return data_->message != nullptr ? data_->message : "PostgreSQL error";
}

ErrorData *RunCatchingPostgresError(void (*fn)(void *), void *arg) {
  MemoryContext caller_context = CurrentMemoryContext;
  // PG_TRY points PG_exception_stack at this frame's jump buffer and PG_END_TRY puts it
  // back; a C++ exception from fn skips PG_END_TRY, so this restores it on the way out
  // (and error_context_stack, in case fn pushed a callback living in an unwound frame).
  // Set before sigsetjmp and never changed after it: a longjmp back here keeps it valid.
  const PostgresErrorStacks stacks;
  ErrorData *volatile error = nullptr;
  PG_TRY();
  { fn(arg); }
  PG_CATCH();
  {
    // CopyErrorData refuses to run in ErrorContext; the caller's context outlives the
    // C++ unwinding and is reset when the re-thrown error aborts the transaction.
    MemoryContextSwitchTo(caller_context);
    error = CopyErrorData();
    FlushErrorState();
  }
  PG_END_TRY();
  return error;
}

namespace {

// Fixed buffers: the catch blocks below must not allocate, since an allocation failure
// there would leave an exception in flight while PostgreSQL longjmps.
constexpr std::size_t kMessageSize = 1024;

void CopyMessage(char (&buffer)[kMessageSize], const char *text) noexcept {
  std::strncpy(buffer, text != nullptr ? text : "", kMessageSize - 1);
  buffer[kMessageSize - 1] = '\0';
}

}  // namespace

Datum InvokeCpp(Datum (*body)(FunctionCallInfo), FunctionCallInfo fcinfo, const char *name) {
  // PostgreSQL's error stacks as the caller left them: whatever an exception unwound
  // (a PG_TRY of ours, a pushed error context callback) they are put back before the
  // ERROR below runs them. Plain values: a PostgreSQL ERROR longjmps through this frame.
  sigjmp_buf *const saved_exception_stack = PG_exception_stack;
  ErrorContextCallback *const saved_context_stack = error_context_stack;
  ErrorData *pg_error = nullptr;
  int sqlerrcode = 0;
  char message[kMessageSize];
  message[0] = '\0';
  try {
    return body(fcinfo);
  } catch (const PgError &error) {
    pg_error = error.data();
  } catch (const std::bad_alloc &) {
    sqlerrcode = ERRCODE_OUT_OF_MEMORY;
    CopyMessage(message, "out of memory in evproc");
  } catch (const std::exception &error) {
    sqlerrcode = ERRCODE_INTERNAL_ERROR;
    CopyMessage(message, error.what());
  } catch (...) {
    sqlerrcode = ERRCODE_INTERNAL_ERROR;
    CopyMessage(message, "unknown C++ exception in evproc");
  }
  // Every C++ frame of the body is unwound here; longjmp is safe again.
  PG_exception_stack = saved_exception_stack;
  error_context_stack = saved_context_stack;
  if (pg_error != nullptr) ReThrowError(pg_error);
  ereport(ERROR, (errcode(sqlerrcode), errmsg("%s", message),
                  errdetail("A C++ exception ended evproc's %s.", name)));
  pg_unreachable();
}

}  // namespace evproc::pg

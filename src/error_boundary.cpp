#include "error_boundary.hpp"

#include <cstring>
#include <new>

namespace evproc::pg {

const char *PgError::what() const noexcept {
  return data_->message != nullptr ? data_->message : "PostgreSQL error";
}

ErrorData *RunCatchingPostgresError(void (*fn)(void *), void *arg) noexcept {
  MemoryContext caller_context = CurrentMemoryContext;
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

Datum InvokeCpp(Datum (*body)(FunctionCallInfo), FunctionCallInfo fcinfo) {
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
  if (pg_error != nullptr) ReThrowError(pg_error);
  ereport(ERROR, (errcode(sqlerrcode), errmsg("%s", message)));
  pg_unreachable();
}

}  // namespace evproc::pg

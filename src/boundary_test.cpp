// evproc.boundary_test(kind): exercises the error boundary from SQL so the regression
// suite can prove that errors raised deep inside C++ reach the caller with their
// SQLSTATE, that destructors of the unwound frames ran, and that nothing leaks.
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "error_boundary.hpp"

extern "C" {
#include "utils/builtins.h"
#include "utils/memutils.h"
}

namespace {

// Counts live and destroyed instances: if a longjmp skipped a destructor, `live`
// stays above zero after the error.
struct Tracked {
  static inline long live = 0;
  static inline long destroyed = 0;
  std::string payload{"owned heap memory that must be released on unwind"};
  Tracked() { ++live; }
  Tracked(const Tracked &) = delete;
  Tracked &operator=(const Tracked &) = delete;
  ~Tracked() {
    --live;
    ++destroyed;
  }
};

int32 ParseThroughPostgres(const char *text) {
  return evproc::pg::CallPostgres(
      [text] { return DatumGetInt32(DirectFunctionCall1(int4in, CStringGetDatum(text))); });
}

// Shows up in an error's CONTEXT only if error_context_stack still names a callback of a
// frame a C++ exception unwound: the boundary must have put the stack back.
void StaleContext(void * /*arg*/) {
  errcontext("stale error context callback of an unwound frame");
}

// A C++ exception thrown by the C++ code of a CallPostgres lambda, after the lambda ran
// PostgreSQL code under CallPostgres's PG_TRY (and, with push_context, pushed an error
// context callback living in the lambda's frame).
int64 ThrowInsideCallPostgres(bool push_context) {
  return evproc::pg::CallPostgres([push_context]() -> int64 {
    ErrorContextCallback callback{error_context_stack, StaleContext, nullptr};
    if (push_context) error_context_stack = &callback;
    const int32 parsed = DatumGetInt32(DirectFunctionCall1(int4in, CStringGetDatum("7")));
    if (parsed == 7) throw std::runtime_error("C++ exception inside a CallPostgres lambda");
    return parsed;
  });
}

// Recurses a few frames, each owning a destructor, before reaching the failing call.
int64 Descend(int depth, const std::string &kind) {
  Tracked guard;
  std::vector<int> scratch(64, depth);
  if (depth > 0) return Descend(depth - 1, kind) + scratch.front();
  if (kind == "pg_error") return ParseThroughPostgres("not a number");
  if (kind == "cpp_error") throw std::runtime_error("C++ failure deep inside evproc");
  if (kind == "bad_alloc") throw std::bad_alloc();
  if (kind == "throw_in_call") return ThrowInsideCallPostgres(false);
  if (kind == "throw_in_call_context") return ThrowInsideCallPostgres(true);
  if (kind == "ok") return ParseThroughPostgres("42");
  throw std::logic_error("unreachable boundary test kind");
}

}  // namespace

EVPROC_CPP_FUNCTION(evproc_boundary_test) {
  const char *kind_text = text_to_cstring(PG_GETARG_TEXT_PP(0));
  const std::string kind(kind_text);
  if (kind == "live") return Int64GetDatum(Tracked::live);
  if (kind == "destroyed") return Int64GetDatum(Tracked::destroyed);
  if (kind == "top_memory") {
    return Int64GetDatum(static_cast<int64>(MemoryContextMemAllocated(TopMemoryContext, true)));
  }
  if (kind == "pg_error" || kind == "cpp_error" || kind == "bad_alloc" || kind == "ok" ||
      kind == "throw_in_call" || kind == "throw_in_call_context") {
    return Int64GetDatum(Descend(5, kind));
  }
  evproc::pg::CallPostgres([kind_text] {
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("unknown boundary test \"%s\"", kind_text)));
  });
  return Int64GetDatum(0);
}

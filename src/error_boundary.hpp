// The C++/PostgreSQL error boundary (docs/design.md "Design notes").
//
// PostgreSQL reports errors with longjmp, which skips C++ destructors, and C++
// exceptions must never unwind through PostgreSQL's C frames. Two guards keep the
// worlds apart:
//
//  * CallPostgres(fn) runs PostgreSQL code from C++ under its own sigsetjmp. An ERROR
//    raised inside becomes a PgError exception, so the C++ frames above it unwind
//    normally and their destructors run.
//  * EVPROC_CPP_FUNCTION(name) defines an `extern "C"` SQL-callable entry point whose
//    body is C++. Any exception leaving the body is turned into ereport(ERROR) only
//    after every C++ frame is gone; a PgError is re-thrown with its original SQLSTATE,
//    message, detail, hint and context. Every SQL-callable function of evproc is
//    defined with it, also those whose bodies are plain PostgreSQL code: no C++
//    exception can then reach PostgreSQL's C frames, whatever a body calls.
//
// A C++ exception may leave a CallPostgres lambda (the lambda's own C++ code threw): it
// propagates like any other exception. PostgreSQL's error state is then put back as it
// was (PG_exception_stack, which would otherwise still point at the unwound frame's
// jump buffer, and error_context_stack, which may name a callback of an unwound frame),
// by CallPostgres itself and again by the entry point's guard, as pg_duckdb does.
//
// Contract: after a PgError, C++ code must not call PostgreSQL again before the error
// reaches the entry point — the (sub)transaction that failed is still in error state and
// only the re-thrown ERROR aborts it properly.
#pragma once

#include <exception>
#include <type_traits>
#include <utility>

#include "pg_headers.hpp"

extern "C" {
#include "utils/elog.h"
}

namespace evproc::pg {

// A PostgreSQL error caught in C++. Holds a palloc'd ErrorData copy in the memory
// context that was current at the call, which lives until the error is re-thrown.
class PgError : public std::exception {
 public:
  explicit PgError(ErrorData *data) noexcept : data_(data) {}
  [[nodiscard]] const char *what() const noexcept override;
  [[nodiscard]] int sqlerrcode() const noexcept { return data_->sqlerrcode; }
  [[nodiscard]] ErrorData *data() const noexcept { return data_; }

 private:
  ErrorData *data_;
};

// Saves PostgreSQL's error handler and error context stacks and puts them back when it
// goes out of scope, also when a C++ exception unwinds the scope.
class PostgresErrorStacks {
 public:
  PostgresErrorStacks() noexcept
      : exception_stack_(PG_exception_stack), context_stack_(error_context_stack) {}
  PostgresErrorStacks(const PostgresErrorStacks &) = delete;
  PostgresErrorStacks &operator=(const PostgresErrorStacks &) = delete;
  ~PostgresErrorStacks() { Restore(); }
  void Restore() const noexcept {
    PG_exception_stack = exception_stack_;
    error_context_stack = context_stack_;
  }

 private:
  sigjmp_buf *exception_stack_;
  ErrorContextCallback *context_stack_;
};

// Runs fn(arg) with its own error handler; returns the copied ErrorData on ERROR, or
// nullptr. fn must own no C++ objects with destructors when it calls PostgreSQL; a C++
// exception fn throws propagates, with PostgreSQL's error stacks restored.
ErrorData *RunCatchingPostgresError(void (*fn)(void *), void *arg);

template <typename Fn>
auto CallPostgres(Fn &&fn) -> std::invoke_result_t<Fn &> {
  using Result = std::invoke_result_t<Fn &>;
  static_assert(std::is_void_v<Result> || std::is_trivially_copyable_v<Result>,
                "only trivially copyable values may cross a longjmp-guarded call");
  if constexpr (std::is_void_v<Result>) {
    auto trampoline = [](void *f) { (*static_cast<std::remove_reference_t<Fn> *>(f))(); };
    if (ErrorData *error = RunCatchingPostgresError(trampoline, &fn)) throw PgError(error);
  } else {
    struct Call {
      std::remove_reference_t<Fn> *fn;
      Result result;
    } call{&fn, Result{}};
    auto trampoline = [](void *c) {
      auto *self = static_cast<Call *>(c);
      self->result = (*self->fn)();
    };
    if (ErrorData *error = RunCatchingPostgresError(trampoline, &call)) throw PgError(error);
    return call.result;
  }
}

// Runs a C++ SQL function body; converts any escaping exception into ereport(ERROR)
// (a C++ exception other than PgError: XX000, or 53200 for std::bad_alloc, its what()
// as the message and the function's name in the detail).
Datum InvokeCpp(Datum (*body)(FunctionCallInfo), FunctionCallInfo fcinfo, const char *name);

}  // namespace evproc::pg

// Defines the C entry point `name` for a C++ body `name##_cpp(FunctionCallInfo)`.
#define EVPROC_CPP_FUNCTION(name)                                                                \
  static Datum name##_cpp(FunctionCallInfo fcinfo);                                              \
  extern "C" {                                                                                   \
  PG_FUNCTION_INFO_V1(name);                                                                     \
  Datum name(PG_FUNCTION_ARGS) { return evproc::pg::InvokeCpp(name##_cpp, fcinfo, #name "()"); } \
  }                                                                                              \
  static Datum name##_cpp(FunctionCallInfo fcinfo)

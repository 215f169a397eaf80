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
//    message, detail, hint and context.
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

// Runs fn(arg) with its own error handler; returns the copied ErrorData on ERROR, or
// nullptr. fn must own no C++ objects with destructors.
ErrorData *RunCatchingPostgresError(void (*fn)(void *), void *arg) noexcept;

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

// Runs a C++ SQL function body; converts any escaping exception into ereport(ERROR).
Datum InvokeCpp(Datum (*body)(FunctionCallInfo), FunctionCallInfo fcinfo);

}  // namespace evproc::pg

// Defines the C entry point `name` for a C++ body `name##_cpp(FunctionCallInfo)`.
#define EVPROC_CPP_FUNCTION(name)                                                    \
  static Datum name##_cpp(FunctionCallInfo fcinfo);                                  \
  extern "C" {                                                                       \
  PG_FUNCTION_INFO_V1(name);                                                         \
  Datum name(PG_FUNCTION_ARGS) { return evproc::pg::InvokeCpp(name##_cpp, fcinfo); } \
  }                                                                                  \
  static Datum name##_cpp(FunctionCallInfo fcinfo)

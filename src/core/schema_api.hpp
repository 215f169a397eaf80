// C-style, exception-free facade over JsonSchema for the PostgreSQL side.
//
// PostgreSQL error handling is longjmp based: a C++ exception crossing into
// backend code (or a longjmp crossing C++ frames) is undefined behaviour, so
// nothing may throw across this boundary. This header intentionally includes
// neither PostgreSQL nor nlohmann headers, keeping both worlds apart.
#pragma once

#include <cstddef>

namespace evproc::core {

struct CompiledSchema;  // opaque

// Parses schema JSON text and compiles it. On failure returns nullptr and
// writes a NUL-terminated message (truncated to errlen) into err.
// The result must be released with SchemaFree; it is allocated with operator
// new, not palloc, so it is not tied to any memory context.
CompiledSchema* SchemaCompile(const char* text, std::size_t len, char* err,
                              std::size_t errlen) noexcept;

// Parses doc JSON text and validates it. Returns true if valid; else false
// with a NUL-terminated message (truncated to errlen) in err.
bool SchemaValidate(const CompiledSchema* schema, const char* doc, std::size_t len, char* err,
                    std::size_t errlen) noexcept;

// Accepts nullptr.
void SchemaFree(CompiledSchema* schema) noexcept;

}  // namespace evproc::core

#include "schema_api.hpp"

#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "json_schema.hpp"

namespace evproc::core {

struct CompiledSchema {
  explicit CompiledSchema(JsonSchema s) : schema(std::move(s)) {}
  JsonSchema schema;
};

namespace {

// Truncation backs off to a UTF-8 character boundary so that the message
// handed to ereport is always valid in a UTF-8 database.
void WriteError(char* err, std::size_t errlen, std::string_view msg) noexcept {
  if (err == nullptr || errlen == 0) {
    return;
  }
  std::size_t n = msg.size();
  if (n > errlen - 1) {
    n = errlen - 1;
    while (n > 0 && (static_cast<unsigned char>(msg[n]) & 0xC0U) == 0x80U) {
      --n;
    }
  }
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// nlohmann messages start with "[json.exception.parse_error.101] "; that tag
// means nothing to SQL users.
std::string_view StripExceptionTag(std::string_view what) noexcept {
  if (!what.empty() && what.front() == '[') {
    const auto end = what.find("] ");
    if (end != std::string_view::npos) {
      return what.substr(end + 2);
    }
  }
  return what;
}

// Returns an empty string on success, otherwise the parse error.
std::string ParseText(const char* text, std::size_t len, nlohmann::json& out) {
  if (text == nullptr) {
    text = "";
    len = 0;
  }
  // nlohmann's lexer treats NUL as end of input, so "{}\0garbage" would be
  // accepted; reject it explicitly instead of validating a prefix.
  if (std::memchr(text, '\0', len) != nullptr) {
    return "embedded NUL byte";
  }
  try {
    out = nlohmann::json::parse(text, text + len);
  } catch (const nlohmann::json::parse_error& e) {
    return std::string(StripExceptionTag(e.what()));
  }
  return {};
}

}  // namespace

CompiledSchema* SchemaCompile(const char* text, std::size_t len, char* err,
                              std::size_t errlen) noexcept {
  try {
    nlohmann::json parsed;
    if (const std::string perr = ParseText(text, len, parsed); !perr.empty()) {
      WriteError(err, errlen, "invalid schema JSON: " + perr);
      return nullptr;
    }
    auto* result = new CompiledSchema(JsonSchema::Compile(parsed));
    WriteError(err, errlen, "");
    return result;
  } catch (const std::bad_alloc&) {
    WriteError(err, errlen, "out of memory");
  } catch (const std::exception& e) {
    WriteError(err, errlen, e.what());
  } catch (...) {
    WriteError(err, errlen, "unknown error while compiling schema");
  }
  return nullptr;
}

bool SchemaValidate(const CompiledSchema* schema, const char* doc, std::size_t len, char* err,
                    std::size_t errlen) noexcept {
  try {
    if (schema == nullptr) {
      WriteError(err, errlen, "no schema");
      return false;
    }
    nlohmann::json parsed;
    if (const std::string perr = ParseText(doc, len, parsed); !perr.empty()) {
      WriteError(err, errlen, "invalid JSON: " + perr);
      return false;
    }
    const std::string msg = schema->schema.Validate(parsed);
    WriteError(err, errlen, msg);
    return msg.empty();
  } catch (const std::bad_alloc&) {
    WriteError(err, errlen, "out of memory");
  } catch (const std::exception& e) {
    WriteError(err, errlen, StripExceptionTag(e.what()));
  } catch (...) {
    WriteError(err, errlen, "unknown error while validating document");
  }
  return false;
}

void SchemaFree(CompiledSchema* schema) noexcept { delete schema; }

}  // namespace evproc::core

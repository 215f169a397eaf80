#include "schema_api.hpp"

#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
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

// Length of the well-formed UTF-8 character at s[i] (strict: no overlongs, surrogates or
// code points past U+10FFFF), or 0 if the bytes there are not one.
std::size_t Utf8CharLength(std::string_view s, std::size_t i) noexcept {
  const auto lead = static_cast<unsigned char>(s[i]);
  if (lead < 0x80U) {
    return 1;
  }
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if ((lead & 0xE0U) == 0xC0U) {
    n = 2;
    cp = lead & 0x1FU;
  } else if ((lead & 0xF0U) == 0xE0U) {
    n = 3;
    cp = lead & 0x0FU;
  } else if ((lead & 0xF8U) == 0xF0U) {
    n = 4;
    cp = lead & 0x07U;
  } else {
    return 0;
  }
  if (s.size() - i < n) {
    return 0;
  }
  for (std::size_t k = 1; k < n; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xC0U) != 0x80U) {
      return 0;
    }
    cp = (cp << 6U) | (c & 0x3FU);
  }
  constexpr std::uint32_t kSmallest[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kSmallest[n] || cp > 0x10FFFFU || (cp >= 0xD800U && cp <= 0xDFFFU)) {
    return 0;
  }
  return n;
}

// The message handed to ereport must be valid UTF-8 in a UTF-8 database, whatever the
// input: nlohmann's parse errors quote the bytes last read, which may be invalid UTF-8 or
// the first bytes of a character cut short. Invalid bytes become U+FFFD (as Dump does for
// user data), and truncation to errlen stops before a character that does not fit.
void WriteError(char* err, std::size_t errlen, std::string_view msg) noexcept {
  if (err == nullptr || errlen == 0) {
    return;
  }
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::size_t out = 0;
  for (std::size_t i = 0; i < msg.size();) {
    const std::size_t n = Utf8CharLength(msg, i);
    const std::string_view piece = n == 0 ? kReplacement : msg.substr(i, n);
    if (out + piece.size() > errlen - 1) {
      break;
    }
    std::memcpy(err + out, piece.data(), piece.size());
    out += piece.size();
    i += n == 0 ? 1 : n;
  }
  err[out] = '\0';
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

// Returns an empty string on success, otherwise the whole message: what is "JSON" or
// "schema JSON". Numbers are kept exact (ParseExact): any JSON number is accepted, also
// beyond double range (jsonb's numerics reach 1e131071).
std::string ParseText(const char* text, std::size_t len, std::optional<ExactJson>& out,
                      std::string_view what) {
  if (text == nullptr) {
    text = "";
    len = 0;
  }
  // nlohmann's lexer treats NUL as end of input, so "{}\0garbage" would be
  // accepted; reject it explicitly instead of validating a prefix.
  if (std::memchr(text, '\0', len) != nullptr) {
    return "invalid " + std::string(what) + ": embedded NUL byte";
  }
  try {
    out.emplace(ParseExact(std::string_view(text, len)));
  } catch (const nlohmann::json::parse_error& e) {
    return "invalid " + std::string(what) + ": " + std::string(StripExceptionTag(e.what()));
  }
  return {};
}

}  // namespace

CompiledSchema* SchemaCompile(const char* text, std::size_t len, char* err,
                              std::size_t errlen) noexcept {
  try {
    std::optional<ExactJson> parsed;
    if (const std::string perr = ParseText(text, len, parsed, "schema JSON"); !perr.empty()) {
      WriteError(err, errlen, perr);
      return nullptr;
    }
    auto* result = new CompiledSchema(JsonSchema::CompileExact(*parsed));
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
    std::optional<ExactJson> parsed;
    if (const std::string perr = ParseText(doc, len, parsed, "JSON"); !perr.empty()) {
      WriteError(err, errlen, perr);
      return false;
    }
    const std::string msg = schema->schema.ValidateExact(*parsed);
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

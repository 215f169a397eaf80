// libFuzzer target for the schema validator (src/core, no PostgreSQL): `make fuzz`.
//
// An input is "<schema text>\n--\n<document text>"; without the separator the whole
// input is the schema and is also validated against itself, so a lone schema still
// exercises the validator. Both parts go through the same noexcept facade that the
// extension calls (SchemaCompile / SchemaValidate), so whatever the fuzzer breaks is
// reachable from SQL given the same text.
//
// Beyond "no crash, no leak, no undefined behaviour" (the sanitizers), it checks what
// the extension relies on: the error buffer is always NUL-terminated inside its length,
// success and an empty message go together, a message is valid UTF-8 whatever the input
// (PostgreSQL hands it to ereport in a UTF-8 database), truncation to a small buffer
// keeps a prefix of the full message, and validation is deterministic.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "core/schema_api.hpp"

namespace {

using evproc::core::CompiledSchema;
using evproc::core::SchemaCompile;
using evproc::core::SchemaFree;
using evproc::core::SchemaValidate;

constexpr std::string_view kSeparator = "\n--\n";
constexpr std::size_t kErrLen = 512;  // what enqueue.cpp and topic_admin.cpp pass

[[noreturn]] void Die(const char* what, std::string_view detail) {
  std::fprintf(stderr, "schema_fuzzer: %s: %.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

// Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF), as PostgreSQL's
// pg_verifymbstr checks it.
bool ValidUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xE0U) == 0xC0U) {
      n = 1;
      cp = c & 0x1FU;
    } else if ((c & 0xF0U) == 0xE0U) {
      n = 2;
      cp = c & 0x0FU;
    } else if ((c & 0xF8U) == 0xF0U) {
      n = 3;
      cp = c & 0x07U;
    } else {
      return false;
    }
    if (i + n >= s.size()) {
      return false;
    }
    for (std::size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0U) != 0x80U) {
        return false;
      }
      cp = (cp << 6U) | (cc & 0x3FU);
    }
    static constexpr std::uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

// The facade's contract for one message buffer: terminated inside errlen, valid UTF-8.
std::string_view CheckMessage(const char* buf, std::size_t errlen) {
  const void* nul = std::memchr(buf, '\0', errlen);
  if (nul == nullptr) {
    Die("error message not NUL-terminated", std::string_view(buf, errlen));
  }
  const std::string_view msg(buf, static_cast<const char*>(nul) - buf);
  if (!ValidUtf8(msg)) {
    Die("error message is not valid UTF-8", msg);
  }
  return msg;
}

// Compiling with a tiny buffer must fail or succeed alike and give a prefix (cut at a
// character boundary) of the full message.
void CheckTruncation(std::string_view full, const char* small, std::size_t small_len) {
  const std::string_view cut = CheckMessage(small, small_len);
  if (cut.size() > full.size() || full.substr(0, cut.size()) != cut) {
    Die("truncated message is not a prefix of the full one", cut);
  }
  // A character is at most 4 bytes: backing off to its start drops at most 3.
  const std::size_t room = small_len - 1;
  const bool too_short = full.size() <= room ? cut.size() != full.size() : cut.size() + 3 < room;
  if (too_short) {
    Die("message truncated more than a character boundary needs", cut);
  }
}

void ValidateChecked(const CompiledSchema* schema, std::string_view doc, std::size_t small_len) {
  char err[kErrLen];
  std::memset(err, 'x', sizeof(err));
  const bool ok = SchemaValidate(schema, doc.data(), doc.size(), err, sizeof(err));
  const std::string_view msg = CheckMessage(err, sizeof(err));
  if (ok != msg.empty()) {
    Die(ok ? "valid document with a message" : "invalid document without a message", msg);
  }
  char again[kErrLen];
  std::memset(again, 'y', sizeof(again));
  if (SchemaValidate(schema, doc.data(), doc.size(), again, sizeof(again)) != ok ||
      msg != std::string_view(again)) {
    Die("validation is not deterministic", msg);
  }
  char small[32];
  std::memset(small, 'z', sizeof(small));
  if (SchemaValidate(schema, doc.data(), doc.size(), small, small_len) != ok) {
    Die("validation result depends on the message buffer", msg);
  }
  CheckTruncation(msg, small, small_len);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t sep = input.find(kSeparator);
  const std::string_view schema_text = input.substr(0, sep);
  const std::string_view doc_text =
      sep == std::string_view::npos ? input : input.substr(sep + kSeparator.size());
  // 1..31 bytes: exercises truncation, including inside multi-byte characters.
  const std::size_t small_len = 1 + size % 31;

  char err[kErrLen];
  std::memset(err, 'x', sizeof(err));
  CompiledSchema* schema = SchemaCompile(schema_text.data(), schema_text.size(), err, sizeof(err));
  const std::string_view msg = CheckMessage(err, sizeof(err));
  if ((schema == nullptr) == msg.empty()) {
    Die(schema == nullptr ? "compile failed without a message" : "compiled with a message", msg);
  }
  char small[32];
  std::memset(small, 'z', sizeof(small));
  CompiledSchema* schema2 = SchemaCompile(schema_text.data(), schema_text.size(), small, small_len);
  if ((schema2 == nullptr) != (schema == nullptr)) {
    Die("compile result depends on the message buffer", msg);
  }
  CheckTruncation(msg, small, small_len);
  SchemaFree(schema2);

  if (schema == nullptr) {
    // The facade's own guard: validating against no schema is an error, not a crash.
    char none[kErrLen];
    if (SchemaValidate(nullptr, doc_text.data(), doc_text.size(), none, sizeof(none))) {
      Die("validated against a null schema", doc_text);
    }
    return 0;
  }
  ValidateChecked(schema, doc_text, small_len);
  SchemaFree(schema);
  return 0;
}

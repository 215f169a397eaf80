// A deliberately small subset of JSON Schema, used to validate event payloads.
//
// Supported keywords: type, required, properties, items, enum, minimum,
// maximum, minLength, maxLength, additionalProperties (boolean only), and the
// annotations $schema, $id, title, description, $comment, default, examples.
// Any other keyword is rejected at compile time instead of being ignored, so a
// schema never silently validates less than its author believes it does.
#pragma once

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace evproc::core {

// Maximum nesting of subschemas and of document containers. Bounded so that
// hostile input yields an error instead of exhausting the (backend) stack.
inline constexpr std::size_t kMaxSchemaDepth = 64;
inline constexpr std::size_t kMaxDocumentDepth = 64;
// Raw JSON nesting allowed in schema text (each subschema level costs two JSON
// levels: "properties" -> name -> subschema; enum/default values add more).
inline constexpr std::size_t kMaxSchemaJsonDepth = 4 * kMaxSchemaDepth;

class SchemaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// JSON text parsed so that every number stays exact: a double cannot hold 1e400 (the
// parser refuses it) nor tell 1e-400 from 0, and JSON Schema compares numbers by value.
// Each number of `value` is replaced by its index into `numbers`, which keeps the
// number's text as written (jsonb prints numerics in full: 1e400 as 401 digits).
struct ExactJson {
  explicit ExactJson(std::string_view source) : text(source) {}

  nlohmann::json value;
  std::string text;                                          // what was parsed
  std::vector<std::pair<std::size_t, std::size_t>> numbers;  // offset and length in text

  [[nodiscard]] std::string_view Number(std::size_t index) const {
    return std::string_view(text).substr(numbers[index].first, numbers[index].second);
  }
};

// Parses JSON text into an ExactJson. Accepts exactly the texts nlohmann::json::parse
// accepts, plus numbers beyond double range; throws what json::parse throws otherwise,
// with the same message for the same text.
ExactJson ParseExact(std::string_view text);

namespace detail {
struct SchemaNode;
}  // namespace detail

class JsonSchema {
 public:
  // Throws SchemaError naming the offending schema path. Numbers compare exactly, by
  // their decimal value (integer-ness, minimum/maximum, enum equality).
  static JsonSchema CompileExact(const ExactJson& schema);
  // For a schema built in memory: its numbers are taken as nlohmann prints them.
  static JsonSchema Compile(const nlohmann::json& schema);

  // Returns "" if doc is valid, otherwise a message describing the first
  // violation found, prefixed by its document path (e.g. "$.items[2]: ...").
  [[nodiscard]] std::string ValidateExact(const ExactJson& doc) const;
  [[nodiscard]] std::string Validate(const nlohmann::json& doc) const;

 private:
  JsonSchema(std::shared_ptr<const detail::SchemaNode> root,
             std::shared_ptr<const ExactJson> source);

  // Shared so that copies are cheap; the tree is immutable after Compile. source_ is
  // the parsed schema, whose numbers the tree's enum values refer to by index.
  std::shared_ptr<const detail::SchemaNode> root_;
  std::shared_ptr<const ExactJson> source_;
};

}  // namespace evproc::core

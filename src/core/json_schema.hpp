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

namespace detail {
struct SchemaNode;
}  // namespace detail

class JsonSchema {
 public:
  // Throws SchemaError naming the offending schema path.
  static JsonSchema Compile(const nlohmann::json& schema);

  // Returns "" if doc is valid, otherwise a message describing the first
  // violation found, prefixed by its document path (e.g. "$.items[2]: ...").
  [[nodiscard]] std::string Validate(const nlohmann::json& doc) const;

 private:
  explicit JsonSchema(std::shared_ptr<const detail::SchemaNode> root);

  // Shared so that copies are cheap; the tree is immutable after Compile.
  std::shared_ptr<const detail::SchemaNode> root_;
};

}  // namespace evproc::core

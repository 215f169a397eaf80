#include "json_schema.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace evproc::core {

using nlohmann::json;

namespace {

enum TypeBit : std::uint8_t {
  kObject = 1U << 0U,
  kArray = 1U << 1U,
  kString = 1U << 2U,
  kNumber = 1U << 3U,
  kInteger = 1U << 4U,
  kBoolean = 1U << 5U,
  kNull = 1U << 6U,
};

struct TypeName {
  std::string_view name;
  std::uint8_t bit;
};

constexpr std::array<TypeName, 7> kTypeNames{{
    {"object", kObject},
    {"array", kArray},
    {"string", kString},
    {"number", kNumber},
    {"integer", kInteger},
    {"boolean", kBoolean},
    {"null", kNull},
}};

// Error text may embed user data; never let an invalid UTF-8 byte turn an
// error report into an exception.
std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool IsIdentifierLike(std::string_view key) {
  if (key.empty()) {
    return false;
  }
  for (const char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

// Keys that would make a dotted path ambiguous ("a.b", "", "x y") are written
// in bracket form with JSON quoting so every path is unambiguous.
void AppendKey(std::string& path, std::string_view key) {
  if (IsIdentifierLike(key)) {
    path += '.';
    path += key;
  } else {
    path += '[';
    path += Dump(json(std::string(key)));
    path += ']';
  }
}

void AppendIndex(std::string& path, std::size_t index) {
  path += '[';
  path += std::to_string(index);
  path += ']';
}

std::string_view ValueTypeName(const json& value) {
  switch (value.type()) {
    case json::value_t::object:
      return "object";
    case json::value_t::array:
      return "array";
    case json::value_t::string:
      return "string";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::null:
      return "null";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return "number";
    default:
      return "unsupported value";
  }
}

bool IsIntegral(const json& value) {
  if (value.is_number_integer()) {
    return true;
  }
  if (value.is_number_float()) {
    const double d = value.get<double>();
    return std::isfinite(d) && std::floor(d) == d;
  }
  return false;
}

bool MatchesType(const json& value, std::uint8_t mask) {
  switch (value.type()) {
    case json::value_t::object:
      return (mask & kObject) != 0;
    case json::value_t::array:
      return (mask & kArray) != 0;
    case json::value_t::string:
      return (mask & kString) != 0;
    case json::value_t::boolean:
      return (mask & kBoolean) != 0;
    case json::value_t::null:
      return (mask & kNull) != 0;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return (mask & kNumber) != 0 || ((mask & kInteger) != 0 && IsIntegral(value));
    default:
      return false;
  }
}

std::string DescribeMask(std::uint8_t mask) {
  std::string out;
  for (const auto& t : kTypeNames) {
    if ((mask & t.bit) != 0) {
      if (!out.empty()) {
        out += " or ";
      }
      out += t.name;
    }
  }
  return out;
}

// long double has a 64-bit mantissa on the platforms we build for, so int64,
// uint64 and double all convert exactly and bounds compare without rounding.
long double AsLongDouble(const json& value) {
  if (value.is_number_unsigned()) {
    return static_cast<long double>(value.get<std::uint64_t>());
  }
  if (value.is_number_integer()) {
    return static_cast<long double>(value.get<std::int64_t>());
  }
  return static_cast<long double>(value.get<double>());
}

// Counts code points, not bytes: users think of "maxLength 10" in characters.
// Input from the parser is valid UTF-8; counting non-continuation bytes keeps
// the result well defined even if it is not.
std::size_t Utf8Length(const std::string& s) {
  std::size_t n = 0;
  for (const char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0U) != 0x80U) {
      ++n;
    }
  }
  return n;
}

// Iterative so that checking depth cannot itself overflow the stack.
bool ExceedsDepth(const json& root, std::size_t limit) {
  std::vector<std::pair<const json*, std::size_t>> stack;
  stack.emplace_back(&root, 1);
  while (!stack.empty()) {
    const auto [node, depth] = stack.back();
    stack.pop_back();
    if (!node->is_structured()) {
      continue;
    }
    if (depth > limit) {
      return true;
    }
    for (const auto& child : *node) {
      if (child.is_structured()) {
        stack.emplace_back(&child, depth + 1);
      }
    }
  }
  return false;
}

}  // namespace

namespace detail {

struct SchemaNode {
  std::uint8_t type_mask = 0;  // 0 means "any type"
  std::vector<std::string> required;
  std::vector<std::pair<std::string, std::unique_ptr<SchemaNode>>> properties;
  std::unique_ptr<SchemaNode> items;
  std::optional<std::vector<json>> enum_values;
  std::optional<json> minimum;
  std::optional<json> maximum;
  std::optional<std::uint64_t> min_length;
  std::optional<std::uint64_t> max_length;
  bool additional_properties = true;

  // properties is sorted by name (CompileNode): additionalProperties false looks up
  // every key of a document, and a linear scan made that quadratic (80,000 properties
  // and a 1 MB payload took seconds per enqueue).
  [[nodiscard]] const SchemaNode* FindProperty(const std::string& name) const {
    const auto it = std::lower_bound(
        properties.begin(), properties.end(), name,
        [](const auto& entry, const std::string& key) { return entry.first < key; });
    return it != properties.end() && it->first == name ? it->second.get() : nullptr;
  }
};

}  // namespace detail

namespace {

using detail::SchemaNode;

[[noreturn]] void Fail(const std::string& path, std::string_view what) {
  std::string msg = "schema ";
  msg += path;
  msg += ": ";
  msg += what;
  throw SchemaError(msg);
}

std::uint8_t CompileTypeName(const json& value, const std::string& path) {
  if (!value.is_string()) {
    Fail(path, "must be a type name string");
  }
  const auto& name = value.get_ref<const std::string&>();
  for (const auto& t : kTypeNames) {
    if (t.name == name) {
      return t.bit;
    }
  }
  Fail(path, "unknown type " + Dump(value));
}

std::uint64_t CompileLength(const json& value, const std::string& path) {
  if (value.is_number_unsigned()) {
    return value.get<std::uint64_t>();
  }
  // A float such as 2.0 is accepted for consistency with the "integer" type.
  // 2^53 caps it to the range where a double still denotes an exact integer.
  if (value.is_number_float() && IsIntegral(value) && value.get<double>() >= 0.0 &&
      value.get<double>() <= 9007199254740992.0) {
    return static_cast<std::uint64_t>(value.get<double>());
  }
  Fail(path, "must be a non-negative integer");
}

std::unique_ptr<SchemaNode> CompileNode(const json& schema, std::string& path, std::size_t depth) {
  if (depth > kMaxSchemaDepth) {
    Fail(path, "subschemas nested deeper than " + std::to_string(kMaxSchemaDepth) + " levels");
  }
  if (!schema.is_object()) {
    Fail(path, "must be an object");
  }
  auto node = std::make_unique<SchemaNode>();
  const std::size_t base = path.size();
  // Restores the path after each keyword so siblings report correct locations.
  auto enter = [&](std::string_view key) {
    path.resize(base);
    AppendKey(path, key);
  };

  for (const auto& [key, value] : schema.items()) {
    enter(key);
    if (key == "type") {
      if (value.is_array()) {
        if (value.empty()) {
          Fail(path, "must not be an empty array");
        }
        for (std::size_t i = 0; i < value.size(); ++i) {
          const std::size_t len = path.size();
          AppendIndex(path, i);
          node->type_mask |= CompileTypeName(value[i], path);
          path.resize(len);
        }
      } else if (value.is_string()) {
        node->type_mask = CompileTypeName(value, path);
      } else {
        Fail(path, "must be a string or an array of strings");
      }
    } else if (key == "required") {
      if (!value.is_array()) {
        Fail(path, "must be an array of strings");
      }
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (!value[i].is_string()) {
          AppendIndex(path, i);
          Fail(path, "must be a string");
        }
        node->required.push_back(value[i].get<std::string>());
      }
    } else if (key == "properties") {
      if (!value.is_object()) {
        Fail(path, "must be an object");
      }
      const std::size_t len = path.size();
      for (const auto& [name, sub] : value.items()) {
        AppendKey(path, name);
        node->properties.emplace_back(name, CompileNode(sub, path, depth + 1));
        path.resize(len);
      }
      // nlohmann's objects iterate in key order already; sorting keeps FindProperty's
      // binary search right whatever the object type.
      std::sort(node->properties.begin(), node->properties.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
    } else if (key == "items") {
      if (!value.is_object()) {
        Fail(path, "must be an object (tuple form is not supported)");
      }
      node->items = CompileNode(value, path, depth + 1);
    } else if (key == "enum") {
      if (!value.is_array() || value.empty()) {
        Fail(path, "must be a non-empty array");
      }
      node->enum_values.emplace(value.begin(), value.end());
    } else if (key == "minimum" || key == "maximum") {
      if (!value.is_number()) {
        Fail(path, "must be a number");
      }
      (key == "minimum" ? node->minimum : node->maximum) = value;
    } else if (key == "minLength") {
      node->min_length = CompileLength(value, path);
    } else if (key == "maxLength") {
      node->max_length = CompileLength(value, path);
    } else if (key == "additionalProperties") {
      if (!value.is_boolean()) {
        Fail(path, "must be a boolean (subschemas are not supported)");
      }
      node->additional_properties = value.get<bool>();
    } else if (key == "$schema" || key == "$id" || key == "title" || key == "description" ||
               key == "$comment" || key == "default" || key == "examples") {
      // Annotations carry no validation semantics.
    } else {
      path.resize(base);
      Fail(path, "unsupported keyword " + Dump(json(key)));
    }
  }
  path.resize(base);

  if (node->minimum && node->maximum &&
      AsLongDouble(*node->minimum) > AsLongDouble(*node->maximum)) {
    Fail(path,
         "minimum " + Dump(*node->minimum) + " is greater than maximum " + Dump(*node->maximum));
  }
  if (node->min_length && node->max_length && *node->min_length > *node->max_length) {
    Fail(path, "minLength " + std::to_string(*node->min_length) + " is greater than maxLength " +
                   std::to_string(*node->max_length));
  }
  return node;
}

class Validator {
 public:
  // Returns false and fills error_ on the first violation.
  bool Check(const SchemaNode& node, const json& value) {
    if (node.type_mask != 0 && !MatchesType(value, node.type_mask)) {
      return Error("expected " + DescribeMask(node.type_mask) + ", got " +
                   std::string(ValueTypeName(value)));
    }
    if (node.enum_values) {
      bool found = false;
      for (const auto& candidate : *node.enum_values) {
        if (candidate == value) {
          found = true;
          break;
        }
      }
      if (!found) {
        return Error("value not in enum");
      }
    }
    if (value.is_number()) {
      if (node.minimum && AsLongDouble(value) < AsLongDouble(*node.minimum)) {
        return Error(Dump(value) + " is less than minimum " + Dump(*node.minimum));
      }
      if (node.maximum && AsLongDouble(value) > AsLongDouble(*node.maximum)) {
        return Error(Dump(value) + " is greater than maximum " + Dump(*node.maximum));
      }
    } else if (value.is_string()) {
      if (node.min_length || node.max_length) {
        const std::size_t len = Utf8Length(value.get_ref<const std::string&>());
        if (node.min_length && len < *node.min_length) {
          return Error("length " + std::to_string(len) + " is less than minLength " +
                       std::to_string(*node.min_length));
        }
        if (node.max_length && len > *node.max_length) {
          return Error("length " + std::to_string(len) + " is greater than maxLength " +
                       std::to_string(*node.max_length));
        }
      }
    } else if (value.is_object()) {
      return CheckObject(node, value);
    } else if (value.is_array() && node.items) {
      const std::size_t base = path_.size();
      for (std::size_t i = 0; i < value.size(); ++i) {
        AppendIndex(path_, i);
        if (!Check(*node.items, value[i])) {
          return false;
        }
        path_.resize(base);
      }
    }
    return true;
  }

  std::string TakeError() { return std::move(error_); }

 private:
  bool CheckObject(const SchemaNode& node, const json& value) {
    for (const auto& name : node.required) {
      if (!value.contains(name)) {
        return Error("missing required property " + Dump(json(name)));
      }
    }
    const std::size_t base = path_.size();
    for (const auto& [name, sub] : node.properties) {
      const auto it = value.find(name);
      if (it == value.end()) {
        continue;
      }
      AppendKey(path_, name);
      if (!Check(*sub, *it)) {
        return false;
      }
      path_.resize(base);
    }
    if (!node.additional_properties) {
      for (const auto& [name, unused] : value.items()) {
        if (node.FindProperty(name) == nullptr) {
          return Error("additional property " + Dump(json(name)) + " is not allowed");
        }
      }
    }
    return true;
  }

  bool Error(const std::string& what) {
    error_ = path_ + ": " + what;
    return false;
  }

  std::string path_ = "$";
  std::string error_;
};

}  // namespace

JsonSchema::JsonSchema(std::shared_ptr<const detail::SchemaNode> root) : root_(std::move(root)) {}

JsonSchema JsonSchema::Compile(const json& schema) {
  if (ExceedsDepth(schema, kMaxSchemaJsonDepth)) {
    throw SchemaError("schema $: JSON nesting exceeds maximum depth " +
                      std::to_string(kMaxSchemaJsonDepth));
  }
  std::string path = "$";
  return JsonSchema(CompileNode(schema, path, 1));
}

std::string JsonSchema::Validate(const json& doc) const {
  // Checked up front because enum comparison and dump() recurse on the
  // document itself, independently of how deep the schema goes.
  if (ExceedsDepth(doc, kMaxDocumentDepth)) {
    return "$: document nesting exceeds maximum depth " + std::to_string(kMaxDocumentDepth);
  }
  Validator v;
  if (v.Check(*root_, doc)) {
    return {};
  }
  return v.TakeError();
}

}  // namespace evproc::core

#include "json_schema.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
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

// ---- exact numbers ----------------------------------------------------------------

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Whether text is one JSON number token (RFC 8259): -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
bool IsJsonNumber(std::string_view t) {
  std::size_t i = 0;
  auto digits = [&] {
    const std::size_t start = i;
    while (i < t.size() && IsDigit(t[i])) {
      ++i;
    }
    return i > start;
  };
  if (i < t.size() && t[i] == '-') {
    ++i;
  }
  if (i < t.size() && t[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (!digits()) {
      return false;
    }
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) {
      ++i;
    }
    if (!digits()) {
      return false;
    }
  }
  return i == t.size();
}

// Characters a number token is made of: a maximal run of them is one token to check.
bool IsNumberChar(char c) {
  return IsDigit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

// Exponents are saturated here: a number written with an exponent beyond 10^17 compares
// as if it were 10^17 (no document is long enough to tell them apart otherwise).
constexpr std::int64_t kExponentBound = 100000000000000000;

// A JSON number's exact value: (-1)^negative * digits * 10^exponent, with digits free of
// leading and trailing zeros (empty for zero, which is never negative: -0 == 0).
struct Decimal {
  bool negative = false;
  std::string digits;
  std::int64_t exponent = 0;

  // text must be a JSON number (IsJsonNumber).
  static Decimal Of(std::string_view text) {
    Decimal d;
    std::size_t i = 0;
    if (text[i] == '-') {
      d.negative = true;
      ++i;
    }
    std::string all;
    std::int64_t fraction_digits = 0;
    for (; i < text.size() && IsDigit(text[i]); ++i) {
      all += text[i];
    }
    if (i < text.size() && text[i] == '.') {
      for (++i; i < text.size() && IsDigit(text[i]); ++i) {
        all += text[i];
        ++fraction_digits;
      }
    }
    std::int64_t exponent = 0;
    if (i < text.size()) {  // 'e' or 'E'
      ++i;
      const bool exponent_negative = text[i] == '-';
      if (text[i] == '+' || text[i] == '-') {
        ++i;
      }
      for (; i < text.size(); ++i) {
        if (exponent < kExponentBound) {
          exponent = exponent * 10 + (text[i] - '0');
        }
      }
      exponent = std::min(exponent, kExponentBound);
      if (exponent_negative) {
        exponent = -exponent;
      }
    }
    const std::size_t first = all.find_first_not_of('0');
    if (first == std::string::npos) {
      return Decimal{};
    }
    const std::size_t last = all.find_last_not_of('0');
    d.digits = all.substr(first, last - first + 1);
    d.exponent = exponent - fraction_digits + static_cast<std::int64_t>(all.size() - 1 - last);
    return d;
  }

  [[nodiscard]] bool IsZero() const { return digits.empty(); }
  [[nodiscard]] bool IsInteger() const { return IsZero() || exponent >= 0; }
  // One past the decimal position of the leading digit: orders magnitudes.
  [[nodiscard]] std::int64_t Top() const {
    return exponent + static_cast<std::int64_t>(digits.size());
  }

  // -1, 0 or 1 as *this is less than, equal to or greater than other.
  [[nodiscard]] int Compare(const Decimal& other) const {
    if (negative != other.negative) {
      return negative ? -1 : 1;
    }
    int magnitude = 0;
    if (IsZero() || other.IsZero()) {
      magnitude = (IsZero() ? 0 : 1) - (other.IsZero() ? 0 : 1);
    } else if (Top() != other.Top()) {
      magnitude = Top() < other.Top() ? -1 : 1;
    } else {
      // Aligned at the leading digit; without trailing zeros, a longer string that
      // shares the other's digits is the larger one, as string comparison has it.
      const int c = digits.compare(other.digits);
      magnitude = (c > 0) - (c < 0);
    }
    return negative ? -magnitude : magnitude;
  }

  // A non-negative integer as a length, saturated at the largest uint64 (no string is
  // that long); nullopt when it is negative or not an integer.
  [[nodiscard]] std::optional<std::uint64_t> AsLength() const {
    constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
    if ((negative && !IsZero()) || !IsInteger()) {
      return std::nullopt;
    }
    if (IsZero()) {
      return 0;
    }
    if (Top() > 20) {
      return kMax;
    }
    std::uint64_t value = 0;
    for (const char c : digits) {
      const auto digit = static_cast<std::uint64_t>(c - '0');
      if (value > (kMax - digit) / 10) {
        return kMax;
      }
      value = value * 10 + digit;
    }
    for (std::int64_t e = 0; e < exponent; ++e) {
      if (value > kMax / 10) {
        return kMax;
      }
      value *= 10;
    }
    return value;
  }
};

// The numbers of one parsed text (ExactJson): a number node holds its index.
class Numbers {
 public:
  explicit Numbers(const ExactJson& source) : source_(&source) {}
  [[nodiscard]] std::string_view Text(const json& number) const {
    return source_->Number(number.get<std::size_t>());
  }
  [[nodiscard]] Decimal Value(const json& number) const { return Decimal::Of(Text(number)); }

 private:
  const ExactJson* source_;
};

// JSON Schema equality (enum): numbers by value (1.0 equals 1), the rest structurally.
bool Equal(const json& a, const Numbers& a_numbers, const json& b, const Numbers& b_numbers) {
  if (a.is_number() || b.is_number()) {
    return a.is_number() && b.is_number() && a_numbers.Value(a).Compare(b_numbers.Value(b)) == 0;
  }
  if (a.type() != b.type()) {
    return false;
  }
  if (a.is_array()) {
    if (a.size() != b.size()) {
      return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!Equal(a[i], a_numbers, b[i], b_numbers)) {
        return false;
      }
    }
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) {
      return false;
    }
    for (const auto& [key, value] : a.items()) {
      const auto it = b.find(key);
      if (it == b.end() || !Equal(value, a_numbers, *it, b_numbers)) {
        return false;
      }
    }
    return true;
  }
  return a == b;
}

bool MatchesType(const json& value, const Numbers& numbers, std::uint8_t mask) {
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
      return (mask & kNumber) != 0 || ((mask & kInteger) != 0 && numbers.Value(value).IsInteger());
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
  // A bound: its exact value and its text as written, for messages.
  std::optional<std::pair<Decimal, std::string>> minimum;
  std::optional<std::pair<Decimal, std::string>> maximum;
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

// A number such as 2.0 or 2e0 is accepted for consistency with the "integer" type.
std::uint64_t CompileLength(const json& value, const Numbers& numbers, const std::string& path) {
  if (value.is_number()) {
    if (const auto length = numbers.Value(value).AsLength()) {
      return *length;
    }
  }
  Fail(path, "must be a non-negative integer");
}

std::unique_ptr<SchemaNode> CompileNode(const json& schema, const Numbers& numbers,
                                        std::string& path, std::size_t depth) {
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
        node->properties.emplace_back(name, CompileNode(sub, numbers, path, depth + 1));
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
      node->items = CompileNode(value, numbers, path, depth + 1);
    } else if (key == "enum") {
      if (!value.is_array() || value.empty()) {
        Fail(path, "must be a non-empty array");
      }
      node->enum_values.emplace(value.begin(), value.end());
    } else if (key == "minimum" || key == "maximum") {
      if (!value.is_number()) {
        Fail(path, "must be a number");
      }
      (key == "minimum" ? node->minimum : node->maximum)
          .emplace(numbers.Value(value), std::string(numbers.Text(value)));
    } else if (key == "minLength") {
      node->min_length = CompileLength(value, numbers, path);
    } else if (key == "maxLength") {
      node->max_length = CompileLength(value, numbers, path);
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

  if (node->minimum && node->maximum && node->minimum->first.Compare(node->maximum->first) > 0) {
    Fail(path,
         "minimum " + node->minimum->second + " is greater than maximum " + node->maximum->second);
  }
  if (node->min_length && node->max_length && *node->min_length > *node->max_length) {
    Fail(path, "minLength " + std::to_string(*node->min_length) + " is greater than maxLength " +
                   std::to_string(*node->max_length));
  }
  return node;
}

class Validator {
 public:
  Validator(const Numbers& schema_numbers, const Numbers& numbers)
      : schema_numbers_(schema_numbers), numbers_(numbers) {}

  // Returns false and fills error_ on the first violation.
  bool Check(const SchemaNode& node, const json& value) {
    if (node.type_mask != 0 && !MatchesType(value, numbers_, node.type_mask)) {
      return Error("expected " + DescribeMask(node.type_mask) + ", got " +
                   std::string(ValueTypeName(value)));
    }
    if (node.enum_values) {
      bool found = false;
      for (const auto& candidate : *node.enum_values) {
        if (Equal(candidate, schema_numbers_, value, numbers_)) {
          found = true;
          break;
        }
      }
      if (!found) {
        return Error("value not in enum");
      }
    }
    if (value.is_number()) {
      if (node.minimum || node.maximum) {
        const Decimal number = numbers_.Value(value);
        if (node.minimum && number.Compare(node.minimum->first) < 0) {
          return Error(std::string(numbers_.Text(value)) + " is less than minimum " +
                       node.minimum->second);
        }
        if (node.maximum && number.Compare(node.maximum->first) > 0) {
          return Error(std::string(numbers_.Text(value)) + " is greater than maximum " +
                       node.maximum->second);
        }
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

  const Numbers& schema_numbers_;
  const Numbers& numbers_;
  std::string path_ = "$";
  std::string error_;
};

// A JSON value built in memory as ExactJson: its numbers as nlohmann prints them.
ExactJson FromJson(const json& value) { return ParseExact(value.dump()); }

}  // namespace

ExactJson ParseExact(std::string_view text) {
  ExactJson out(text);
  // The text again with every number token replaced by its index: nlohmann then parses
  // what it could not hold (1e400) and the validator reads numbers from `text`. Outside
  // strings a maximal run of number characters is one token in valid JSON; a run that
  // is no JSON number stays as it is, so the rewritten text is valid exactly when the
  // original is (up to number range).
  std::string rewritten;
  rewritten.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '"') {
      std::size_t end = i + 1;
      while (end < text.size() && text[end] != '"') {
        end += text[end] == '\\' ? 2 : 1;
      }
      end = std::min(end + 1, text.size());
      rewritten.append(text.substr(i, end - i));
      i = end;
    } else if (text[i] == '-' || IsDigit(text[i])) {
      std::size_t end = i;
      while (end < text.size() && IsNumberChar(text[end])) {
        ++end;
      }
      const std::string_view token = text.substr(i, end - i);
      if (IsJsonNumber(token)) {
        rewritten += std::to_string(out.numbers.size());
        out.numbers.emplace_back(i, token.size());
      } else {
        rewritten.append(token);
      }
      i = end;
    } else {
      rewritten += text[i];
      ++i;
    }
  }
  try {
    out.value = json::parse(rewritten);
  } catch (const json::parse_error&) {
    // Reported for the text as written, so that the message quotes the caller's bytes.
    try {
      [[maybe_unused]] const json reparsed = json::parse(text.begin(), text.end());
    } catch (const json::parse_error&) {
      throw;
    } catch (const json::exception&) {  // a number out of double range came first
    }
    throw;
  }
  return out;
}

JsonSchema::JsonSchema(std::shared_ptr<const detail::SchemaNode> root,
                       std::shared_ptr<const ExactJson> source)
    : root_(std::move(root)), source_(std::move(source)) {}

JsonSchema JsonSchema::CompileExact(const ExactJson& schema) {
  if (ExceedsDepth(schema.value, kMaxSchemaJsonDepth)) {
    throw SchemaError("schema $: JSON nesting exceeds maximum depth " +
                      std::to_string(kMaxSchemaJsonDepth));
  }
  auto source = std::make_shared<const ExactJson>(schema);
  std::string path = "$";
  auto root = CompileNode(source->value, Numbers(*source), path, 1);
  return {std::move(root), std::move(source)};
}

JsonSchema JsonSchema::Compile(const json& schema) {
  // Checked before FromJson, which prints the value recursively.
  if (ExceedsDepth(schema, kMaxSchemaJsonDepth)) {
    throw SchemaError("schema $: JSON nesting exceeds maximum depth " +
                      std::to_string(kMaxSchemaJsonDepth));
  }
  return CompileExact(FromJson(schema));
}

std::string JsonSchema::ValidateExact(const ExactJson& doc) const {
  // Checked up front because enum comparison recurses on the document itself,
  // independently of how deep the schema goes.
  if (ExceedsDepth(doc.value, kMaxDocumentDepth)) {
    return "$: document nesting exceeds maximum depth " + std::to_string(kMaxDocumentDepth);
  }
  const Numbers schema_numbers(*source_);
  const Numbers numbers(doc);
  Validator v(schema_numbers, numbers);
  if (v.Check(*root_, doc.value)) {
    return {};
  }
  return v.TakeError();
}

std::string JsonSchema::Validate(const json& doc) const {
  if (ExceedsDepth(doc, kMaxDocumentDepth)) {
    return "$: document nesting exceeds maximum depth " + std::to_string(kMaxDocumentDepth);
  }
  return ValidateExact(FromJson(doc));
}

}  // namespace evproc::core

#include "core/json_schema.hpp"
#include "core/schema_api.hpp"

#include <array>
#include <cstring>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace {

using evproc::core::JsonSchema;
using evproc::core::ParseExact;
using evproc::core::SchemaError;
using nlohmann::json;

// Texts go the way the extension's do (schema_api.cpp): parsed with exact numbers.
JsonSchema Compile(const std::string& text) { return JsonSchema::CompileExact(ParseExact(text)); }

std::string Check(const std::string& schema, const std::string& doc) {
  return Compile(schema).ValidateExact(ParseExact(doc));
}

std::string CompileError(const std::string& schema) {
  try {
    (void)Compile(schema);
  } catch (const SchemaError& e) {
    return e.what();
  }
  return "<compiled>";
}

// Builds [[[...1...]]] with the given number of nested arrays.
std::string NestedArrays(std::size_t depth) {
  return std::string(depth, '[') + "1" + std::string(depth, ']');
}

// ---- type ------------------------------------------------------------------

TEST(JsonSchemaType, EachTypeAcceptsItsValues) {
  EXPECT_EQ(Check(R"({"type":"object"})", "{}"), "");
  EXPECT_EQ(Check(R"({"type":"array"})", "[]"), "");
  EXPECT_EQ(Check(R"({"type":"string"})", R"("x")"), "");
  EXPECT_EQ(Check(R"({"type":"number"})", "1.5"), "");
  EXPECT_EQ(Check(R"({"type":"number"})", "-7"), "");
  EXPECT_EQ(Check(R"({"type":"integer"})", "42"), "");
  EXPECT_EQ(Check(R"({"type":"integer"})", "-42"), "");
  EXPECT_EQ(Check(R"({"type":"integer"})", "18446744073709551615"), "");
  EXPECT_EQ(Check(R"({"type":"boolean"})", "false"), "");
  EXPECT_EQ(Check(R"({"type":"null"})", "null"), "");
}

TEST(JsonSchemaType, IntegerAcceptsIntegralFloats) {
  EXPECT_EQ(Check(R"({"type":"integer"})", "1.0"), "");
  EXPECT_EQ(Check(R"({"type":"integer"})", "-3e2"), "");
  EXPECT_EQ(Check(R"({"type":"integer"})", "1.5"), "$: expected integer, got number");
}

TEST(JsonSchemaType, Mismatches) {
  EXPECT_EQ(Check(R"({"type":"object"})", "[]"), "$: expected object, got array");
  EXPECT_EQ(Check(R"({"type":"string"})", "1"), "$: expected string, got number");
  EXPECT_EQ(Check(R"({"type":"boolean"})", "0"), "$: expected boolean, got number");
  EXPECT_EQ(Check(R"({"type":"null"})", R"("")"), "$: expected null, got string");
  EXPECT_EQ(Check(R"({"type":"number"})", "true"), "$: expected number, got boolean");
  EXPECT_EQ(Check(R"({"type":"array"})", "null"), "$: expected array, got null");
}

TEST(JsonSchemaType, UnionOfTypes) {
  const auto s = Compile(R"({"type":["string","null"]})");
  EXPECT_EQ(s.Validate("x"), "");
  EXPECT_EQ(s.Validate(nullptr), "");
  EXPECT_EQ(s.Validate(3), "$: expected string or null, got number");
}

TEST(JsonSchemaType, NoTypeAcceptsAnything) {
  const auto s = Compile("{}");
  for (const char* doc : {"{}", "[]", "1", "1.5", "\"s\"", "true", "null"}) {
    EXPECT_EQ(s.Validate(json::parse(doc)), "") << doc;
  }
}

TEST(JsonSchemaType, NestedPathIsReported) {
  const char* schema = R"({"type":"object","properties":{
      "customer":{"type":"object","properties":{"id":{"type":"integer"}}}}})";
  EXPECT_EQ(Check(schema, R"({"customer":{"id":7}})"), "");
  EXPECT_EQ(Check(schema, R"({"customer":{"id":"7"}})"),
            "$.customer.id: expected integer, got string");
}

// ---- required / properties / additionalProperties ----------------------------

TEST(JsonSchemaObject, Required) {
  const char* schema = R"({"type":"object","required":["order_id","qty"]})";
  EXPECT_EQ(Check(schema, R"({"order_id":1,"qty":2})"), "");
  EXPECT_EQ(Check(schema, R"({"qty":2})"), R"($: missing required property "order_id")");
  EXPECT_EQ(Check(schema, R"({"order_id":1})"), R"($: missing required property "qty")");
  // Null counts as present: "required" is about keys, not values.
  EXPECT_EQ(Check(schema, R"({"order_id":null,"qty":null})"), "");
}

TEST(JsonSchemaObject, RequiredOnlyAppliesToObjects) {
  EXPECT_EQ(Check(R"({"required":["a"]})", "[1]"), "");
  EXPECT_EQ(Check(R"({"required":["a"]})", "5"), "");
}

TEST(JsonSchemaObject, OptionalPropertiesMayBeAbsent) {
  const char* schema = R"({"properties":{"a":{"type":"string"}}})";
  EXPECT_EQ(Check(schema, "{}"), "");
  EXPECT_EQ(Check(schema, R"({"a":"x","b":1})"), "");
  EXPECT_EQ(Check(schema, R"({"a":1})"), "$.a: expected string, got number");
}

TEST(JsonSchemaObject, AdditionalPropertiesFalse) {
  const char* schema = R"({"properties":{"a":{},"b":{}},"additionalProperties":false})";
  EXPECT_EQ(Check(schema, R"({"a":1,"b":2})"), "");
  EXPECT_EQ(Check(schema, R"({"a":1,"extra":2})"),
            R"($: additional property "extra" is not allowed)");
  EXPECT_EQ(Check(R"({"additionalProperties":false})", "{}"), "");
  EXPECT_EQ(Check(R"({"additionalProperties":true})", R"({"x":1})"), "");
}

TEST(JsonSchemaObject, AdditionalPropertiesNested) {
  const char* schema =
      R"({"properties":{"inner":{"properties":{"k":{}},"additionalProperties":false}}})";
  EXPECT_EQ(Check(schema, R"({"inner":{"k":1},"other":1})"), "");
  EXPECT_EQ(Check(schema, R"({"inner":{"k":1,"z":1}})"),
            R"($.inner: additional property "z" is not allowed)");
}

TEST(JsonSchemaObject, UnusualKeysUseBracketPaths) {
  const char* schema = R"({"properties":{"a.b":{"properties":{"x y":{"type":"string"}}}}})";
  EXPECT_EQ(Check(schema, R"({"a.b":{"x y":1}})"),
            R"($["a.b"]["x y"]: expected string, got number)");
}

TEST(JsonSchemaObject, DeepNesting) {
  const char* schema = R"({"properties":{"a":{"properties":{"b":{"properties":{"c":{
      "required":["d"]}}}}}}})";
  EXPECT_EQ(Check(schema, R"({"a":{"b":{"c":{"d":0}}}})"), "");
  EXPECT_EQ(Check(schema, R"({"a":{"b":{"c":{}}}})"), R"($.a.b.c: missing required property "d")");
}

// ---- items -------------------------------------------------------------------

TEST(JsonSchemaArray, Items) {
  const char* schema = R"({"type":"object","properties":{"items":{"type":"array",
      "items":{"type":"string"}}}})";
  EXPECT_EQ(Check(schema, R"({"items":[]})"), "");
  EXPECT_EQ(Check(schema, R"({"items":["a","b"]})"), "");
  EXPECT_EQ(Check(schema, R"({"items":["a","b",3]})"), "$.items[2]: expected string, got number");
}

TEST(JsonSchemaArray, ItemsOfObjects) {
  const char* schema = R"({"items":{"required":["sku"],"properties":{"qty":{"minimum":1}}}})";
  EXPECT_EQ(Check(schema, R"([{"sku":"x","qty":1}])"), "");
  EXPECT_EQ(Check(schema, R"([{"sku":"x","qty":1},{"qty":1}])"),
            R"($[1]: missing required property "sku")");
  EXPECT_EQ(Check(schema, R"([{"sku":"x","qty":0}])"), "$[0].qty: 0 is less than minimum 1");
  EXPECT_EQ(Check(R"({"items":{"items":{"type":"null"}}})", "[[null],[null,1]]"),
            "$[1][1]: expected null, got number");
}

// ---- enum --------------------------------------------------------------------

TEST(JsonSchemaEnum, Values) {
  const char* schema = R"({"properties":{"status":{"enum":["new","paid",1,null,{"a":[1]}]}}})";
  EXPECT_EQ(Check(schema, R"({"status":"new"})"), "");
  EXPECT_EQ(Check(schema, R"({"status":1})"), "");
  EXPECT_EQ(Check(schema, R"({"status":1.0})"), "");
  EXPECT_EQ(Check(schema, R"({"status":null})"), "");
  EXPECT_EQ(Check(schema, R"({"status":{"a":[1]}})"), "");
  EXPECT_EQ(Check(schema, R"({"status":"NEW"})"), "$.status: value not in enum");
  EXPECT_EQ(Check(schema, R"({"status":"1"})"), "$.status: value not in enum");
  EXPECT_EQ(Check(schema, R"({"status":{"a":[2]}})"), "$.status: value not in enum");
}

// ---- minimum / maximum -------------------------------------------------------

TEST(JsonSchemaNumeric, Bounds) {
  const char* schema = R"({"properties":{"qty":{"type":"integer","minimum":1,"maximum":10}}})";
  EXPECT_EQ(Check(schema, R"({"qty":1})"), "");
  EXPECT_EQ(Check(schema, R"({"qty":10})"), "");
  EXPECT_EQ(Check(schema, R"({"qty":0})"), "$.qty: 0 is less than minimum 1");
  EXPECT_EQ(Check(schema, R"({"qty":11})"), "$.qty: 11 is greater than maximum 10");
  EXPECT_EQ(Check(schema, R"({"qty":-5})"), "$.qty: -5 is less than minimum 1");
}

TEST(JsonSchemaNumeric, FractionalBounds) {
  const char* schema = R"({"minimum":-0.5,"maximum":2.5})";
  EXPECT_EQ(Check(schema, "-0.5"), "");
  EXPECT_EQ(Check(schema, "2.5"), "");
  EXPECT_EQ(Check(schema, "-0.6"), "$: -0.6 is less than minimum -0.5");
  EXPECT_EQ(Check(schema, "3"), "$: 3 is greater than maximum 2.5");
}

TEST(JsonSchemaNumeric, LargeIntegersCompareExactly) {
  // Both bounds round to the same double; a double-based comparison would
  // wrongly accept the value.
  EXPECT_EQ(Check(R"({"maximum":9007199254740992})", "9007199254740993"),
            "$: 9007199254740993 is greater than maximum 9007199254740992");
  EXPECT_EQ(Check(R"({"minimum":18446744073709551615})", "18446744073709551614"),
            "$: 18446744073709551614 is less than minimum 18446744073709551615");
}

// Numbers compare by their exact decimal value, not as doubles: a double cannot hold
// 1e400 (the parser refused it, in a schema even inside an annotation) nor tell 1e-400
// from 0 (which made it an "integer").
TEST(JsonSchemaExactNumbers, IntegerIsExact) {
  EXPECT_EQ(Check(R"({"type":"integer"})", "1e-400"), "$: expected integer, got number");
  EXPECT_EQ(Check(R"({"type":"integer"})", "-1e-400"), "$: expected integer, got number");
  EXPECT_EQ(Check(R"({"type":"integer"})", "1.0000000000000000000001"),
            "$: expected integer, got number");
  EXPECT_EQ(Check(R"({"type":"integer"})", "0.5e1"), "");
  EXPECT_EQ(Check(R"({"type":"integer"})", "1.5E+1"), "");
  EXPECT_EQ(Check(R"({"type":"integer"})", "1.55E+1"), "$: expected integer, got number");
  EXPECT_EQ(Check(R"({"type":"integer"})", "15E-1"), "$: expected integer, got number");
  EXPECT_EQ(Check(R"({"type":"integer"})", "1e400"), "");
  EXPECT_EQ(Check(R"({"type":"integer"})", "-0.000e-5"), "");
  EXPECT_EQ(Check(R"({"type":"integer"})", "123456789012345678901234567890.000"), "");
  EXPECT_EQ(Check(R"({"type":"number"})", "-1e400"), "");
}

TEST(JsonSchemaExactNumbers, BoundsAreExact) {
  // 0.1 and 0.10000000000000001 are the same double.
  EXPECT_EQ(Check(R"({"maximum":0.1})", "0.10000000000000001"),
            "$: 0.10000000000000001 is greater than maximum 0.1");
  EXPECT_EQ(Check(R"({"minimum":0.10000000000000001})", "0.1"),
            "$: 0.1 is less than minimum 0.10000000000000001");
  EXPECT_EQ(Check(R"({"minimum":1e-400})", "0"), "$: 0 is less than minimum 1e-400");
  EXPECT_EQ(Check(R"({"minimum":1e-400})", "1e-400"), "");
  EXPECT_EQ(Check(R"({"minimum":1e-400})", "0.1e-399"), "");
  EXPECT_EQ(Check(R"({"maximum":-1e-400})", "-0"), "$: -0 is greater than maximum -1e-400");
  EXPECT_EQ(Check(R"({"maximum":1e400})", "1e399"), "");
  EXPECT_EQ(Check(R"({"maximum":1e400})", "1.0000000000000000001e400"),
            "$: 1.0000000000000000001e400 is greater than maximum 1e400");
  EXPECT_EQ(Check(R"({"minimum":-1e400})", "-1e401"), "$: -1e401 is less than minimum -1e400");
  EXPECT_EQ(Check(R"({"minimum":-2,"maximum":-1})", "-1.5"), "");
  EXPECT_EQ(Check(R"({"minimum":-2,"maximum":-1})", "-0.99"),
            "$: -0.99 is greater than maximum -1");
  EXPECT_EQ(Check(R"({"minimum":0,"maximum":0})", "-0.0e7"), "");
  // Bounds written differently are the same value.
  EXPECT_EQ(CompileError(R"({"minimum":100,"maximum":1e2})"), "<compiled>");
  EXPECT_EQ(CompileError(R"({"minimum":1e400,"maximum":9e399})"),
            "schema $: minimum 1e400 is greater than maximum 9e399");
  // Exponents too long for any integer type still order (saturated far beyond any text).
  EXPECT_EQ(Check(R"({"maximum":1e99999999999999999999999})", "1e400"), "");
  EXPECT_EQ(Check(R"({"minimum":1e-99999999999999999999999})", "0"),
            "$: 0 is less than minimum 1e-99999999999999999999999");
}

TEST(JsonSchemaExactNumbers, EnumEqualityIsByValue) {
  const std::string schema = R"({"enum":[1,0.1,1e400,[2.50],{"a":-0}]})";
  EXPECT_EQ(Check(schema, "1.0"), "");
  EXPECT_EQ(Check(schema, "0.01e1"), "");
  EXPECT_EQ(Check(schema, "10e399"), "");
  EXPECT_EQ(Check(schema, "[2.5]"), "");
  EXPECT_EQ(Check(schema, R"({"a":0})"), "");
  EXPECT_EQ(Check(schema, "0.10000000000000001"), "$: value not in enum");
  EXPECT_EQ(Check(schema, "1e-400"), "$: value not in enum");
  EXPECT_EQ(Check(schema, "[2.5,0]"), "$: value not in enum");
  EXPECT_EQ(Check(schema, R"({"a":0,"b":0})"), "$: value not in enum");
  EXPECT_EQ(Check(schema, R"("1")"), "$: value not in enum");
}

TEST(JsonSchemaExactNumbers, AnyNumberInASchema) {
  const std::string huge = "1" + std::string(400, '0');  // as jsonb prints 1e400
  EXPECT_EQ(CompileError(R"({"examples":[1e400,-1e400,1e-400],"default":1e99999})"), "<compiled>");
  EXPECT_EQ(CompileError(R"({"maximum":)" + huge + "}"), "<compiled>");
  EXPECT_EQ(Check(R"({"maximum":)" + huge + "}", "1e400"), "");
  EXPECT_EQ(Check(R"({"maximum":)" + huge + "}", "1e400000"),
            "$: 1e400000 is greater than maximum " + huge);
  // Lengths: non-negative integers however written; past uint64 none is ever reached.
  EXPECT_EQ(Check(R"({"minLength":2e0})", R"("a")"), "$: length 1 is less than minLength 2");
  EXPECT_EQ(Check(R"({"maxLength":1e400})", R"("abc")"), "");
  EXPECT_EQ(Check(R"({"minLength":1e400})", R"("abc")"),
            "$: length 3 is less than minLength 18446744073709551615");
  EXPECT_EQ(CompileError(R"({"minLength":1e-400})"),
            "schema $.minLength: must be a non-negative integer");
  EXPECT_EQ(CompileError(R"({"maxLength":-1e400})"),
            "schema $.maxLength: must be a non-negative integer");
}

// Texts nlohmann refuses are refused with its message for the text as written (the
// numbers are not rewritten in it), and nothing else is accepted.
TEST(JsonSchemaExactNumbers, ParseExactRefusesWhatTheParserRefuses) {
  for (const char* bad :
       {"[01]", "[1.]", "[.5]", "[-]", "[1e]", "[1e+]", "[+1]", "[1.5.3]", "[1-2]", "[0x10]",
        "[NaN]", "[-Infinity]", "[1,]", "{\"a\":1 2}", "123456789x", "[\"\\\"1\"", "1 2"}) {
    std::string original;
    try {
      [[maybe_unused]] const json parsed = json::parse(bad);
    } catch (const json::parse_error& e) {
      original = e.what();
    }
    ASSERT_NE(original, "") << bad;
    try {
      [[maybe_unused]] const auto parsed = ParseExact(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const json::parse_error& e) {
      EXPECT_EQ(std::string(e.what()), original) << bad;
    }
  }
  const auto parsed = ParseExact(R"({"s":"1e400 \"2\"","n":[-0.5e-3,7]})");
  EXPECT_EQ(parsed.value["s"], "1e400 \"2\"");
  EXPECT_EQ(parsed.Number(parsed.value["n"][0].get<std::size_t>()), "-0.5e-3");
  EXPECT_EQ(parsed.Number(parsed.value["n"][1].get<std::size_t>()), "7");
}

TEST(JsonSchemaNumeric, OnlyAppliesToNumbers) {
  EXPECT_EQ(Check(R"({"minimum":5})", R"("1")"), "");
  EXPECT_EQ(Check(R"({"maximum":5})", "[10]"), "");
}

// ---- minLength / maxLength ---------------------------------------------------

TEST(JsonSchemaString, Lengths) {
  const char* schema = R"({"properties":{"name":{"type":"string","minLength":1,"maxLength":3}}})";
  EXPECT_EQ(Check(schema, R"({"name":"a"})"), "");
  EXPECT_EQ(Check(schema, R"({"name":"abc"})"), "");
  EXPECT_EQ(Check(schema, R"({"name":""})"), "$.name: length 0 is less than minLength 1");
  EXPECT_EQ(Check(schema, R"({"name":"abcd"})"), "$.name: length 4 is greater than maxLength 3");
}

TEST(JsonSchemaString, LengthCountsCodePoints) {
  const char* schema = R"({"minLength":4,"maxLength":4})";
  EXPECT_EQ(Check(schema, R"("ключ")"), "");                  // 8 bytes, 4 code points
  EXPECT_EQ(Check(schema, R"("a€😀b")"), "");                  // 1+3+4+1 bytes
  EXPECT_EQ(Check(schema, R"("\ud83d\ude00\u00e9xy")"), "");  // escaped surrogate pair
  EXPECT_EQ(Check(schema, R"("ключи")"), "$: length 5 is greater than maxLength 4");
}

TEST(JsonSchemaString, OnlyAppliesToStrings) {
  EXPECT_EQ(Check(R"({"minLength":3})", "1"), "");
  EXPECT_EQ(Check(R"({"maxLength":0})", "[1,2]"), "");
  EXPECT_EQ(Check(R"({"minLength":2.0})", R"("a")"), "$: length 1 is less than minLength 2");
}

// ---- annotations ---------------------------------------------------------------

TEST(JsonSchemaAnnotations, AreIgnored) {
  const char* schema = R"({"$schema":"https://json-schema.org/draft/2020-12/schema",
      "$id":"urn:x","title":"t","description":"d","$comment":"c","default":{"a":1},
      "examples":[1,"x"],"properties":{"a":{"title":"inner","default":5,"type":"string"}}})";
  EXPECT_EQ(Check(schema, R"({"a":"x"})"), "");
  EXPECT_EQ(Check(schema, R"({"a":5})"), "$.a: expected string, got number");
}

// ---- first violation -----------------------------------------------------------

TEST(JsonSchemaOrder, ReportsOnlyFirstViolation) {
  const char* schema = R"({"type":"object","required":["a"],"properties":{"b":{"type":"string"}},
      "additionalProperties":false})";
  // Type mismatch precedes everything else.
  EXPECT_EQ(Check(schema, "[]"), "$: expected object, got array");
  // Required is checked before property contents.
  EXPECT_EQ(Check(schema, R"({"b":1,"z":1})"), R"($: missing required property "a")");
}

// ---- invalid schemas -------------------------------------------------------------

TEST(JsonSchemaCompile, RootMustBeObject) {
  EXPECT_EQ(CompileError("[]"), "schema $: must be an object");
  EXPECT_EQ(CompileError("true"), "schema $: must be an object");
  EXPECT_EQ(CompileError(R"({"properties":{"a":true}})"),
            "schema $.properties.a: must be an object");
}

TEST(JsonSchemaCompile, UnknownKeywordsRejected) {
  EXPECT_EQ(CompileError(R"({"pattern":"x"})"), R"(schema $: unsupported keyword "pattern")");
  EXPECT_EQ(CompileError(R"({"properties":{"x":{"pattern":"^a"}}})"),
            R"(schema $.properties.x: unsupported keyword "pattern")");
  EXPECT_EQ(CompileError(R"({"items":{"oneOf":[]}})"),
            R"(schema $.items: unsupported keyword "oneOf")");
}

TEST(JsonSchemaCompile, BadType) {
  EXPECT_EQ(CompileError(R"({"type":"int"})"), R"(schema $.type: unknown type "int")");
  EXPECT_EQ(CompileError(R"({"type":["string",1]})"),
            "schema $.type[1]: must be a type name string");
  EXPECT_EQ(CompileError(R"({"type":[]})"), "schema $.type: must not be an empty array");
  EXPECT_EQ(CompileError(R"({"type":5})"),
            "schema $.type: must be a string or an array of strings");
}

TEST(JsonSchemaCompile, BadRequired) {
  EXPECT_EQ(CompileError(R"({"required":"a"})"), "schema $.required: must be an array of strings");
  EXPECT_EQ(CompileError(R"({"required":["a",2]})"), "schema $.required[1]: must be a string");
}

TEST(JsonSchemaCompile, BadPropertiesAndItems) {
  EXPECT_EQ(CompileError(R"({"properties":[]})"), "schema $.properties: must be an object");
  EXPECT_EQ(CompileError(R"({"items":[{}]})"),
            "schema $.items: must be an object (tuple form is not supported)");
}

TEST(JsonSchemaCompile, BadEnum) {
  EXPECT_EQ(CompileError(R"({"enum":[]})"), "schema $.enum: must be a non-empty array");
  EXPECT_EQ(CompileError(R"({"enum":"a"})"), "schema $.enum: must be a non-empty array");
}

TEST(JsonSchemaCompile, BadBounds) {
  EXPECT_EQ(CompileError(R"({"properties":{"qty":{"minimum":"1"}}})"),
            "schema $.properties.qty.minimum: must be a number");
  EXPECT_EQ(CompileError(R"({"maximum":null})"), "schema $.maximum: must be a number");
  EXPECT_EQ(CompileError(R"({"minimum":5,"maximum":1})"),
            "schema $: minimum 5 is greater than maximum 1");
  EXPECT_EQ(CompileError(R"({"minimum":1,"maximum":1})"), "<compiled>");
}

TEST(JsonSchemaCompile, BadLengths) {
  EXPECT_EQ(CompileError(R"({"minLength":-1})"),
            "schema $.minLength: must be a non-negative integer");
  EXPECT_EQ(CompileError(R"({"maxLength":1.5})"),
            "schema $.maxLength: must be a non-negative integer");
  EXPECT_EQ(CompileError(R"({"minLength":"1"})"),
            "schema $.minLength: must be a non-negative integer");
  EXPECT_EQ(CompileError(R"({"minLength":3,"maxLength":2})"),
            "schema $: minLength 3 is greater than maxLength 2");
}

TEST(JsonSchemaCompile, BadAdditionalProperties) {
  EXPECT_EQ(CompileError(R"({"additionalProperties":{}})"),
            "schema $.additionalProperties: must be a boolean (subschemas are not supported)");
}

// ---- depth limits ----------------------------------------------------------------

TEST(JsonSchemaDepth, DocumentDepthLimit) {
  const auto s = Compile("{}");
  EXPECT_EQ(s.Validate(json::parse(NestedArrays(evproc::core::kMaxDocumentDepth))), "");
  EXPECT_EQ(s.Validate(json::parse(NestedArrays(evproc::core::kMaxDocumentDepth + 1))),
            "$: document nesting exceeds maximum depth 64");
  // Far beyond any stack: must still be a clean error.
  EXPECT_EQ(s.Validate(json::parse(NestedArrays(100000))),
            "$: document nesting exceeds maximum depth 64");
}

std::string NestedItemsSchema(std::size_t levels) {
  std::string s;
  for (std::size_t i = 1; i < levels; ++i) {
    s += R"({"items":)";
  }
  s += "{}";
  s += std::string(levels - 1, '}');
  return s;
}

TEST(JsonSchemaDepth, SchemaDepthLimit) {
  EXPECT_EQ(CompileError(NestedItemsSchema(evproc::core::kMaxSchemaDepth).c_str()), "<compiled>");
  const std::string err =
      CompileError(NestedItemsSchema(evproc::core::kMaxSchemaDepth + 1).c_str());
  EXPECT_NE(err.find("subschemas nested deeper than 64 levels"), std::string::npos) << err;
  EXPECT_EQ(err.rfind("schema $.items.items.", 0), 0U) << err;
}

TEST(JsonSchemaDepth, SchemaJsonDepthLimit) {
  const std::string schema = R"({"enum":[)" + NestedArrays(100000) + "]}";
  EXPECT_EQ(CompileError(schema.c_str()), "schema $: JSON nesting exceeds maximum depth 256");
}

// ---- compiled schema is reusable and copyable --------------------------------------

// additionalProperties false looks every key up among the properties (a binary search:
// a linear one was quadratic in the payload's keys).
TEST(JsonSchemaObject, ManyPropertiesWithoutAdditional) {
  json properties = json::object();
  json doc = json::object();
  for (int i = 0; i < 5000; ++i) {
    properties["k" + std::to_string(i)] = json::object({{"type", "integer"}});
    doc["k" + std::to_string(i)] = i;
  }
  const JsonSchema schema = JsonSchema::Compile(
      json::object({{"properties", properties}, {"additionalProperties", false}}));
  EXPECT_EQ(schema.Validate(doc), "");
  doc["k4999"] = "x";
  EXPECT_EQ(schema.Validate(doc), "$.k4999: expected integer, got string");
  doc["k4999"] = 1;
  doc["k5000"] = 1;
  EXPECT_EQ(schema.Validate(doc), "$: additional property \"k5000\" is not allowed");
  doc.erase("k5000");
  doc["k"] = 1;  // sorts before every property
  EXPECT_EQ(schema.Validate(doc), "$: additional property \"k\" is not allowed");
}

TEST(JsonSchemaCompile, CopiesShareTheTree) {
  const auto original = Compile(R"({"type":"string"})");
  const JsonSchema copy = original;  // NOLINT(performance-unnecessary-copy-initialization)
  EXPECT_EQ(copy.Validate("x"), "");
  EXPECT_EQ(copy.Validate(1), "$: expected string, got number");
  EXPECT_EQ(original.Validate(1), "$: expected string, got number");
}

// ---- noexcept facade ---------------------------------------------------------------

namespace api = evproc::core;

class SchemaApi : public ::testing::Test {
 protected:
  api::CompiledSchema* CompileText(const std::string& text) {
    return api::SchemaCompile(text.data(), text.size(), err_.data(), err_.size());
  }
  bool ValidateText(const api::CompiledSchema* s, const std::string& doc) {
    return api::SchemaValidate(s, doc.data(), doc.size(), err_.data(), err_.size());
  }
  [[nodiscard]] std::string Err() const { return err_.data(); }

  std::array<char, 256> err_{};
};

static_assert(noexcept(api::SchemaCompile(nullptr, 0, nullptr, 0)), "facade must be noexcept");
static_assert(noexcept(api::SchemaValidate(nullptr, nullptr, 0, nullptr, 0)),
              "facade must be noexcept");
static_assert(noexcept(api::SchemaFree(nullptr)), "facade must be noexcept");

TEST_F(SchemaApi, CompileAndValidate) {
  api::CompiledSchema* s = CompileText(R"({"type":"object","required":["order_id"]})");
  ASSERT_NE(s, nullptr) << Err();
  EXPECT_TRUE(ValidateText(s, R"({"order_id":1})"));
  EXPECT_EQ(Err(), "");
  EXPECT_FALSE(ValidateText(s, R"({"id":1})"));
  EXPECT_EQ(Err(), R"($: missing required property "order_id")");
  api::SchemaFree(s);
}

TEST_F(SchemaApi, BadSchemaJsonText) {
  EXPECT_EQ(CompileText(R"({"type":)"), nullptr);
  EXPECT_EQ(Err().rfind("invalid schema JSON: ", 0), 0U) << Err();
  EXPECT_EQ(Err().find("[json.exception"), std::string::npos) << Err();
  EXPECT_EQ(CompileText(""), nullptr);
  EXPECT_EQ(Err().rfind("invalid schema JSON: ", 0), 0U) << Err();
}

TEST_F(SchemaApi, InvalidSchema) {
  EXPECT_EQ(CompileText(R"({"properties":{"qty":{"minimum":"x"}}})"), nullptr);
  EXPECT_EQ(Err(), "schema $.properties.qty.minimum: must be a number");
  EXPECT_EQ(CompileText("[1]"), nullptr);
  EXPECT_EQ(Err(), "schema $: must be an object");
}

TEST_F(SchemaApi, BadDocumentJsonText) {
  api::CompiledSchema* s = CompileText("{}");
  ASSERT_NE(s, nullptr);
  EXPECT_FALSE(ValidateText(s, "{\"a\":"));
  EXPECT_EQ(Err().rfind("invalid JSON: ", 0), 0U) << Err();
  EXPECT_FALSE(ValidateText(s, std::string("{}\0x", 4)));  // must not validate a prefix
  EXPECT_EQ(Err(), "invalid JSON: embedded NUL byte");
  EXPECT_FALSE(ValidateText(s, "\"\xff\""));  // invalid UTF-8
  EXPECT_EQ(Err().rfind("invalid JSON: ", 0), 0U) << Err();
  EXPECT_FALSE(api::SchemaValidate(s, nullptr, 0, err_.data(), err_.size()));
  api::SchemaFree(s);
}

TEST_F(SchemaApi, DeepDocumentIsRejectedCleanly) {
  api::CompiledSchema* s = CompileText("{}");
  ASSERT_NE(s, nullptr);
  EXPECT_FALSE(ValidateText(s, NestedArrays(200000)));
  EXPECT_EQ(Err(), "$: document nesting exceeds maximum depth 64");
  api::SchemaFree(s);
}

TEST_F(SchemaApi, NullArguments) {
  EXPECT_FALSE(ValidateText(nullptr, "{}"));
  EXPECT_EQ(Err(), "no schema");
  EXPECT_EQ(api::SchemaCompile(nullptr, 0, err_.data(), err_.size()), nullptr);
  // No error buffer at all must not crash.
  EXPECT_EQ(api::SchemaCompile("x", 1, nullptr, 0), nullptr);
  api::SchemaFree(nullptr);
}

// jsonb holds numbers far beyond double range (1e400 is output as 401 digits): the
// validator compares them exactly, in schemas and in documents.
TEST_F(SchemaApi, NumbersBeyondDoubleRange) {
  const std::string huge = "1" + std::string(400, '0');
  api::CompiledSchema* bounded = CompileText(R"({"minimum":)" + huge + "}");
  ASSERT_NE(bounded, nullptr) << Err();
  EXPECT_TRUE(ValidateText(bounded, huge)) << Err();
  EXPECT_FALSE(ValidateText(bounded, "9" + std::string(399, '9')));
  EXPECT_EQ(Err().rfind("$: 999", 0), 0U) << Err();
  api::SchemaFree(bounded);
  api::CompiledSchema* s =
      CompileText(R"({"type":"object","properties":{"i":{"type":"integer"}}})");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(ValidateText(s, R"({"n":-)" + huge + "}")) << Err();
  EXPECT_TRUE(ValidateText(s, R"({"i":-)" + huge + "}")) << Err();
  // Tiny numbers are not zero: 1e-400 is no integer.
  EXPECT_TRUE(ValidateText(s, R"({"n":1e-400})")) << Err();
  EXPECT_FALSE(ValidateText(s, R"({"i":1e-400})"));
  EXPECT_EQ(Err(), "$.i: expected integer, got number");
  api::SchemaFree(s);
}

// nlohmann's parse errors quote the bytes last read: a character cut after its first
// byte, or an invalid byte. The facade replaces what is not UTF-8 with U+FFFD, so the
// message ereport gets is valid in a UTF-8 database (found by test/fuzz).
TEST_F(SchemaApi, ParseErrorMessagesAreValidUtf8) {
  EXPECT_EQ(CompileText("{\"a\"\xF0\x9F\x98\x80:1}"), nullptr);
  EXPECT_NE(Err().find("last read: '\"a\"\xEF\xBF\xBD'"), std::string::npos) << Err();
  api::CompiledSchema* s = CompileText("{}");
  ASSERT_NE(s, nullptr);
  EXPECT_FALSE(ValidateText(s, "\"\xff\""));
  EXPECT_NE(Err().find("ill-formed UTF-8 byte; last read: '\"\xEF\xBF\xBD'"), std::string::npos)
      << Err();
  api::SchemaFree(s);
}

TEST(SchemaApiTruncation, ReplacementCharacterIsNotCut) {
  // "invalid JSON: " is 14 bytes; an invalid byte in the quoted token becomes 3 bytes of
  // U+FFFD, which must fit whole or not at all.
  api::CompiledSchema* s = api::SchemaCompile("{}", 2, nullptr, 0);
  ASSERT_NE(s, nullptr);
  std::array<char, 512> full{};
  EXPECT_FALSE(api::SchemaValidate(s, "\xff", 1, full.data(), full.size()));
  const std::string message = full.data();
  const std::size_t at = message.find("\xEF\xBF\xBD");
  ASSERT_NE(at, std::string::npos) << message;
  std::array<char, 512> cut{};
  EXPECT_FALSE(api::SchemaValidate(s, "\xff", 1, cut.data(), at + 2));  // room for 1 of 3 bytes
  EXPECT_EQ(std::string(cut.data()), message.substr(0, at));
  api::SchemaFree(s);
}

TEST(SchemaApiTruncation, MessageIsTruncatedOnCharacterBoundary) {
  const std::string schema = R"({"required":["ключключключ"]})";
  api::CompiledSchema* s = api::SchemaCompile(schema.data(), schema.size(), nullptr, 0);
  ASSERT_NE(s, nullptr);
  // Full message: $: missing required property "ключключключ"
  // 31 ASCII bytes precede the Cyrillic text; 35 bytes cut inside the 3rd letter.
  std::array<char, 36> small{};
  small.fill('#');
  EXPECT_FALSE(api::SchemaValidate(s, "{}", 2, small.data(), small.size()));
  EXPECT_STREQ(small.data(), "$: missing required property \"кл");
  std::array<char, 1> tiny{'#'};
  EXPECT_FALSE(api::SchemaValidate(s, "{}", 2, tiny.data(), tiny.size()));
  EXPECT_EQ(tiny[0], '\0');
  api::SchemaFree(s);
}

}  // namespace

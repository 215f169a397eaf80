#include <gtest/gtest.h>

#include "sink/registry.hpp"
#include "sink/webhook_options.hpp"

using evproc::sink::MaskSink;
using evproc::sink::ValidateSink;
using evproc::sink::ValidationContext;
using nlohmann::json;

namespace {
ValidationContext Allowing(const char *list, bool superuser = false) {
  ValidationContext context;
  context.allowed_destinations = list;
  context.superuser = superuser;
  return context;
}
std::string ProblemOption(const json &sink, const ValidationContext &context) {
  auto problem = ValidateSink(sink, context);
  return problem ? problem->option : "";
}
}  // namespace

TEST(WebhookOptions, AcceptsAValidSink) {
  json sink = {{"type", "webhook"},
               {"url", "https://hooks.example.com/in?x=1"},
               {"mode", "batch"},
               {"headers", {{"Authorization", "Bearer abc"}}},
               {"secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
               {"timeout_ms", 2000},
               {"max_in_flight", 4}};
  EXPECT_EQ(ProblemOption(sink, Allowing("hooks.example.com")), "");
  evproc::sink::WebhookOptions options;
  ASSERT_FALSE(evproc::sink::ParseWebhookOptions(sink, &options).has_value());
  EXPECT_TRUE(options.batch);
  EXPECT_EQ(options.host, "hooks.example.com");
  EXPECT_EQ(options.timeout_ms, 2000);
  EXPECT_EQ(options.key.size(), 24u);
}

TEST(WebhookOptions, NamesTheBadOption) {
  auto allow = Allowing("hooks.example.com,127.0.0.1");
  EXPECT_EQ(ProblemOption(json::array(), allow), "sink");
  EXPECT_EQ(ProblemOption({{"url", "https://hooks.example.com"}}, allow), "type");
  EXPECT_EQ(ProblemOption({{"type", "carrier-pigeon"}}, allow), "type");
  json base = {{"type", "webhook"}, {"url", "https://hooks.example.com/"}};
  auto with = [&](const char *name, json value) {
    json sink = base;
    sink[name] = std::move(value);
    return ProblemOption(sink, allow);
  };
  EXPECT_EQ(with("url", "ftp://hooks.example.com/"), "url");
  EXPECT_EQ(with("url", "https://user:pw@hooks.example.com/"), "url");
  EXPECT_EQ(with("url", "https://internal.example.com/"), "url");
  EXPECT_EQ(with("url", "http://localhost:8080/"), "url");
  EXPECT_EQ(with("url", "http://127.0.0.1:8080/"), "");
  EXPECT_EQ(with("mode", "stream"), "mode");
  EXPECT_EQ(with("timeout_ms", 0), "timeout_ms");
  EXPECT_EQ(with("timeout_ms", "10s"), "timeout_ms");
  EXPECT_EQ(with("connect_timeout_ms", 60001), "connect_timeout_ms");
  EXPECT_EQ(with("max_in_flight", 257), "max_in_flight");
  EXPECT_EQ(with("retry_after_cap_ms", -1), "retry_after_cap_ms");
  EXPECT_EQ(with("secret", "short"), "secret");
  EXPECT_EQ(with("secret", "whsec_!!!!"), "secret");
  EXPECT_EQ(with("headers", {{"webhook-id", "x"}}), "headers.webhook-id");
  EXPECT_EQ(with("headers", {{"X-Bad", "a\r\nInjected: 1"}}), "headers.X-Bad");
  EXPECT_EQ(with("headers", {{"Bad Name", "a"}}), "headers.Bad Name");
  EXPECT_EQ(with("follow_redirects", "yes"), "follow_redirects");
  EXPECT_EQ(with("tls_verify", false), "tls_verify");
  EXPECT_EQ(with("colour", "blue"), "colour");
  json insecure = base;
  insecure["tls_verify"] = false;
  EXPECT_EQ(ProblemOption(insecure, Allowing("hooks.example.com", true)), "");
}

TEST(WebhookOptions, MasksSecretsAndCredentialHeaders) {
  json sink = {{"type", "webhook"},
               {"url", "https://hooks.example.com/in"},
               {"headers", {{"Authorization", "Bearer abc"}}},
               {"secret", "0123456789abcdef0123"}};
  json masked = MaskSink(sink);
  EXPECT_EQ(masked["secret"], "********");
  EXPECT_EQ(masked["headers"]["Authorization"], "********");
  EXPECT_EQ(masked["url"], "https://hooks.example.com/in");
  EXPECT_EQ(MaskSink({{"type", "unknown"}, {"password", "x"}}), json({{"type", "unknown"}}));
}

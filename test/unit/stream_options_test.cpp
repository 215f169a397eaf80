#include <gtest/gtest.h>

#include "sink/registry.hpp"
#include "sink/stream_options.hpp"

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
json Nats(json extra = json::object()) {
  json sink = {{"type", "nats"},
               {"servers", {"nats://127.0.0.1:4222", "tls://nats-2.example.com:4222"}},
               {"subject", "evproc.{topic}.{key}"}};
  sink.update(extra);
  return sink;
}
json Kafka(json extra = json::object()) {
  json sink = {{"type", "kafka"},
               {"brokers", "127.0.0.1:9092, kafka.example.com:9093"},
               {"topic", "orders.v1"}};
  sink.update(extra);
  return sink;
}
}  // namespace

TEST(NatsOptions, AcceptsAValidSink) {
  auto allowed = Allowing("127.0.0.1,*.example.com");
  EXPECT_EQ(ProblemOption(Nats({{"token", "s3cret"}, {"timeout_ms", 2000}}), allowed), "");
  evproc::sink::NatsOptions options;
  ASSERT_FALSE(evproc::sink::ParseNatsOptions(Nats(), &options).has_value());
  ASSERT_EQ(options.servers.size(), 2u);
  EXPECT_EQ(options.servers[0].host, "127.0.0.1");
  EXPECT_EQ(options.servers[1].host, "nats-2.example.com");
  EXPECT_TRUE(options.tls);  // a tls:// server
  EXPECT_EQ(options.subject->Render("orders", true, "a.b", "s", 0), "evproc.orders.a%2Eb");
  // One server as a string, without a scheme.
  EXPECT_EQ(ProblemOption({{"type", "nats"}, {"servers", "127.0.0.1:4222"}}, allowed), "");
}

TEST(NatsOptions, NamesTheBadOption) {
  auto allowed = Allowing("127.0.0.1,*.example.com");
  EXPECT_EQ(ProblemOption(Nats({{"subjct", "x"}}), allowed), "subjct");
  EXPECT_EQ(ProblemOption(Nats({{"subject", "a.*"}}), allowed), "subject");
  EXPECT_EQ(ProblemOption(Nats({{"servers", json::array()}}), allowed), "servers");
  EXPECT_EQ(ProblemOption(Nats({{"servers", {"nats://u:p@127.0.0.1:4222"}}}), allowed), "servers");
  EXPECT_EQ(ProblemOption(Nats({{"servers", {"http://127.0.0.1"}}}), allowed), "servers");
  EXPECT_EQ(ProblemOption(Nats({{"user", "me"}}), allowed), "password");
  EXPECT_EQ(ProblemOption(Nats({{"token", "t"}, {"user", "u"}, {"password", "p"}}), allowed),
            "token");
  EXPECT_EQ(ProblemOption(Nats({{"timeout_ms", 0}}), allowed), "timeout_ms");
  EXPECT_EQ(ProblemOption(Nats({{"max_in_flight", 5000}}), allowed), "max_in_flight");
  EXPECT_EQ(ProblemOption(Nats({{"source", "a b"}}), allowed), "source");
  EXPECT_EQ(ProblemOption(Nats({{"token", "a\nb"}}), allowed), "token");
  EXPECT_EQ(ProblemOption(Nats({{"tls", false}}), allowed), "tls");
}

TEST(NatsOptions, DestinationsAndTlsVerifyAreTheSuperusers) {
  EXPECT_EQ(ProblemOption(Nats(), Allowing("*.example.com")), "servers");  // loopback
  EXPECT_EQ(ProblemOption(Nats(), Allowing("")), "servers");
  EXPECT_EQ(ProblemOption(Nats({{"tls_verify", false}}), Allowing("127.0.0.1,*.example.com")),
            "tls_verify");
  EXPECT_EQ(ProblemOption(Nats({{"tls_verify", false}}), Allowing("127.0.0.1,*.example.com", true)),
            "");
}

TEST(NatsOptions, SecretsAreMasked) {
  json masked = MaskSink(Nats({{"token", "s3cret"}}));
  EXPECT_EQ(masked["token"], "********");
  EXPECT_EQ(masked["subject"], "evproc.{topic}.{key}");
  masked = MaskSink(Nats({{"user", "u"}, {"password", "pw"}}));
  EXPECT_EQ(masked["password"], "********");
  EXPECT_EQ(masked["user"], "u");
  masked = MaskSink(Nats({{"nkey", "UABC"}, {"nkey_seed", "SUABC"}}));
  EXPECT_EQ(masked["nkey_seed"], "********");
  EXPECT_EQ(masked.dump().find("SUABC"), std::string::npos);
}

TEST(KafkaOptions, AcceptsAndRefuses) {
  auto allowed = Allowing("127.0.0.1,*.example.com");
  EXPECT_EQ(ProblemOption(Kafka(), allowed), "");
  evproc::sink::KafkaOptions options;
  ASSERT_FALSE(evproc::sink::ParseKafkaOptions(Kafka(), &options).has_value());
  ASSERT_EQ(options.hosts.size(), 2u);
  EXPECT_EQ(options.hosts[1], "kafka.example.com");
  EXPECT_EQ(ProblemOption(Kafka(), Allowing("*.example.com")), "brokers");
  EXPECT_EQ(ProblemOption(Kafka({{"topic", "a b"}}), allowed), "topic");
  EXPECT_EQ(ProblemOption(Kafka({{"brokers", ""}}), allowed), "brokers");
  EXPECT_EQ(ProblemOption(Kafka({{"brokers", "PLAINTEXT://h:1"}}), allowed), "brokers");
  EXPECT_EQ(ProblemOption(Kafka({{"compression", "brotli"}}), allowed), "compression");
  EXPECT_EQ(ProblemOption(Kafka({{"security_protocol", "sasl_ssl"}}), allowed), "sasl_mechanism");
  EXPECT_EQ(ProblemOption(Kafka({{"sasl_username", "u"}}), allowed), "security_protocol");
  EXPECT_EQ(ProblemOption(Kafka({{"acks", "1"}}), allowed), "acks");  // not an option
  EXPECT_EQ(ProblemOption(Kafka({{"tls_verify", false}}), allowed), "tls_verify");
  json sasl = Kafka({{"security_protocol", "sasl_ssl"},
                     {"sasl_mechanism", "SCRAM-SHA-512"},
                     {"sasl_username", "u"},
                     {"sasl_password", "pw"}});
  EXPECT_EQ(ProblemOption(sasl, allowed), "");
  EXPECT_EQ(MaskSink(sasl)["sasl_password"], "********");
  EXPECT_EQ(MaskSink(sasl)["sasl_username"], "u");
}

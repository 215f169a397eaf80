#include <gtest/gtest.h>

#include <librdkafka/rdkafka.h>
#include <nats/status.h>

#include "core/stream_naming.hpp"

using evproc::core::ClassifyKafka;
using evproc::core::ClassifyNats;
using evproc::core::HeaderValue;
using evproc::core::StreamFailure;
using evproc::core::StreamMessageId;
using evproc::core::SubjectTemplate;
using evproc::core::SubjectToken;
using evproc::core::SubjectTopic;

namespace {
std::string TemplateError(const char *text) {
  std::string error;
  auto parsed = SubjectTemplate::Parse(text, &error);
  return parsed ? "" : error;
}
}  // namespace

TEST(SubjectTemplate, RendersPlaceholders) {
  std::string error;
  auto subject = SubjectTemplate::Parse("evproc.{topic}.{key}", &error);
  ASSERT_TRUE(subject.has_value()) << error;
  EXPECT_TRUE(subject->uses_key());
  EXPECT_EQ(subject->Render("orders.eu", true, "customer-7", "s", 3),
            "evproc.orders.eu.customer-7");
  EXPECT_EQ(subject->Render("orders", false, "", "s", 3), "evproc.orders.%00");
  auto other = SubjectTemplate::Parse("out-{subscription}.p{partition}.{topic}", &error);
  ASSERT_TRUE(other.has_value()) << error;
  EXPECT_FALSE(other->uses_key());
  EXPECT_EQ(other->Render("t:1", true, "k", "my sub", 12), "out-my%20sub.p12.t:1");
}

TEST(SubjectTemplate, RefusesBadTemplates) {
  EXPECT_EQ(TemplateError("{topic}"), "");
  EXPECT_NE(TemplateError(""), "");
  EXPECT_NE(TemplateError(".a"), "");
  EXPECT_NE(TemplateError("a."), "");
  EXPECT_NE(TemplateError("a..b"), "");
  EXPECT_NE(TemplateError("a.*"), "");
  EXPECT_NE(TemplateError("a.>"), "");
  EXPECT_NE(TemplateError("a b"), "");
  EXPECT_NE(TemplateError("a.{nope}"), "");
  EXPECT_NE(TemplateError("a.{topic"), "");
  EXPECT_NE(TemplateError(std::string(201, 'a').c_str()), "");
  EXPECT_NE(TemplateError("a.{key"), "");
}

TEST(SubjectTemplate, KeysAreOneTokenAndDistinct) {
  EXPECT_EQ(SubjectToken("a.b"), "a%2Eb");
  EXPECT_EQ(SubjectToken("a*b>c d"), "a%2Ab%3Ec%20d");
  EXPECT_EQ(SubjectToken("100%"), "100%25");
  EXPECT_EQ(SubjectToken(""), "%");
  EXPECT_EQ(SubjectToken("\xc3\xa9"), "%C3%A9");
  // Distinct keys, distinct tokens: "%" itself is encoded.
  EXPECT_NE(SubjectToken("%2E"), SubjectToken("."));
  EXPECT_EQ(SubjectToken("%2E").find('.'), std::string::npos);
}

TEST(SubjectTemplate, TopicDotsAreSeparatorsUnlessEmptyTokens) {
  EXPECT_EQ(SubjectTopic("orders.eu"), "orders.eu");
  EXPECT_EQ(SubjectTopic("a..b"), "a%2E%2Eb");
  EXPECT_EQ(SubjectTopic("a."), "a%2E");
  EXPECT_EQ(SubjectTopic("x:y-z_1"), "x:y-z_1");
}

TEST(StreamMessageId, StableAndDistinct) {
  EXPECT_EQ(StreamMessageId("7301.16384", "orders_out", 42, false),
            "evproc:7301.16384:orders_out:42");
  EXPECT_EQ(StreamMessageId("7301.16384", "orders_out", 42, false),
            StreamMessageId("7301.16384", "orders_out", 42, false));
  EXPECT_NE(StreamMessageId("a", "s", 42, false), StreamMessageId("b", "s", 42, false));
  EXPECT_NE(StreamMessageId("a", "s", 42, false), StreamMessageId("a", "s", 42, true));
  EXPECT_EQ(StreamMessageId("a", "s\n", 1, true), "evproc:a:s%0A:1:replay");
}

TEST(HeaderValue, EncodesLineBreaks) {
  EXPECT_EQ(HeaderValue("a\r\nb"), "a%0D%0Ab");
  EXPECT_EQ(HeaderValue("plain text"), "plain text");
}

TEST(ClassifyNats, BrokerFailuresRetryRefusalsAreDeadLetters) {
  EXPECT_EQ(ClassifyNats(NATS_TIMEOUT, 0), StreamFailure::kRetry);
  EXPECT_EQ(ClassifyNats(NATS_NO_RESPONDERS, 0), StreamFailure::kRetry);
  EXPECT_EQ(ClassifyNats(NATS_CONNECTION_CLOSED, 0), StreamFailure::kRetry);
  EXPECT_EQ(ClassifyNats(NATS_NO_SERVER, 0), StreamFailure::kRetry);
  EXPECT_EQ(ClassifyNats(NATS_MAX_PAYLOAD, 0), StreamFailure::kRefused);
  EXPECT_EQ(ClassifyNats(NATS_ERR, JSStreamMessageExceedsMaximumErr), StreamFailure::kRefused);
  EXPECT_EQ(ClassifyNats(NATS_ERR, JSStreamStoreFailedErr), StreamFailure::kRetry);
  EXPECT_EQ(ClassifyNats(NATS_ERR, JSClusterNotAvailErr), StreamFailure::kRetry);
  EXPECT_EQ(ClassifyNats(NATS_ERR, JSStreamNotMatchErr), StreamFailure::kFatal);
  EXPECT_EQ(ClassifyNats(NATS_CONNECTION_AUTH_FAILED, 0), StreamFailure::kFatal);
  EXPECT_EQ(ClassifyNats(NATS_NOT_PERMITTED, 0), StreamFailure::kFatal);
}

TEST(ClassifyKafka, FatalPausesTooLargeIsDeadRestRetries) {
  EXPECT_EQ(ClassifyKafka(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, false), StreamFailure::kRetry);
  EXPECT_EQ(ClassifyKafka(RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, false),
            StreamFailure::kRetry);
  EXPECT_EQ(ClassifyKafka(RD_KAFKA_RESP_ERR__TRANSPORT, false), StreamFailure::kRetry);
  EXPECT_EQ(ClassifyKafka(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, false), StreamFailure::kRefused);
  EXPECT_EQ(ClassifyKafka(RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE, false), StreamFailure::kRefused);
  EXPECT_EQ(ClassifyKafka(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, false),
            StreamFailure::kFatal);
  EXPECT_EQ(ClassifyKafka(RD_KAFKA_RESP_ERR__TRANSPORT, true), StreamFailure::kFatal);
}

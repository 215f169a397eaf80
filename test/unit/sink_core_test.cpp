#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include "core/destination.hpp"
#include "core/webhook_answer.hpp"
#include "core/webhook_signature.hpp"

using evproc::core::AnswerClass;
using evproc::core::ClassifyStatus;
using evproc::core::DestinationList;
using evproc::core::RetryAfterMs;

TEST(WebhookAnswer, Classes) {
  EXPECT_EQ(ClassifyStatus(200), AnswerClass::kDelivered);
  EXPECT_EQ(ClassifyStatus(204), AnswerClass::kDelivered);
  EXPECT_EQ(ClassifyStatus(429), AnswerClass::kRetryAfter);
  EXPECT_EQ(ClassifyStatus(503), AnswerClass::kRetryAfter);
  EXPECT_EQ(ClassifyStatus(500), AnswerClass::kRetry);
  EXPECT_EQ(ClassifyStatus(502), AnswerClass::kRetry);
  for (long status : {408L, 409L, 425L}) EXPECT_EQ(ClassifyStatus(status), AnswerClass::kRetry);
  for (long status : {400L, 401L, 403L, 404L, 413L, 422L}) {
    EXPECT_EQ(ClassifyStatus(status), AnswerClass::kRefused);
  }
  EXPECT_EQ(ClassifyStatus(410), AnswerClass::kGone);
  EXPECT_EQ(ClassifyStatus(301), AnswerClass::kRedirect);
  EXPECT_EQ(ClassifyStatus(0), AnswerClass::kRetry);
  EXPECT_TRUE(evproc::core::FeedsBreaker(AnswerClass::kRetry));
  EXPECT_FALSE(evproc::core::FeedsBreaker(AnswerClass::kRefused));
}

TEST(WebhookAnswer, RetryAfter) {
  std::time_t now = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT
  EXPECT_EQ(RetryAfterMs("120", now, 600000), 120000);
  EXPECT_EQ(RetryAfterMs(" 0 ", now, 600000), 0);
  EXPECT_EQ(RetryAfterMs("99999999999999", now, 600000), 600000);
  EXPECT_EQ(RetryAfterMs("Sun, 06 Nov 1994 08:49:47 GMT", now, 600000), 10000);
  EXPECT_EQ(RetryAfterMs("Sun, 06 Nov 1994 08:00:00 GMT", now, 600000), 0);
  EXPECT_EQ(RetryAfterMs("", now, 600000), -1);
  EXPECT_EQ(RetryAfterMs("-5", now, 600000), -1);
  EXPECT_EQ(RetryAfterMs("1.5", now, 600000), -1);
  EXPECT_EQ(RetryAfterMs("Sunday, 06-Nov-94 08:49:37 GMT", now, 600000), -1);
  EXPECT_EQ(RetryAfterMs("Sun, 06 Xyz 1994 08:49:47 GMT", now, 600000), -1);
}

TEST(WebhookSignature, Base64RoundTrip) {
  EXPECT_EQ(evproc::core::Base64Encode(""), "");
  EXPECT_EQ(evproc::core::Base64Encode("f"), "Zg==");
  EXPECT_EQ(evproc::core::Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(evproc::core::Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(*evproc::core::Base64Decode("Zm9vYg=="), "foob");
  EXPECT_FALSE(evproc::core::Base64Decode("Zm9v!").has_value());
}

// The example of the Standard Webhooks specification's reference libraries.
TEST(WebhookSignature, StandardWebhooksExample) {
  auto key = evproc::core::WebhookKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(evproc::core::WebhookSignature(*key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                                           R"({"test": 2432232314})"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  EXPECT_EQ(*evproc::core::WebhookKey("plain-secret"), "plain-secret");
  EXPECT_FALSE(evproc::core::WebhookKey("whsec_***").has_value());
}

namespace {
sockaddr_storage V4(const char *text) {
  sockaddr_storage storage{};
  auto *in = reinterpret_cast<sockaddr_in *>(&storage);
  in->sin_family = AF_INET;
  inet_pton(AF_INET, text, &in->sin_addr);
  return storage;
}
sockaddr_storage V6(const char *text) {
  sockaddr_storage storage{};
  auto *in = reinterpret_cast<sockaddr_in6 *>(&storage);
  in->sin6_family = AF_INET6;
  inet_pton(AF_INET6, text, &in->sin6_addr);
  return storage;
}
const sockaddr *At(const sockaddr_storage &storage) {
  return reinterpret_cast<const sockaddr *>(&storage);
}
}  // namespace

TEST(Destination, ParsesAndRefusesGarbage) {
  std::string error;
  EXPECT_TRUE(DestinationList::Parse("", &error)->empty());
  EXPECT_TRUE(
      DestinationList::Parse(" hooks.example.com , *.corp.example, 10.0.0.0/8, ::1 ", &error)
          .has_value());
  EXPECT_FALSE(DestinationList::Parse("10.0.0.0/33", &error).has_value());
  EXPECT_NE(error.find("10.0.0.0/33"), std::string::npos);
  EXPECT_FALSE(DestinationList::Parse("http://x", &error).has_value());
  EXPECT_FALSE(DestinationList::Parse("host/8", &error).has_value());
}

TEST(Destination, Hosts) {
  std::string error;
  auto list = *DestinationList::Parse("hooks.example.com,*.corp.example,10.1.0.0/16", &error);
  EXPECT_TRUE(list.HostAllowed("hooks.example.com"));
  EXPECT_TRUE(list.HostAllowed("HOOKS.example.com."));
  EXPECT_FALSE(list.HostAllowed("evil.hooks.example.com"));
  EXPECT_TRUE(list.HostAllowed("a.corp.example"));
  EXPECT_FALSE(list.HostAllowed("corp.example"));
  EXPECT_FALSE(list.HostAllowed("xcorp.example"));
  EXPECT_TRUE(list.HostAllowed("10.1.2.3"));
  EXPECT_FALSE(list.HostAllowed("10.2.0.1"));
  EXPECT_FALSE(list.HostAllowed("localhost"));
}

TEST(Destination, AddressesActuallyConnectedTo) {
  std::string error;
  auto list = *DestinationList::Parse("hooks.example.com,10.1.0.0/16,::1", &error);
  // A listed name may reach ordinary addresses, never loopback or link-local ones.
  EXPECT_TRUE(list.AddressAllowed(At(V4("93.184.216.34")), true));
  EXPECT_FALSE(list.AddressAllowed(At(V4("93.184.216.34")), false));
  EXPECT_FALSE(list.AddressAllowed(At(V4("127.0.0.1")), true));
  EXPECT_FALSE(list.AddressAllowed(At(V4("169.254.169.254")), true));
  EXPECT_FALSE(list.AddressAllowed(At(V4("0.0.0.0")), true));
  EXPECT_FALSE(list.AddressAllowed(At(V6("fe80::1")), true));
  EXPECT_FALSE(list.AddressAllowed(At(V6("::ffff:127.0.0.1")), true));
  // Listed blocks admit their addresses, special or not, whatever the name.
  EXPECT_TRUE(list.AddressAllowed(At(V4("10.1.200.3")), false));
  EXPECT_TRUE(list.AddressAllowed(At(V6("::ffff:10.1.0.9")), false));
  EXPECT_TRUE(list.AddressAllowed(At(V6("::1")), false));
  EXPECT_FALSE(list.AddressAllowed(At(V4("10.2.0.1")), false));
  auto loopback = *DestinationList::Parse("127.0.0.1", &error);
  EXPECT_TRUE(loopback.AddressAllowed(At(V4("127.0.0.1")), false));
  EXPECT_FALSE(loopback.AddressAllowed(At(V4("127.0.0.2")), false));
}

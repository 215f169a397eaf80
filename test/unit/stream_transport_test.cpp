// The stream transports against real brokers, without PostgreSQL: a nats-server with
// JetStream started by the test (Debian's nats-server), and librdkafka's mock cluster
// inside this process (Debian has no Kafka broker). Checks what each answer becomes
// (delivered, duplicate, refused, retry, held) and what the broker holds afterwards.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <nats/nats.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "sink/stream.hpp"
#include "sink/transport.hpp"

using evproc::sink::Batch;
using evproc::sink::Completion;
using evproc::sink::Limits;
using evproc::sink::Message;
using evproc::sink::Subscription;
using evproc::sink::Transport;
using evproc::sink::Verdict;
using nlohmann::json;

namespace {

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address);
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

// A nats-server with JetStream (file storage in a fresh directory) on a free port.
class NatsServer {
 public:
  NatsServer() {
    port_ = FreePort();
    char dir[] = "/tmp/evproc-nats-XXXXXX";
    dir_ = mkdtemp(dir);
    pid_ = fork();
    if (pid_ == 0) {
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      std::string port = std::to_string(port_);
      execl("/usr/sbin/nats-server", "nats-server", "-js", "-a", "127.0.0.1", "-p", port.c_str(),
            "-sd", dir_.c_str(), static_cast<char *>(nullptr));
      _exit(127);
    }
    url_ = "nats://127.0.0.1:" + std::to_string(port_);
    for (int i = 0; i < 100; ++i) {
      if (natsConnection_ConnectTo(&connection_, url_.c_str()) == NATS_OK) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    natsConnection_JetStream(&js_, connection_, nullptr);
  }
  ~NatsServer() {
    jsCtx_Destroy(js_);
    natsConnection_Destroy(connection_);
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    std::string command = "rm -rf " + dir_;
    if (system(command.c_str()) != 0) ADD_FAILURE() << "could not remove " << dir_;
  }
  void AddStream(const char *name, const char *subject, int64_t max_msg_size) {
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    config.Name = name;
    const char *subjects[] = {subject};
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    config.Storage = js_FileStorage;
    config.MaxMsgSize = static_cast<int32_t>(max_msg_size);
    jsStreamInfo *info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    ASSERT_EQ(js_AddStream(&info, js_, &config, nullptr, &code), NATS_OK) << code;
    jsStreamInfo_Destroy(info);
  }
  // The stream's messages in order: (subject, Nats-Msg-Id, Evproc-Key).
  std::vector<std::vector<std::string>> Read(const char *stream) {
    std::vector<std::vector<std::string>> out;
    jsStreamInfo *info = nullptr;
    if (js_GetStreamInfo(&info, js_, stream, nullptr, nullptr) != NATS_OK) return out;
    uint64_t last = info->State.LastSeq;
    jsStreamInfo_Destroy(info);
    for (uint64_t seq = 1; seq <= last; ++seq) {
      natsMsg *msg = nullptr;
      if (js_GetMsg(&msg, js_, stream, seq, nullptr, nullptr) != NATS_OK) continue;
      const char *id = "";
      const char *key = "";
      natsMsgHeader_Get(msg, "Nats-Msg-Id", &id);
      natsMsgHeader_Get(msg, "Evproc-Key", &key);
      out.push_back({natsMsg_GetSubject(msg), id, key});
      natsMsg_Destroy(msg);
    }
    return out;
  }
  void Stop() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  const std::string &url() const { return url_; }

 private:
  int port_ = 0;
  pid_t pid_ = -1;
  std::string dir_;
  std::string url_;
  natsConnection *connection_ = nullptr;
  jsCtx *js_ = nullptr;
};

std::shared_ptr<const Subscription> MakeSubscription(json options, int32_t id = 1) {
  auto subscription = std::make_shared<Subscription>();
  subscription->id = id;
  subscription->name = "out";
  subscription->topic = "orders";
  subscription->options = options.dump();
  subscription->options_version = 1;
  return subscription;
}

std::vector<Message> Messages(int count, int keys, size_t payload_bytes = 10) {
  std::vector<Message> messages;
  for (int i = 0; i < count; ++i) {
    Message message;
    message.event_id = 1000 + i;
    message.has_key = true;
    message.key = "k" + std::to_string(i % keys);
    message.has_type = true;
    message.type = "OrderCreated";
    message.payload =
        "{\"n\": " + std::to_string(i) + ", \"pad\": \"" + std::string(payload_bytes, 'x') + "\"}";
    message.enqueued_at = "2026-12-02 15:00:00+00";
    messages.push_back(message);
  }
  return messages;
}

// Runs one batch to its completion the way a sink worker does: poll, then wait on the
// transport's sockets at most for its timeout.
Completion RunBatch(Transport *transport, std::shared_ptr<const Subscription> subscription,
                    std::vector<Message> messages, int seconds = 20) {
  static uint64_t token = 0;
  Batch batch;
  batch.token = ++token;
  batch.subscription = subscription;
  batch.messages = std::move(messages);
  transport->Start(std::move(batch));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<Completion> done;
    transport->Poll(&done);
    if (!done.empty()) return done.front();
    std::vector<evproc::sink::WaitSocket> sockets;
    long timeout = -1;
    transport->Interest(&sockets, &timeout);
    std::vector<pollfd> fds;
    for (const auto &socket : sockets) {
      fds.push_back(pollfd{
          socket.fd,
          static_cast<short>((socket.readable ? POLLIN : 0) | (socket.writable ? POLLOUT : 0)), 0});
    }
    poll(fds.data(), fds.size(), timeout < 0 || timeout > 1000 ? 1000 : static_cast<int>(timeout));
  }
  ADD_FAILURE() << "the batch did not complete";
  return Completion{};
}

std::unique_ptr<Transport> Configured(std::unique_ptr<Transport> transport) {
  Limits limits;
  limits.allowed_destinations = "127.0.0.1";
  limits.max_in_flight_per_worker = 64;
  transport->Configure(limits);
  return transport;
}

int Count(const Completion &completion, Verdict verdict) {
  int count = 0;
  for (const auto &outcome : completion.outcomes) count += outcome.verdict == verdict ? 1 : 0;
  return count;
}

}  // namespace

TEST(NatsTransport, DeliversInKeyOrderOnceAndRefusesWhatTheStreamRefuses) {
  NatsServer server;
  server.AddStream("EVENTS", "evproc.>", 400);
  auto transport = Configured(evproc::sink::MakeNatsTransport());
  auto subscription = MakeSubscription({{"type", "nats"},
                                        {"servers", {server.url()}},
                                        {"subject", "evproc.{topic}.{key}"},
                                        {"source", "unit"},
                                        {"max_in_flight", 16}});
  // 200 events over 7 keys: all delivered, per key in order, each once.
  Completion first = RunBatch(transport.get(), subscription, Messages(200, 7));
  ASSERT_EQ(first.outcomes.size(), 200u);
  EXPECT_EQ(Count(first, Verdict::kDelivered), 200);
  EXPECT_EQ(first.stats.requests, 200);
  // The same events again (a re-publish after a crash): acknowledged as duplicates, the
  // stream still holds each once.
  Completion again = RunBatch(transport.get(), subscription, Messages(200, 7));
  EXPECT_EQ(Count(again, Verdict::kDelivered), 200);
  auto stored = server.Read("EVENTS");
  ASSERT_EQ(stored.size(), 200u);
  std::map<std::string, int> last_of_key;
  for (const auto &row : stored) {
    int n = std::stoi(row[1].substr(row[1].rfind(':') + 1)) - 1000;
    EXPECT_EQ(row[0], "evproc.orders." + row[2]);
    EXPECT_EQ(row[2], "k" + std::to_string(n % 7));
    auto found = last_of_key.find(row[2]);
    if (found != last_of_key.end()) {
      EXPECT_LT(found->second, n) << "key order";
    }
    last_of_key[row[2]] = n;
  }
  EXPECT_EQ(stored[0][1], "evproc:unit:out:1000");
  // A message over the stream's max_msg_size is refused (a dead letter with the server's
  // error); the later ones of its key are held; other keys go on.
  auto messages = Messages(6, 2);
  messages[2].payload = "{\"pad\": \"" + std::string(1000, 'y') + "\"}";  // key k0
  for (auto &message : messages) message.event_id += 5000;
  Completion refused = RunBatch(transport.get(), subscription, messages);
  EXPECT_EQ(refused.outcomes[2].verdict, Verdict::kRefused);
  EXPECT_FALSE(refused.outcomes[2].feeds_breaker);
  EXPECT_NE(refused.outcomes[2].context.find("jetstream_error_code"), std::string::npos)
      << refused.outcomes[2].context;
  EXPECT_EQ(refused.outcomes[4].verdict, Verdict::kHeld);       // k0, after the refused one
  EXPECT_EQ(refused.outcomes[0].verdict, Verdict::kDelivered);  // k0, before it
  EXPECT_EQ(refused.outcomes[1].verdict, Verdict::kDelivered);  // k1
  EXPECT_EQ(refused.outcomes[3].verdict, Verdict::kDelivered);
  EXPECT_EQ(refused.outcomes[5].verdict, Verdict::kDelivered);
}

TEST(NatsTransport, NoStreamAndNoServerAreRetriesThatFeedTheBreaker) {
  NatsServer server;
  auto transport = Configured(evproc::sink::MakeNatsTransport());
  // No stream captures the subject: no responders.
  auto subscription = MakeSubscription(
      {{"type", "nats"}, {"servers", {server.url()}}, {"subject", "nowhere.{topic}"}});
  Completion none = RunBatch(transport.get(), subscription, Messages(5, 5));
  EXPECT_EQ(none.outcomes[0].verdict, Verdict::kRetry);
  EXPECT_TRUE(none.outcomes[0].feeds_breaker);
  EXPECT_EQ(Count(none, Verdict::kDelivered), 0);
  EXPECT_EQ(Count(none, Verdict::kRetry) + Count(none, Verdict::kHeld), 5);
  // The server gone: the publish times out (libnats buffers it while reconnecting).
  server.Stop();
  auto gone = MakeSubscription({{"type", "nats"},
                                {"servers", {server.url()}},
                                {"subject", "evproc.{topic}"},
                                {"timeout_ms", 300}},
                               2);
  Completion down = RunBatch(transport.get(), gone, Messages(3, 1));
  EXPECT_EQ(down.outcomes[0].verdict, Verdict::kRetry);
  EXPECT_TRUE(down.outcomes[0].feeds_breaker);
  EXPECT_EQ(down.outcomes[1].verdict, Verdict::kHeld);
  // A destination the allow-list does not hold pauses the subscription.
  Limits limits;
  limits.allowed_destinations = "nats.example.com";
  transport->Configure(limits);
  Completion refused = RunBatch(
      transport.get(), MakeSubscription({{"type", "nats"}, {"servers", {server.url()}}}, 3),
      Messages(2, 1));
  EXPECT_EQ(refused.outcomes[0].verdict, Verdict::kFatal);
  EXPECT_NE(refused.outcomes[0].error.find("not allowed"), std::string::npos);
}

namespace {

// The mock cluster's topic as (key, evproc-event-id) in partition order.
std::vector<std::pair<std::string, std::string>> Consume(const std::string &brokers,
                                                         const char *topic, size_t expect) {
  std::vector<std::pair<std::string, std::string>> out;
  char error[256];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), error, sizeof error);
  rd_kafka_conf_set(conf, "group.id", "reader", error, sizeof error);
  rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", error, sizeof error);
  rd_kafka_t *consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error);
  rd_kafka_poll_set_consumer(consumer);
  rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(consumer, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (out.size() < expect && std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t *message = rd_kafka_consumer_poll(consumer, 200);
    if (message == nullptr) continue;
    if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const void *value = nullptr;
      size_t size = 0;
      rd_kafka_headers_t *headers = nullptr;
      std::string id;
      if (rd_kafka_message_headers(message, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR &&
          rd_kafka_header_get_last(headers, "evproc-event-id", &value, &size) ==
              RD_KAFKA_RESP_ERR_NO_ERROR) {
        id.assign(static_cast<const char *>(value), size);
      }
      out.emplace_back(std::string(static_cast<const char *>(message->key), message->key_len), id);
    }
    rd_kafka_message_destroy(message);
  }
  rd_kafka_consumer_close(consumer);
  rd_kafka_destroy(consumer);
  return out;
}

}  // namespace

TEST(KafkaTransport, DeliversOnceInKeyOrderThroughInjectedErrors) {
  char error[256];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
  ASSERT_NE(host, nullptr) << error;
  rd_kafka_mock_cluster_t *cluster = rd_kafka_mock_cluster_new(host, 3);
  ASSERT_NE(cluster, nullptr);
  ASSERT_EQ(rd_kafka_mock_topic_create(cluster, "orders.v1", 4, 3), RD_KAFKA_RESP_ERR_NO_ERROR);
  std::string brokers = rd_kafka_mock_cluster_bootstraps(cluster);
  auto transport = Configured(evproc::sink::MakeKafkaTransport());
  auto subscription = MakeSubscription(
      {{"type", "kafka"}, {"brokers", brokers}, {"topic", "orders.v1"}, {"timeout_ms", 10000}});
  Completion first = RunBatch(transport.get(), subscription, Messages(100, 9));
  EXPECT_EQ(Count(first, Verdict::kDelivered), 100);
  // Retriable broker errors on produce: librdkafka's idempotent producer retries them
  // without duplicates or reordering.
  rd_kafka_mock_push_request_errors(
      cluster, 0 /* Produce */, 4, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND);
  auto more = Messages(100, 9);
  for (auto &message : more) message.event_id += 100;
  Completion second = RunBatch(transport.get(), subscription, more);
  EXPECT_EQ(Count(second, Verdict::kDelivered), 100);
  // A permanent error for a message: a dead letter, the rest of its key held.
  rd_kafka_mock_push_request_errors(cluster, 0, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
  auto last = Messages(1, 1);
  last[0].event_id = 9999;
  Completion refused = RunBatch(transport.get(), subscription, last);
  EXPECT_EQ(refused.outcomes[0].verdict, Verdict::kRefused);
  EXPECT_FALSE(refused.outcomes[0].feeds_breaker);
  auto stored = Consume(brokers, "orders.v1", 200);
  EXPECT_EQ(stored.size(), 200u);
  std::map<std::string, int> ids;
  std::map<std::string, int> last_of_key;
  for (const auto &[key, id] : stored) {
    ++ids[id];
    int n = std::stoi(id);
    auto found = last_of_key.find(key);
    if (found != last_of_key.end()) {
      EXPECT_LT(found->second, n) << "key order of " << key;
    }
    last_of_key[key] = n;
  }
  EXPECT_EQ(ids.size(), 200u);  // each once
  transport.reset();
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(host);
}

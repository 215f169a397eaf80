// The Kafka transport: librdkafka's idempotent producer (enable.idempotence, acks=all),
// one per sink subscription. The event key is the message key, so Kafka's partitioner
// keeps a key on one partition; headers carry the event id, topic, type and more.
//
// Threads: librdkafka runs its own (it blocks every signal in them itself). Delivery
// reports are served by rd_kafka_poll(rk, 0) on the worker's thread only; librdkafka
// writes a byte to a pipe when its main queue gets something to serve
// (rd_kafka_queue_io_event_enable), and the sink worker waits on that pipe next to its
// latch. The only callback on librdkafka's threads is the connect check (the destination
// allow-list on every broker address, the discovered ones included): it reads an
// immutable list and calls connect(2), nothing else.
//
// Order: never two messages of one key in flight at once (transport.hpp), so a failed
// message cannot be overtaken by a later one of its key; the idempotent producer keeps
// its own retries in order and without duplicates. A batch counts delivered when every
// message's delivery report succeeded. A fatal producer error (rd_kafka_fatal_error)
// pauses the subscription with the reason; the producer is rebuilt for the next batch.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <stdexcept>

#include "core/destination.hpp"
#include "core/stream_naming.hpp"
#include "sink/stream.hpp"
#include "sink/stream_common.hpp"
#include "sink/stream_options.hpp"

namespace evproc::sink {

namespace {

class KafkaTransport;

struct Pending {
  uint64_t token = 0;
  size_t index = 0;
};

struct Producer {
  KafkaTransport *owner = nullptr;
  int32_t subscription = 0;
  int64_t options_version = 0;
  KafkaOptions options;
  core::DestinationList allowed;  // read by librdkafka's threads: never changed after start
  rd_kafka_t *rk = nullptr;
  rd_kafka_queue_t *main_queue = nullptr;
  std::map<uint64_t, Pending> pending;  // by the message's opaque
  std::string problem;                  // the producer could not be made: why
  std::string last_error;
};

// librdkafka's broker name: "[proto://]host:port/id".
std::string BrokerHost(const char *id) {
  std::string name = id != nullptr ? id : "";
  size_t scheme = name.find("://");
  size_t start = scheme == std::string::npos ? 0 : scheme + 3;
  size_t slash = name.find('/', start);
  return ServerHost(name.substr(start, slash == std::string::npos ? slash : slash - start));
}

int ConnectChecked(int socket, const sockaddr *address, int length, const char *id, void *opaque) {
  const auto *producer = static_cast<const Producer *>(opaque);
  bool host_listed = producer->allowed.HostAllowed(BrokerHost(id));
  if (!producer->allowed.AddressAllowed(address, host_listed)) return EACCES;
  if (connect(socket, address, static_cast<socklen_t>(length)) == -1 && errno != EINPROGRESS) {
    return errno;
  }
  return 0;
}

void OnDelivery(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque);
void OnError(rd_kafka_t * /*rk*/, int /*error*/, const char *reason, void *opaque) {
  static_cast<Producer *>(opaque)->last_error = reason != nullptr ? reason : "";
}

class KafkaTransport final : public Transport {
 public:
  KafkaTransport() {
    if (pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  }

  ~KafkaTransport() override {
    Abort();
    close(wake_[0]);
    close(wake_[1]);
  }

  void Configure(const Limits &limits) override {
    limits_ = limits;
    std::string error;
    auto parsed = core::DestinationList::Parse(limits.allowed_destinations, &error);
    destinations_ = parsed ? *parsed : core::DestinationList();
  }

  [[nodiscard]] bool HasRoom(const Subscription &subscription) const override {
    if (in_flight_ >= limits_.max_in_flight_per_worker) return false;
    return batch_of_subscription_.count(subscription.id) == 0;
  }

  void Start(Batch batch) override {
    auto state = std::make_unique<StreamBatch>(std::move(batch));
    const Subscription &subscription = *state->batch.subscription;
    Producer *producer = ProducerFor(subscription);
    if (!producer->problem.empty()) {
      for (size_t i = 0; i < state->outcomes.size(); ++i) {
        state->Decide(i, i == 0 ? Verdict::kFatal : Verdict::kHeld, producer->problem);
      }
    }
    uint64_t token = state->batch.token;
    batch_of_subscription_[subscription.id] = token;
    batches_[token] = std::move(state);
    Pump(batches_[token].get());
  }

  void Poll(std::vector<Completion> *done) override {
    char drain[256];
    while (read(wake_[0], drain, sizeof drain) > 0) {
    }
    for (auto &[subscription, producer] : producers_) {
      if (producer->rk == nullptr) continue;
      while (rd_kafka_poll(producer->rk, 0) > 0) {
      }
      char reason[512];
      rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(producer->rk, reason, sizeof reason);
      if (fatal != RD_KAFKA_RESP_ERR_NO_ERROR) FailAll(producer.get(), reason);
    }
    for (auto it = batches_.begin(); it != batches_.end();) {
      StreamBatch *state = it->second.get();
      Pump(state);
      if (state->Done()) {
        done->push_back(state->Complete());
        batch_of_subscription_.erase(state->batch.subscription->id);
        it = batches_.erase(it);
      } else {
        ++it;
      }
    }
    // A producer that failed for good is dropped: the next batch builds a new one.
    for (auto it = producers_.begin(); it != producers_.end();) {
      if (!it->second->problem.empty() &&
          batch_of_subscription_.count(it->second->subscription) == 0) {
        Destroy(it->second.get());
        it = producers_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void Interest(std::vector<WaitSocket> *sockets, long *timeout_ms) override {
    sockets->clear();
    sockets->push_back(WaitSocket{wake_[0], true, false});
    *timeout_ms = -1;
    for (const auto &[token, state] : batches_) {
      if (state->Done()) {
        *timeout_ms = 0;
        return;
      }
    }
    // librdkafka also has timers of its own (retries, message timeouts) whose results it
    // queues and signals through the pipe; one look a second while messages are out is
    // only a safety net.
    if (in_flight_ > 0) *timeout_ms = 1000;
  }

  [[nodiscard]] int InFlight() const override { return static_cast<int>(batches_.size()); }

  [[nodiscard]] int64_t LeaseMs(const Subscription &subscription, size_t messages) const override {
    KafkaOptions options;
    int64_t timeout = 30000;
    if (!ParseKafkaOptions(nlohmann::json::parse(subscription.options, nullptr, false), &options)) {
      timeout = options.timeout_ms;
    }
    int64_t worst = static_cast<int64_t>(messages) * (timeout + 1000);
    return std::min<int64_t>(std::max<int64_t>(worst, 60'000), int64_t{15} * 60 * 1000);
  }

  void Abort() override {
    for (auto &[subscription, producer] : producers_) Destroy(producer.get());
    producers_.clear();
    batches_.clear();
    batch_of_subscription_.clear();
    in_flight_ = 0;
  }

  // A delivery report (from rd_kafka_poll, on the worker's thread).
  void Delivered(Producer *producer, const rd_kafka_message_t *message) {
    auto opaque = reinterpret_cast<uintptr_t>(message->_private);
    auto found = producer->pending.find(opaque);
    if (found == producer->pending.end()) return;
    Pending pending = found->second;
    producer->pending.erase(found);
    --in_flight_;
    auto batch = batches_.find(pending.token);
    if (batch == batches_.end()) return;
    StreamBatch *state = batch->second.get();
    state->stats.latencies_us.push_back(StreamNowUs() - state->sent_us[pending.index]);
    if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ++state->stats.answers_2xx;
      state->Finished(pending.index, false);
      state->Decide(pending.index, Verdict::kDelivered);
      return;
    }
    char reason[512] = "";
    bool fatal =
        message->err == RD_KAFKA_RESP_ERR__FATAL &&
        rd_kafka_fatal_error(producer->rk, reason, sizeof reason) != RD_KAFKA_RESP_ERR_NO_ERROR;
    std::string text = fatal ? reason : rd_kafka_err2str(message->err);
    Failed(state, pending.index, message->err, fatal, text);
  }

 private:
  Producer *ProducerFor(const Subscription &subscription) {
    auto found = producers_.find(subscription.id);
    if (found != producers_.end() &&
        found->second->options_version == subscription.options_version) {
      return found->second.get();
    }
    if (found != producers_.end()) {
      Destroy(found->second.get());
      producers_.erase(found);
    }
    auto producer = std::make_unique<Producer>();
    producer->owner = this;
    producer->subscription = subscription.id;
    producer->options_version = subscription.options_version;
    producer->allowed = destinations_;
    Make(producer.get(), subscription);
    Producer *raw = producer.get();
    producers_[subscription.id] = std::move(producer);
    return raw;
  }

  void Make(Producer *producer, const Subscription &subscription) {
    auto parsed = nlohmann::json::parse(subscription.options, nullptr, false);
    if (auto problem = ParseKafkaOptions(parsed, &producer->options)) {
      producer->problem = "sink options: " + problem->message;
      return;
    }
    const KafkaOptions &options = producer->options;
    for (const std::string &host : options.hosts) {
      if (!destinations_.HostAllowed(host)) {
        producer->problem =
            "destination host \"" + host + "\" is not allowed by evproc.sink_allowed_destinations";
        return;
      }
    }
    char error[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    auto set = [&](const char *name, const std::string &value) {
      if (!producer->problem.empty()) return;
      if (rd_kafka_conf_set(conf, name, value.c_str(), error, sizeof error) != RD_KAFKA_CONF_OK) {
        producer->problem = std::string("Kafka configuration ") + name + ": " + error;
      }
    };
    set("bootstrap.servers", options.brokers);
    set("client.id", "evproc");
    set("enable.idempotence", "true");
    set("acks", "all");
    set("linger.ms", std::to_string(options.linger_ms));
    set("message.timeout.ms", std::to_string(options.timeout_ms));
    set("compression.codec", options.compression);
    set("security.protocol", options.security_protocol);
    if (!options.sasl_mechanism.empty()) {
      set("sasl.mechanism", options.sasl_mechanism);
      set("sasl.username", options.sasl_username);
      set("sasl.password", options.sasl_password);
    }
    if (!options.ssl_ca.empty()) set("ssl.ca.pem", options.ssl_ca);
    if (!options.tls_verify) set("enable.ssl.certificate.verification", "false");
    if (!producer->problem.empty()) {
      rd_kafka_conf_destroy(conf);
      return;
    }
    rd_kafka_conf_set_opaque(conf, producer);
    rd_kafka_conf_set_dr_msg_cb(conf, OnDelivery);
    rd_kafka_conf_set_error_cb(conf, OnError);
    rd_kafka_conf_set_connect_cb(conf, ConnectChecked);
    SignalsBlocked blocked;  // librdkafka blocks them in its threads too; belt and braces
    producer->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
    if (producer->rk == nullptr) {
      rd_kafka_conf_destroy(conf);
      producer->problem = std::string("Kafka producer: ") + error;
      return;
    }
    producer->main_queue = rd_kafka_queue_get_main(producer->rk);
    rd_kafka_queue_io_event_enable(producer->main_queue, wake_[1], "1", 1);
  }

  void Destroy(Producer *producer) {
    in_flight_ -= static_cast<int>(producer->pending.size());
    producer->pending.clear();
    if (producer->rk == nullptr) return;
    SignalsBlocked blocked;
    rd_kafka_queue_io_event_enable(producer->main_queue, -1, nullptr, 0);
    rd_kafka_queue_destroy(producer->main_queue);
    // Messages not yet delivered are dropped here; their leases end as failures.
    rd_kafka_purge(producer->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(producer->rk);
    producer->rk = nullptr;
    producer->main_queue = nullptr;
  }

  // The producer is unusable: its messages in flight end the subscription's batch with
  // the reason (the subscription pauses), the producer is rebuilt afterwards.
  void FailAll(Producer *producer, const std::string &reason) {
    producer->problem = std::string("Kafka fatal error: ") + reason;
    for (auto &[opaque, pending] : producer->pending) {
      auto batch = batches_.find(pending.token);
      if (batch == batches_.end()) continue;
      Failed(batch->second.get(), pending.index, RD_KAFKA_RESP_ERR__FATAL, true, reason);
    }
    in_flight_ -= static_cast<int>(producer->pending.size());
    producer->pending.clear();
  }

  void Failed(StreamBatch *state, size_t index, int error, bool fatal, const std::string &text) {
    std::string message = "Kafka: " + text;
    state->Finished(index, true);
    switch (core::ClassifyKafka(error, fatal)) {
      case core::StreamFailure::kRefused: {
        ++state->stats.answers_4xx;
        nlohmann::json context = {
            {"error", text},
            {"kafka_error", rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(error))}};
        state->Decide(index, Verdict::kRefused, message, false, context.dump());
        break;
      }
      case core::StreamFailure::kFatal: {
        // The first fatal message carries the reason (the subscription pauses); the
        // others of the batch are held.
        bool first = FirstFailure(state) == SIZE_MAX;
        ++state->stats.answers_4xx;
        state->stop = true;
        state->Decide(index, first ? Verdict::kFatal : Verdict::kHeld, message);
        break;
      }
      case core::StreamFailure::kRetry:
        ++state->stats.transport_errors;
        state->stop = true;
        state->Decide(index, Verdict::kRetry, message);
        break;
    }
  }

  // The first message of the batch decided as fatal; SIZE_MAX when none.
  static size_t FirstFailure(StreamBatch *state) {
    for (size_t i = 0; i < state->outcomes.size(); ++i) {
      if (state->state[i] == 2 && state->outcomes[i].verdict == Verdict::kFatal) return i;
    }
    return SIZE_MAX;
  }

  void Pump(StreamBatch *state) {
    auto found = producers_.find(state->batch.subscription->id);
    if (found == producers_.end()) return;
    Producer *producer = found->second.get();
    if (!producer->problem.empty() || producer->rk == nullptr) {
      for (size_t i = 0; i < state->state.size(); ++i) {
        if (state->state[i] != 0) continue;
        bool first = !state->stop;
        state->stop = true;
        state->Decide(i, first ? Verdict::kFatal : Verdict::kHeld, producer->problem);
      }
      return;
    }
    for (size_t i = 0; i < state->state.size(); ++i) {
      if (state->state[i] != 0) continue;
      int ready = state->Ready(i);
      if (ready <= 0) continue;
      if (static_cast<int>(producer->pending.size()) >= producer->options.max_in_flight ||
          in_flight_ >= limits_.max_in_flight_per_worker) {
        break;
      }
      Produce(producer, state, i);
    }
  }

  void Produce(Producer *producer, StreamBatch *state, size_t index) {
    const Subscription &subscription = *state->batch.subscription;
    const Message &message = state->batch.messages[index];
    const std::string &origin = StreamOrigin();
    std::string id = std::to_string(message.event_id);
    std::string message_id =
        core::StreamMessageId(origin, subscription.name, message.event_id, message.replay);
    std::string attempt = std::to_string(message.attempt);
    rd_kafka_headers_t *headers = rd_kafka_headers_new(10);
    auto header = [&](const char *name, const std::string &value) {
      rd_kafka_header_add(headers, name, -1, value.data(), static_cast<ssize_t>(value.size()));
    };
    header("evproc-event-id", id);
    header("evproc-message-id", message_id);
    header("evproc-topic", subscription.topic);
    if (message.has_type) header("evproc-type", message.type);
    header("evproc-subscription", subscription.name);
    header("evproc-enqueued-at", message.enqueued_at);
    header("evproc-attempt", attempt);
    if (message.replay) header("evproc-replay", "true");
    if (!message.headers.empty()) header("evproc-headers", message.headers);
    header("content-type", "application/json");
    uint64_t opaque = ++next_opaque_;
    rd_kafka_resp_err_t error;
    {
      SignalsBlocked blocked;
      error = rd_kafka_producev(
          producer->rk, RD_KAFKA_V_TOPIC(producer->options.topic.c_str()),
          RD_KAFKA_V_KEY(message.has_key ? message.key.data() : nullptr,
                         message.has_key ? message.key.size() : 0),
          RD_KAFKA_V_VALUE(const_cast<char *>(message.payload.data()), message.payload.size()),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers),
          // The opaque is a number naming the message, never dereferenced.
          // NOLINTNEXTLINE(performance-no-int-to-ptr)
          RD_KAFKA_V_OPAQUE(reinterpret_cast<void *>(static_cast<uintptr_t>(opaque))),
          RD_KAFKA_V_END);
    }
    ++state->stats.requests;
    if (error == RD_KAFKA_RESP_ERR_NO_ERROR) {
      state->Sent(index);
      state->stats.bytes_sent += static_cast<int64_t>(message.payload.size());
      producer->pending[opaque] = Pending{state->batch.token, index};
      ++in_flight_;
      return;
    }
    rd_kafka_headers_destroy(headers);  // not taken on failure
    if (error == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      // The producer's own queue is full: hold the rest, they come again (no attempt).
      state->stop = true;
      state->Decide(index, Verdict::kHeld);
      return;
    }
    state->Sent(index);
    char reason[512] = "";
    bool fatal =
        error == RD_KAFKA_RESP_ERR__FATAL &&
        rd_kafka_fatal_error(producer->rk, reason, sizeof reason) != RD_KAFKA_RESP_ERR_NO_ERROR;
    Failed(state, index, error, fatal, fatal ? reason : rd_kafka_err2str(error));
  }

  int wake_[2] = {-1, -1};
  Limits limits_;
  core::DestinationList destinations_;
  std::map<int32_t, std::unique_ptr<Producer>> producers_;
  std::map<uint64_t, std::unique_ptr<StreamBatch>> batches_;
  std::map<int32_t, uint64_t> batch_of_subscription_;
  uint64_t next_opaque_ = 0;
  int in_flight_ = 0;
};

void OnDelivery(rd_kafka_t * /*rk*/, const rd_kafka_message_t *message, void *opaque) {
  auto *producer = static_cast<Producer *>(opaque);
  producer->owner->Delivered(producer, message);
}

}  // namespace

std::unique_ptr<Transport> MakeKafkaTransport() { return std::make_unique<KafkaTransport>(); }

}  // namespace evproc::sink

// The NATS JetStream transport: libnats' asynchronous JetStream publish (js_PublishMsgAsync)
// with one connection per sink subscription.
//
// Threads: libnats runs its own (reading, flushing, reconnecting, delivering the stream's
// acknowledgements), and this transport starts one to connect (natsConnection_Connect
// blocks until the first attempt ends). None of them touches PostgreSQL: the
// acknowledgement handler and the connector push what happened onto a queue under a
// mutex and write to an eventfd; the sink worker waits on that eventfd (Interest) next to
// its latch and drains the queue in Poll, on its own thread. (SetLatch from a foreign
// thread is not something PostgreSQL promises to support, so it is not used.) Every
// libnats call that may start a thread is made with all signals blocked (SignalsBlocked),
// so PostgreSQL's signal handlers only ever run on the worker's thread.
//
// Order: a batch's messages go out in order, up to max_in_flight publishes awaiting the
// stream's acknowledgement per subscription, but never two of one key at once (a later
// message of a key goes when the earlier one was acknowledged), so a failure cannot let a
// later message of its key into the stream first. A message counts delivered only when
// the stream acknowledged it (a duplicate acknowledgement too: the stream already holds
// it). Nats-Msg-Id is stable (core/stream_naming.hpp), so a re-publish after a crash is
// dropped by the stream's duplicate window.
#include <netdb.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nats/nats.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "core/destination.hpp"
#include "core/stream_naming.hpp"
#include "sink/stream.hpp"
#include "sink/stream_common.hpp"
#include "sink/stream_options.hpp"

namespace evproc::sink {

namespace {

// Batches of one subscription in flight at most (Room()).
constexpr int kBatchesInFlight = 4;

// Grace beyond the publish timeout before this transport gives up on an acknowledgement
// libnats never reported (it reports timeouts itself; this only bounds a lost callback).
constexpr int64_t kAckGraceUs = 5'000'000;

// What a libnats thread hands to the worker's thread.
struct Event {
  enum Kind { kAck, kConnected } kind = kAck;
  uint64_t link = 0;
  std::string msg_id;
  bool ok = false;
  bool duplicate = false;
  int status = NATS_OK;
  int js_code = 0;
  std::string text;
  natsConnection *connection = nullptr;  // kConnected
};

// Shared between the worker's thread and libnats' threads. Deliberately never freed:
// libnats may run a handler of a connection being destroyed a moment after
// natsConnection_Destroy returns, and this is a few bytes per process.
struct Shared {
  std::mutex mutex;
  std::vector<Event> events;
  int event_fd = -1;

  void Push(Event event) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      events.push_back(std::move(event));
    }
    uint64_t one = 1;
    ssize_t ignored = write(event_fd, &one, sizeof one);
    (void)ignored;  // the counter cannot overflow in practice; a full one still wakes
  }
};

// The closure of one connection's handlers (also never freed, see Shared).
struct LinkClosure {
  Shared *shared = nullptr;
  uint64_t link = 0;
  std::string nkey_seed;
};

void OnAck(jsCtx * /*js*/, natsMsg *msg, jsPubAck *ack, jsPubAckErr *error, void *closure) {
  auto *link = static_cast<LinkClosure *>(closure);
  Event event;
  event.kind = Event::kAck;
  event.link = link->link;
  const char *id = nullptr;
  if (msg != nullptr && natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id != nullptr) {
    event.msg_id = id;
  }
  if (ack != nullptr) {
    event.ok = true;
    event.duplicate = ack->Duplicate;
  } else if (error != nullptr) {
    event.status = error->Err;
    event.js_code = static_cast<int>(error->ErrCode);
    event.text = error->ErrText != nullptr ? error->ErrText : natsStatus_GetText(error->Err);
  } else {
    event.status = NATS_ERR;
    event.text = "no acknowledgement";
  }
  natsMsg_Destroy(msg);
  if (!event.msg_id.empty()) link->shared->Push(std::move(event));
}

natsStatus SignNonce(char **custom_error, unsigned char **signature, int *length, const char *nonce,
                     void *closure) {
  auto *link = static_cast<LinkClosure *>(closure);
  natsStatus status = nats_Sign(link->nkey_seed.c_str(), nonce, signature, length);
  if (status != NATS_OK) *custom_error = strdup("signing the server's nonce with nkey_seed failed");
  return status;
}

void OnConnected(natsConnection * /*connection*/, void * /*closure*/) {}

struct Pending {
  uint64_t token = 0;
  size_t index = 0;
};

struct Link {
  uint64_t id = 0;
  int32_t subscription = 0;
  int64_t options_version = 0;
  NatsOptions options;
  LinkClosure *closure = nullptr;
  natsOptions *nats_options = nullptr;
  natsConnection *connection = nullptr;
  jsCtx *js = nullptr;
  enum { kConnecting, kReady, kFailed } state = kConnecting;
  std::string error;  // kFailed: why
  core::StreamFailure failure = core::StreamFailure::kRetry;
  std::thread connector;
  std::unordered_map<std::string, Pending> pending;  // by Nats-Msg-Id
};

std::string LastError(natsStatus status) {
  natsStatus last = NATS_OK;
  const char *text = nats_GetLastError(&last);
  std::string out = natsStatus_GetText(status);
  if (text != nullptr && *text != '\0' && last == status) out += std::string(": ") + text;
  return out;
}

// Checks, on the connector's thread, that every address the servers' names resolve to is
// allowed (the names were checked when subscribing; DNS must not lead elsewhere). libnats
// resolves the names again when it connects: a DNS answer that changes in between is
// not caught here (docs/streams.md, Security).
std::string CheckAddresses(const NatsOptions &options, const core::DestinationList &allowed) {
  for (const NatsServer &server : options.servers) {
    bool host_listed = allowed.HostAllowed(server.host);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *found = nullptr;
    if (getaddrinfo(server.host.c_str(), nullptr, &hints, &found) != 0) continue;
    std::string refused;
    for (addrinfo *each = found; each != nullptr; each = each->ai_next) {
      if (!allowed.AddressAllowed(each->ai_addr, host_listed)) {
        refused = "server \"" + server.host +
                  "\" resolves to an address evproc.sink_allowed_destinations does not allow";
        break;
      }
    }
    freeaddrinfo(found);
    if (!refused.empty()) return refused;
  }
  return "";
}

class NatsTransport final : public Transport {
 public:
  NatsTransport() : shared_(new Shared) {
    shared_->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (shared_->event_fd < 0) throw std::runtime_error("eventfd failed");
    static bool opened = false;
    if (!opened) {
      SignalsBlocked blocked;
      if (nats_Open(-1) != NATS_OK) throw std::runtime_error("nats_Open failed");
      opened = true;
    }
  }

  ~NatsTransport() override {
    Abort();
    // shared_ (and its descriptor) stays: see Shared.
  }

  void Configure(const Limits &limits) override {
    limits_ = limits;
    std::string error;
    auto parsed = core::DestinationList::Parse(limits.allowed_destinations, &error);
    destinations_ = parsed ? *parsed : core::DestinationList();
  }

  [[nodiscard]] bool HasRoom(const Subscription &subscription) const override {
    if (publishes_ >= limits_.max_in_flight_per_worker) return false;
    // Up to Room() batches per subscription: each a lease of other units, so of other
    // keys (transport.hpp); their publishes share the link's max_in_flight window.
    auto found = batch_of_subscription_.find(subscription.id);
    return found == batch_of_subscription_.end() || found->second < Room(subscription);
  }

  // Four batches of a subscription at once: while one is acknowledged in the database and
  // the next leased, the others keep the link's window busy.
  [[nodiscard]] int Room(const Subscription & /*subscription*/) const override {
    return kBatchesInFlight;
  }

  void Start(Batch batch) override {
    auto state = std::make_unique<StreamBatch>(std::move(batch));
    const Subscription &subscription = *state->batch.subscription;
    Link *link = LinkFor(subscription);
    if (link == nullptr) {
      // Options that do not parse (changed under a running worker): pause with why.
      for (size_t i = 0; i < state->outcomes.size(); ++i) {
        state->Decide(i, i == 0 ? Verdict::kFatal : Verdict::kHeld, options_problem_);
      }
    }
    ++batch_of_subscription_[subscription.id];
    uint64_t token = state->batch.token;
    batches_[token] = std::move(state);
    Pump(batches_[token].get());
  }

  void Poll(std::vector<Completion> *done) override {
    uint64_t count = 0;
    ssize_t ignored = read(shared_->event_fd, &count, sizeof count);
    (void)ignored;  // EAGAIN: nothing new, fine
    std::vector<Event> events;
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      events.swap(shared_->events);
    }
    for (Event &event : events) Apply(event);
    ExpireLost();
    for (auto it = batches_.begin(); it != batches_.end();) {
      StreamBatch *state = it->second.get();
      Pump(state);
      if (state->Done()) {
        done->push_back(state->Complete());
        auto count = batch_of_subscription_.find(state->batch.subscription->id);
        if (count != batch_of_subscription_.end() && --count->second <= 0) {
          batch_of_subscription_.erase(count);
        }
        it = batches_.erase(it);
      } else {
        ++it;
      }
    }
    // A link that failed is dropped once nothing uses it: the next batch connects anew.
    for (auto it = links_.begin(); it != links_.end();) {
      if (it->second->state == Link::kFailed && it->second->pending.empty() &&
          batch_of_subscription_.count(it->second->subscription) == 0) {
        Destroy(it->second.get());
        it = links_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void Interest(std::vector<WaitSocket> *sockets, long *timeout_ms) override {
    sockets->clear();
    sockets->push_back(WaitSocket{shared_->event_fd, true, false});
    *timeout_ms = -1;
    int64_t now = StreamNowUs();
    for (const auto &[token, state] : batches_) {
      if (state->Done()) {
        *timeout_ms = 0;
        return;
      }
      auto found = links_.find(state->batch.subscription->id);
      if (found == links_.end()) continue;
      Link *link = found->second.get();
      int64_t limit = link->options.timeout_ms * 1000 + kAckGraceUs;
      for (size_t i = 0; i < state->state.size(); ++i) {
        if (state->state[i] != 1) continue;
        int64_t wait = (state->sent_us[i] + limit - now + 999) / 1000;
        wait = std::max<int64_t>(wait, 0);
        if (*timeout_ms < 0 || wait < *timeout_ms) *timeout_ms = static_cast<long>(wait);
      }
    }
  }

  [[nodiscard]] int InFlight() const override { return static_cast<int>(batches_.size()); }

  [[nodiscard]] int64_t LeaseMs(const Subscription &subscription, size_t messages) const override {
    // Worst case: every message of one key, each waiting for its whole timeout, after a
    // connect. Bounded: a lease that long is a stuck destination anyway.
    NatsOptions options;
    int64_t timeout = 5000;
    int64_t connect = 2000;
    if (!ParseNatsOptions(nlohmann::json::parse(subscription.options, nullptr, false), &options)) {
      timeout = options.timeout_ms;
      connect = options.connect_timeout_ms;
    }
    int64_t worst = connect + static_cast<int64_t>(messages) * (timeout + kAckGraceUs / 1000);
    return std::min<int64_t>(std::max<int64_t>(worst, 30'000), int64_t{15} * 60 * 1000);
  }

  void Abort() override {
    for (auto &[id, link] : links_) Destroy(link.get());
    links_.clear();
    batches_.clear();
    batch_of_subscription_.clear();
    publishes_ = 0;
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->events.clear();
  }

 private:
  // The subscription's connection, made (or remade, when its options changed) as needed;
  // nullptr when its options do not parse (options_problem_ says why).
  Link *LinkFor(const Subscription &subscription) {
    auto found = links_.find(subscription.id);
    if (found != links_.end() && found->second->options_version == subscription.options_version) {
      return found->second.get();
    }
    if (found != links_.end()) {
      Destroy(found->second.get());
      links_.erase(found);
    }
    auto link = std::make_unique<Link>();
    link->id = ++next_link_;
    link->subscription = subscription.id;
    link->options_version = subscription.options_version;
    auto parsed = nlohmann::json::parse(subscription.options, nullptr, false);
    if (auto problem = ParseNatsOptions(parsed, &link->options)) {
      options_problem_ = "sink options: " + problem->message;
      return nullptr;
    }
    link->closure = new LinkClosure{shared_, link->id, link->options.nkey_seed};
    Connect(link.get());
    Link *raw = link.get();
    links_[subscription.id] = std::move(link);
    return raw;
  }

  void Connect(Link *link) {
    const NatsOptions &options = link->options;
    for (const NatsServer &server : options.servers) {
      if (!destinations_.HostAllowed(server.host)) {
        Fail(link, core::StreamFailure::kFatal,
             "destination host \"" + server.host +
                 "\" is not allowed by evproc.sink_allowed_destinations");
        return;
      }
    }
    SignalsBlocked blocked;
    natsOptions *nopts = nullptr;
    natsStatus status = natsOptions_Create(&nopts);
    std::vector<const char *> urls;
    for (const NatsServer &server : options.servers) urls.push_back(server.url.c_str());
    if (status == NATS_OK) {
      status = natsOptions_SetServers(nopts, urls.data(), static_cast<int>(urls.size()));
    }
    // Only the listed servers: a cluster's gossip must not lead the client to others.
    if (status == NATS_OK) status = natsOptions_SetIgnoreDiscoveredServers(nopts, true);
    if (status == NATS_OK) status = natsOptions_SetTimeout(nopts, options.connect_timeout_ms);
    if (status == NATS_OK) status = natsOptions_SetMaxReconnect(nopts, -1);
    if (status == NATS_OK) status = natsOptions_SetReconnectWait(nopts, 250);
    if (status == NATS_OK) status = natsOptions_SetPingInterval(nopts, 5000);
    // With a callback (even one doing nothing), a first connect that fails returns at once
    // and libnats keeps trying in the background; without one it would block retrying.
    if (status == NATS_OK) {
      status = natsOptions_SetRetryOnFailedConnect(nopts, true, OnConnected, nullptr);
    }
    if (status == NATS_OK) status = natsOptions_SetName(nopts, "evproc sink");
    if (status == NATS_OK && !options.token.empty()) {
      status = natsOptions_SetToken(nopts, options.token.c_str());
    }
    if (status == NATS_OK && !options.user.empty()) {
      status = natsOptions_SetUserInfo(nopts, options.user.c_str(), options.password.c_str());
    }
    if (status == NATS_OK && !options.nkey.empty()) {
      status = natsOptions_SetNKey(nopts, options.nkey.c_str(), SignNonce, link->closure);
    }
    if (status == NATS_OK && options.tls) status = natsOptions_SetSecure(nopts, true);
    if (status == NATS_OK && !options.tls_ca.empty()) {
      status = natsOptions_SetCATrustedCertificates(nopts, options.tls_ca.c_str());
    }
    if (status == NATS_OK && !options.tls_verify) {
      status = natsOptions_SkipServerVerification(nopts, true);
    }
    if (status != NATS_OK) {
      natsOptions_Destroy(nopts);
      Fail(link, core::StreamFailure::kFatal, "NATS options: " + LastError(status));
      return;
    }
    link->nats_options = nopts;
    link->state = Link::kConnecting;
    // Connecting blocks until the first attempt ends (up to connect_timeout_ms per
    // server): on a thread of its own, started with signals blocked like libnats' own.
    Shared *shared = shared_;
    uint64_t id = link->id;
    core::DestinationList allowed = destinations_;
    NatsOptions copy = options;
    link->connector = std::thread([shared, id, nopts, allowed, copy] {
      Event event;
      event.kind = Event::kConnected;
      event.link = id;
      std::string refused = CheckAddresses(copy, allowed);
      if (!refused.empty()) {
        event.status = NATS_NOT_PERMITTED;
        event.text = refused;
      } else {
        natsConnection *connection = nullptr;
        natsStatus status = natsConnection_Connect(&connection, nopts);
        // Not yet connected: libnats keeps trying in the background and buffers the
        // publishes meanwhile, which then wait for their acknowledgement like any other.
        if (status == NATS_OK || status == NATS_NOT_YET_CONNECTED) {
          event.ok = true;
          event.connection = connection;
        } else {
          event.status = status;
          event.text = "connecting: " + LastError(status);
          natsConnection_Destroy(connection);
        }
      }
      shared->Push(std::move(event));
    });
  }

  void Fail(Link *link, core::StreamFailure failure, std::string error) {
    link->state = Link::kFailed;
    link->failure = failure;
    link->error = std::move(error);
  }

  void Destroy(Link *link) {
    if (link->connector.joinable()) link->connector.join();
    SignalsBlocked blocked;
    if (link->connection == nullptr) {
      // The connector may have finished with a connection nobody collected yet.
      std::lock_guard<std::mutex> lock(shared_->mutex);
      for (Event &event : shared_->events) {
        if (event.kind == Event::kConnected && event.link == link->id && event.connection) {
          natsConnection_Destroy(event.connection);
          event.connection = nullptr;
        }
      }
    }
    publishes_ -= static_cast<int>(link->pending.size());
    link->pending.clear();
    if (link->js != nullptr) jsCtx_Destroy(link->js);
    if (link->connection != nullptr) natsConnection_Destroy(link->connection);
    if (link->nats_options != nullptr) natsOptions_Destroy(link->nats_options);
    link->js = nullptr;
    link->connection = nullptr;
    link->nats_options = nullptr;
  }

  Link *ById(uint64_t id) {
    for (auto &[subscription, link] : links_) {
      if (link->id == id) return link.get();
    }
    return nullptr;
  }

  void Apply(Event &event) {
    Link *link = ById(event.link);
    if (event.kind == Event::kConnected) {
      if (link == nullptr) {
        SignalsBlocked blocked;
        natsConnection_Destroy(event.connection);
        return;
      }
      if (link->connector.joinable()) link->connector.join();
      if (!event.ok) {
        Fail(link, core::ClassifyNats(event.status, 0), event.text);
        return;
      }
      link->connection = event.connection;
      event.connection = nullptr;
      jsOptions js_options;
      jsOptions_Init(&js_options);
      js_options.Wait = link->options.timeout_ms;
      js_options.PublishAsync.AckHandler = OnAck;
      js_options.PublishAsync.AckHandlerClosure = link->closure;
      // Above this transport's own bound, so a publish never stalls in libnats.
      js_options.PublishAsync.MaxPending = link->options.max_in_flight + 64;
      js_options.PublishAsync.StallWait = 1;
      SignalsBlocked blocked;
      natsStatus status = natsConnection_JetStream(&link->js, link->connection, &js_options);
      if (status != NATS_OK) {
        Fail(link, core::StreamFailure::kRetry, "JetStream context: " + LastError(status));
        return;
      }
      link->state = Link::kReady;
      return;
    }
    if (link == nullptr) return;  // a connection since dropped
    auto found = link->pending.find(event.msg_id);
    if (found == link->pending.end()) return;  // already given up on (ExpireLost)
    Pending pending = found->second;
    link->pending.erase(found);
    --publishes_;
    auto batch = batches_.find(pending.token);
    if (batch == batches_.end()) return;
    Answer(batch->second.get(), pending.index, event);
  }

  // The stream's answer to one message.
  void Answer(StreamBatch *state, size_t index, const Event &event) {
    state->stats.latencies_us.push_back(StreamNowUs() - state->sent_us[index]);
    if (event.ok) {
      ++state->stats.answers_2xx;
      state->Finished(index, false);
      state->Decide(index, Verdict::kDelivered);
      return;
    }
    std::string error = "NATS: " + event.text;
    if (event.js_code != 0) error += " (JetStream error " + std::to_string(event.js_code) + ")";
    state->Finished(index, true);
    switch (core::ClassifyNats(event.status, event.js_code)) {
      case core::StreamFailure::kRefused: {
        ++state->stats.answers_4xx;
        nlohmann::json context = {
            {"error", event.text},
            {"nats_status", natsStatus_GetText(static_cast<natsStatus>(event.status))}};
        if (event.js_code != 0) context["jetstream_error_code"] = event.js_code;
        state->Decide(index, Verdict::kRefused, error, false, context.dump());
        break;
      }
      case core::StreamFailure::kFatal:
        ++state->stats.answers_4xx;
        state->stop = true;
        state->Decide(index, Verdict::kFatal, error);
        break;
      case core::StreamFailure::kRetry:
        ++state->stats.transport_errors;
        state->stop = true;
        state->Decide(index, Verdict::kRetry, error);
        break;
    }
  }

  // Publishes whose acknowledgement never came, not even libnats' own timeout.
  void ExpireLost() {
    int64_t now = StreamNowUs();
    for (auto &[subscription, link] : links_) {
      int64_t limit = link->options.timeout_ms * 1000 + kAckGraceUs;
      for (auto it = link->pending.begin(); it != link->pending.end();) {
        auto batch = batches_.find(it->second.token);
        if (batch == batches_.end()) {
          it = link->pending.erase(it);
          --publishes_;
          continue;
        }
        size_t index = it->second.index;
        if (batch->second->sent_us[index] + limit > now) {
          ++it;
          continue;
        }
        it = link->pending.erase(it);
        --publishes_;
        Event timeout;
        timeout.status = NATS_TIMEOUT;
        timeout.text = "no acknowledgement from the stream in time";
        Answer(batch->second.get(), index, timeout);
      }
    }
  }

  void Pump(StreamBatch *state) {
    const Subscription &subscription = *state->batch.subscription;
    auto found = links_.find(subscription.id);
    if (found == links_.end()) return;  // decided in Start
    Link *link = found->second.get();
    if (link->state == Link::kConnecting) return;
    if (link->state == Link::kFailed) {
      // The first message not yet decided takes the failure, the rest are held.
      for (size_t i = 0; i < state->state.size(); ++i) {
        if (state->state[i] != 0) continue;
        if (state->stop) {
          state->Decide(i, Verdict::kHeld);
          continue;
        }
        state->stop = true;
        ++state->stats.transport_errors;
        Verdict verdict =
            link->failure == core::StreamFailure::kFatal ? Verdict::kFatal : Verdict::kRetry;
        state->Decide(i, verdict, "NATS: " + link->error);
      }
      return;
    }
    // While libnats is reconnecting, a publish would only wait in its reconnect buffer
    // for the acknowledgement timeout: fail at once instead, so the breaker hears of the
    // outage without delay and the lease ends early (the key retries with backoff).
    bool connected = natsConnection_Status(link->connection) == NATS_CONN_STATUS_CONNECTED;
    for (size_t i = 0; i < state->state.size(); ++i) {
      if (state->state[i] != 0) continue;
      int ready = state->Ready(i);
      if (ready <= 0) continue;
      if (!connected) {
        state->stop = true;
        ++state->stats.transport_errors;
        state->Decide(i, Verdict::kRetry, "NATS: not connected to any server (reconnecting)");
        continue;
      }
      if (static_cast<int>(link->pending.size()) >= link->options.max_in_flight ||
          publishes_ >= limits_.max_in_flight_per_worker) {
        break;
      }
      Publish(link, state, i);
    }
  }

  void Publish(Link *link, StreamBatch *state, size_t index) {
    const Subscription &subscription = *state->batch.subscription;
    const Message &message = state->batch.messages[index];
    std::string subject = link->options.subject->Render(
        subscription.topic, message.has_key, message.key, subscription.name, message.partition);
    if (subject.size() > core::SubjectTemplate::kMaxSubjectLength) {
      ++state->stats.answers_4xx;
      if (message.has_key) state->failed_keys.insert(message.key);
      state->Decide(index, Verdict::kRefused,
                    "NATS: subject longer than " +
                        std::to_string(core::SubjectTemplate::kMaxSubjectLength) + " bytes",
                    false, nlohmann::json({{"subject_bytes", subject.size()}}).dump());
      return;
    }
    const std::string &origin =
        link->options.source.empty() ? StreamOrigin() : link->options.source;
    std::string msg_id =
        core::StreamMessageId(origin, subscription.name, message.event_id, message.replay);
    SignalsBlocked blocked;
    natsMsg *msg = nullptr;
    natsStatus status = natsMsg_Create(&msg, subject.c_str(), nullptr, message.payload.data(),
                                       static_cast<int>(message.payload.size()));
    auto header = [&](const char *name, const std::string &value) {
      if (status == NATS_OK) status = natsMsgHeader_Set(msg, name, value.c_str());
    };
    header("Evproc-Topic", core::HeaderValue(subscription.topic));
    if (message.has_key) header("Evproc-Key", core::HeaderValue(message.key));
    if (message.has_type) header("Evproc-Type", core::HeaderValue(message.type));
    header("Evproc-Event-Id", std::to_string(message.event_id));
    header("Evproc-Subscription", core::HeaderValue(subscription.name));
    header("Evproc-Enqueued-At", core::HeaderValue(message.enqueued_at));
    header("Evproc-Attempt", std::to_string(message.attempt));
    if (message.replay) header("Evproc-Replay", "true");
    if (!message.headers.empty()) header("Evproc-Headers", core::HeaderValue(message.headers));
    header("Content-Type", "application/json");
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MsgId = msg_id.c_str();
    options.MaxWait = link->options.timeout_ms;
    if (!link->options.expect_stream.empty()) {
      options.ExpectStream = link->options.expect_stream.c_str();
    }
    if (status == NATS_OK) status = js_PublishMsgAsync(link->js, &msg, &options);
    natsMsg_Destroy(msg);  // no-op when libnats took it
    ++state->stats.requests;
    if (status == NATS_OK) {
      state->Sent(index);
      state->stats.bytes_sent += static_cast<int64_t>(message.payload.size());
      link->pending[msg_id] = Pending{state->batch.token, index};
      ++publishes_;
      return;
    }
    // Refused before it left (too large for the server's max_payload) or the connection
    // is closed. A closed connection does not come back by itself: the link is rebuilt
    // for the next batch.
    if (status == NATS_CONNECTION_CLOSED) {
      Fail(link, core::StreamFailure::kRetry, "connection closed");
    }
    state->Sent(index);
    Event event;
    event.status = status;
    event.text = LastError(status);
    Answer(state, index, event);
  }

  Shared *shared_;
  Limits limits_;
  core::DestinationList destinations_;
  std::map<int32_t, std::unique_ptr<Link>> links_;            // by subscription id
  std::map<uint64_t, std::unique_ptr<StreamBatch>> batches_;  // by token
  std::map<int32_t, int> batch_of_subscription_;              // batches in flight per subscription
  std::string options_problem_;
  uint64_t next_link_ = 0;
  int publishes_ = 0;  // awaiting acknowledgement, all links
};

}  // namespace

std::unique_ptr<Transport> MakeNatsTransport() { return std::make_unique<NatsTransport>(); }

}  // namespace evproc::sink

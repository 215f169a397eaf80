// The webhook transport: libcurl's multi interface driven by socket actions. curl tells
// us which sockets it wants watched (CURLMOPT_SOCKETFUNCTION) and when its next timeout
// is due (CURLMOPT_TIMERFUNCTION); we keep the sockets in one epoll set, whose descriptor
// is the only socket the sink worker waits on next to its latch (Interest), so the worker
// sleeps until a socket is ready, a timeout falls due or its latch is set: no polling.
// (pg_net drives curl the same way but waits on its epoll set alone, inside a
// transaction; the sink worker holds none while requests are in flight.)
//
// Sequencing per batch (per-key order, transport.hpp): in "event" mode a message is sent
// once every earlier message of its key was delivered; up to max_in_flight requests of a
// subscription and the worker's bound are in flight. In "batch" mode the messages go as
// one JSON array; a refusal (4xx) splits the request in halves, sent one after the other,
// until only the refused messages are left. Once the destination fails (5xx, 429, a
// timeout, a connection error), nothing more of the batch is sent: the rest is held.
#include <sys/epoll.h>
#include <unistd.h>

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <deque>
#include <list>
#include <map>
#include <set>
#include <stdexcept>

#include "core/destination.hpp"
#include "core/webhook_answer.hpp"
#include "core/webhook_signature.hpp"
#include "sink/webhook.hpp"
#include "sink/webhook_options.hpp"

namespace evproc::sink {

namespace {

constexpr size_t kMaxResponseBytes = size_t{64} * 1024;  // read at most this much of an answer
constexpr size_t kContextBodyBytes = 4096;               // kept in a dead letter's context
constexpr size_t kMaxResponseHeaders = 64;
// Batches of one subscription in flight at most (Room()).
constexpr int kMostBatchesInFlight = 8;

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Header values evproc sets from event fields: anything outside printable ASCII (and %)
// percent-encoded, so a key can never inject a header.
std::string HeaderSafe(const std::string &text) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (c < 0x20 || c >= 0x7f || c == '%') {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string WebhookId(const Subscription &subscription, int64_t event_id) {
  return "evproc_" + subscription.name + "_" + std::to_string(event_id);
}

// One event as JSON text (the body in "event" mode, an element in "batch" mode).
void AppendEventJson(const Subscription &subscription, const Message &message, std::string *out) {
  nlohmann::json fixed = {{"webhook_id", WebhookId(subscription, message.event_id)},
                          {"subscription", subscription.name},
                          {"topic", subscription.topic},
                          {"attempt", message.attempt},
                          {"replay", message.replay},
                          {"enqueued_at", message.enqueued_at}};
  fixed["key"] = message.has_key ? nlohmann::json(message.key) : nlohmann::json(nullptr);
  fixed["type"] = message.has_type ? nlohmann::json(message.type) : nlohmann::json(nullptr);
  std::string head = fixed.dump();
  // The payload and headers are already JSON text (jsonb's output): spliced in, not
  // parsed again.
  *out += "{\"id\":" + std::to_string(message.event_id) + ",";
  out->append(head, 1, head.size() - 2);
  *out += ",\"payload\":";
  *out += message.payload.empty() ? "null" : message.payload;
  *out += ",\"headers\":";
  *out += message.headers.empty() ? "null" : message.headers;
  *out += "}";
}

struct BatchState;
class WebhookTransport;

struct Request {
  WebhookTransport *owner = nullptr;
  BatchState *batch = nullptr;
  std::vector<size_t> indexes;  // the batch's messages this request carries
  CURL *easy = nullptr;
  curl_slist *headers = nullptr;
  std::string body;
  std::string response;
  std::vector<std::pair<std::string, std::string>> response_headers;
  std::string retry_after;
  int64_t started_us = 0;
  bool host_listed = false;
  bool address_refused = false;
  char error[CURL_ERROR_SIZE] = {};
};

struct BatchState {
  Batch batch;
  std::shared_ptr<const WebhookOptions> options;
  std::string problem;  // options unusable: every message fatal with this
  std::vector<Outcome> outcomes;
  std::vector<uint8_t> state;  // 0 waiting, 1 in flight, 2 decided
  std::set<std::string> failed_keys;
  std::deque<std::vector<size_t>> segments;  // batch mode: what is left to send, in order
  int in_flight = 0;
  bool stop = false;  // the destination failed: send nothing more
  Stats stats;
};

class WebhookTransport final : public Transport {
 public:
  WebhookTransport() { Open(); }

  ~WebhookTransport() override {
    Abort();
    curl_multi_cleanup(multi_);
    close(epoll_fd_);
  }

  void Configure(const Limits &limits) override {
    if (limits.allowed_destinations != limits_.allowed_destinations) {
      // Connections kept alive were checked against the old list: none is reused.
      reopen_ = true;
    }
    limits_ = limits;
    std::string error;
    auto parsed = core::DestinationList::Parse(limits.allowed_destinations, &error);
    destinations_ = parsed ? *parsed : core::DestinationList();
  }

 private:
  void Open() {
    static bool global_done = false;
    if (!global_done) {
      // Once per process, before any other curl call; no other thread exists yet.
      if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        throw std::runtime_error("curl_global_init failed");
      }
      global_done = true;
    }
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) throw std::runtime_error("epoll_create1 failed");
    multi_ = curl_multi_init();
    if (multi_ == nullptr) {
      close(epoll_fd_);
      throw std::runtime_error("curl_multi_init failed");
    }
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &WebhookTransport::OnSocket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &WebhookTransport::OnTimer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, 64L);
  }

  // A new multi handle (and so an empty connection cache), once nothing is in flight.
  void Reopen() {
    curl_multi_cleanup(multi_);
    close(epoll_fd_);
    watched_.clear();
    timer_due_us_ = -1;
    Open();
    reopen_ = false;
  }

 public:
  [[nodiscard]] bool HasRoom(const Subscription &subscription) const override {
    if (requests_ >= limits_.max_in_flight_per_worker) return false;
    auto found = batches_per_subscription_.find(subscription.id);
    // Up to Room() batches per subscription: each a lease of other units, so of other
    // keys (transport.hpp); their requests share the subscription's max_in_flight.
    return found == batches_per_subscription_.end() || found->second < Room(subscription);
  }

  // min(max_in_flight, 8) batches of a subscription: in batch mode each is one request,
  // so they are its requests in flight; per event, its requests are shared among them.
  // 1 until its options were read (its first batch).
  [[nodiscard]] int Room(const Subscription &subscription) const override {
    auto found = options_.find(subscription.id);
    if (found == options_.end() || !found->second.second) return 1;
    return std::max(1, std::min(found->second.second->max_in_flight, kMostBatchesInFlight));
  }

  void Start(Batch batch) override {
    auto state = std::make_unique<BatchState>();
    state->outcomes.resize(batch.messages.size());
    state->state.assign(batch.messages.size(), 0);
    state->options = OptionsFor(*batch.subscription, &state->problem);
    state->batch = std::move(batch);
    ++batches_per_subscription_[state->batch.subscription->id];
    if (state->options && state->options->batch && !state->batch.messages.empty()) {
      std::vector<size_t> all(state->batch.messages.size());
      for (size_t i = 0; i < all.size(); ++i) all[i] = i;
      state->segments.push_back(std::move(all));
    }
    batches_.push_back(std::move(state));
    Pump(batches_.back().get());
  }

  void Poll(std::vector<Completion> *done) override {
    epoll_event events[64];
    int ready = epoll_wait(epoll_fd_, events, 64, 0);
    int running = 0;
    for (int i = 0; i < ready; ++i) {
      int flags = 0;
      if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
      if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
      curl_multi_socket_action(multi_, events[i].data.fd, flags, &running);
    }
    if (timer_due_us_ >= 0 && NowUs() >= timer_due_us_) {
      timer_due_us_ = -1;
      curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    Harvest();
    for (auto it = batches_.begin(); it != batches_.end();) {
      BatchState *state = it->get();
      Pump(state);
      if (state->in_flight == 0 && Decided(*state)) {
        Completion completion;
        completion.token = state->batch.token;
        completion.outcomes = std::move(state->outcomes);
        completion.stats = std::move(state->stats);
        done->push_back(std::move(completion));
        --batches_per_subscription_[state->batch.subscription->id];
        it = batches_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void Interest(std::vector<WaitSocket> *sockets, long *timeout_ms) override {
    sockets->clear();
    sockets->push_back(WaitSocket{epoll_fd_, true, false});
    *timeout_ms = -1;
    if (timer_due_us_ >= 0) {
      int64_t wait = (timer_due_us_ - NowUs() + 999) / 1000;
      *timeout_ms = wait < 0 ? 0 : static_cast<long>(wait);
    }
    // A batch decided without I/O (e.g. options unusable) is reported at once.
    for (const auto &state : batches_) {
      if (state->in_flight == 0 && Decided(*state)) *timeout_ms = 0;
    }
  }

  [[nodiscard]] int64_t LeaseMs(const Subscription &subscription, size_t messages) const override {
    std::string problem;
    auto found = options_.find(subscription.id);
    WebhookOptions defaults;
    const WebhookOptions &options =
        (found != options_.end() && found->second.second) ? *found->second.second : defaults;
    // Sequential rounds in the worst case: event mode, messages / max_in_flight (one key
    // throughout); batch mode, a bisection down to one message and back.
    int64_t rounds = 1;
    if (options.batch) {
      for (size_t n = messages; n > 1; n /= 2) rounds += 2;
    } else {
      // One key: strictly one after another; each request may also wait for a slot that
      // the subscription's other batches hold (they free it within one request's time).
      rounds = 2 * static_cast<int64_t>(messages);
    }
    int64_t per_request = options.timeout_ms + options.connect_timeout_ms;
    return std::min<int64_t>(rounds * per_request + 30000, INT64_C(86400000));
  }

  [[nodiscard]] int InFlight() const override { return static_cast<int>(batches_.size()); }

  void Abort() override {
    for (auto &request : requests_in_flight_) {
      curl_multi_remove_handle(multi_, request->easy);
      Free(request.get());
    }
    requests_in_flight_.clear();
    requests_ = 0;
    batches_.clear();
    batches_per_subscription_.clear();
  }

 private:
  static int OnSocket(CURL * /*easy*/, curl_socket_t socket, int what, void *self,
                      void * /*socketp*/) {
    auto *transport = static_cast<WebhookTransport *>(self);
    if (what == CURL_POLL_REMOVE) {
      epoll_ctl(transport->epoll_fd_, EPOLL_CTL_DEL, socket, nullptr);
      transport->watched_.erase(socket);
      return 0;
    }
    epoll_event event{};
    event.data.fd = socket;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) event.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) event.events |= EPOLLOUT;
    bool known = transport->watched_.count(socket) > 0;
    if (epoll_ctl(transport->epoll_fd_, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, socket, &event) ==
        0) {
      transport->watched_.insert(socket);
    }
    return 0;
  }

  static int OnTimer(CURLM * /*multi*/, long timeout_ms, void *self) {
    auto *transport = static_cast<WebhookTransport *>(self);
    transport->timer_due_us_ = timeout_ms < 0 ? -1 : NowUs() + timeout_ms * 1000;
    return 0;
  }

  // The allow-list, checked on the address curl is about to connect to (after DNS, after
  // each redirect): a refused address gets no socket, so no connection is made.
  static curl_socket_t OnOpenSocket(void *clientp, curlsocktype /*purpose*/,
                                    struct curl_sockaddr *address) {
    auto *request = static_cast<Request *>(clientp);
    bool listed = request->host_listed;
    char *effective = nullptr;
    // After a redirect, the host connected to is the effective URL's.
    if (curl_easy_getinfo(request->easy, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK &&
        effective != nullptr) {
      listed = request->owner->destinations_.HostAllowed(UrlHost(effective));
    }
    if (!request->owner->destinations_.AddressAllowed(&address->addr, listed)) {
      request->address_refused = true;
      return CURL_SOCKET_BAD;
    }
    return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
  }

  static size_t OnBody(char *data, size_t size, size_t count, void *clientp) {
    auto *request = static_cast<Request *>(clientp);
    size_t length = size * count;
    size_t room = kMaxResponseBytes - std::min(kMaxResponseBytes, request->response.size());
    request->response.append(data, std::min(room, length));
    return length;  // the rest is read and dropped: answers are bounded in memory
  }

  static size_t OnHeader(char *data, size_t size, size_t count, void *clientp) {
    auto *request = static_cast<Request *>(clientp);
    size_t length = size * count;
    std::string line(data, length);
    if (line.rfind("HTTP/", 0) == 0) {  // a new answer (after a 1xx or a redirect)
      request->response_headers.clear();
      request->retry_after.clear();
      return length;
    }
    size_t colon = line.find(':');
    if (colon == std::string::npos) return length;
    std::string name = line.substr(0, colon);
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    value.erase(0, value.find_first_not_of(" \t"));
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower == "retry-after") request->retry_after = value;
    if (request->response_headers.size() < kMaxResponseHeaders && value.size() < 1024) {
      request->response_headers.emplace_back(lower, value);
    }
    return length;
  }

  std::shared_ptr<const WebhookOptions> OptionsFor(const Subscription &subscription,
                                                   std::string *problem) {
    auto found = options_.find(subscription.id);
    if (found != options_.end() && found->second.first == subscription.options_version) {
      return found->second.second;
    }
    auto parsed = std::make_shared<WebhookOptions>();
    nlohmann::json json = nlohmann::json::parse(subscription.options, nullptr, false);
    if (json.is_discarded()) {
      *problem = "the sink options are not JSON";
      return nullptr;
    }
    if (auto bad = ParseWebhookOptions(json, parsed.get())) {
      *problem = "sink option \"" + bad->option + "\": " + bad->message;
      return nullptr;
    }
    options_[subscription.id] = {subscription.options_version, parsed};
    return parsed;
  }

  static bool Decided(const BatchState &state) {
    return std::all_of(state.state.begin(), state.state.end(), [](uint8_t s) { return s == 2; });
  }

  static void Decide(BatchState *state, size_t index, Outcome outcome) {
    const Message &message = state->batch.messages[index];
    if (outcome.verdict != Verdict::kDelivered && message.has_key) {
      state->failed_keys.insert(message.key);
    }
    state->outcomes[index] = std::move(outcome);
    state->state[index] = 2;
  }

  static Outcome Held(const char *why) {
    Outcome outcome;
    outcome.verdict = Verdict::kHeld;
    outcome.feeds_breaker = false;
    outcome.error = why;
    return outcome;
  }

  // Starts what may be started of a batch, decides what can be decided without sending.
  void Pump(BatchState *state) {
    size_t count = state->batch.messages.size();
    if (!state->options) {
      for (size_t i = 0; i < count; ++i) {
        if (state->state[i] != 0) continue;
        Outcome outcome;
        outcome.verdict = Verdict::kFatal;
        outcome.error = state->problem;
        Decide(state, i, outcome);
      }
      return;
    }
    const WebhookOptions &options = *state->options;
    if (options.batch) {
      while (state->in_flight == 0 && !state->segments.empty()) {
        std::vector<size_t> segment = std::move(state->segments.front());
        state->segments.pop_front();
        std::vector<size_t> sendable;
        for (size_t index : segment) {
          const Message &message = state->batch.messages[index];
          if (state->stop) {
            Decide(state, index, Held("not sent: the destination failed earlier in this batch"));
          } else if (message.has_key && state->failed_keys.count(message.key) > 0) {
            Decide(state, index, Held("not sent: an earlier event of its key failed"));
          } else {
            sendable.push_back(index);
          }
        }
        if (!sendable.empty()) Send(state, std::move(sendable));
      }
      return;
    }
    // Twice: a message decided without a request in the first pass (the destination not
    // allowed) lets the later ones of its key be decided in the second.
    for (int pass = 0; pass < 2; ++pass) PumpEvents(state);
  }

  void PumpEvents(BatchState *state) {
    const WebhookOptions &options = *state->options;
    size_t count = state->batch.messages.size();
    std::set<std::string> waiting_keys;  // keys with an earlier message not yet decided
    for (size_t i = 0; i < count; ++i) {
      const Message &message = state->batch.messages[i];
      if (state->state[i] == 2) continue;
      bool waits = message.has_key && waiting_keys.count(message.key) > 0;
      if (message.has_key) waiting_keys.insert(message.key);
      if (state->state[i] == 1 || waits) continue;
      if (message.has_key && state->failed_keys.count(message.key) > 0) {
        Decide(state, i, Held("not sent: an earlier event of its key failed"));
        waiting_keys.erase(message.key);  // decided: later ones see the failed key
        continue;
      }
      if (state->stop) {
        Decide(state, i, Held("not sent: the destination failed earlier in this batch"));
        if (message.has_key) waiting_keys.erase(message.key);
        continue;
      }
      if (RequestsOf(state->batch.subscription->id) >= options.max_in_flight ||
          requests_ >= limits_.max_in_flight_per_worker) {
        continue;
      }
      Send(state, {i});
    }
  }

  // The subscription's requests in flight, over its batches.
  [[nodiscard]] int RequestsOf(int32_t subscription_id) const {
    int requests = 0;
    for (const auto &batch : batches_) {
      if (batch->batch.subscription->id == subscription_id) requests += batch->in_flight;
    }
    return requests;
  }

  void Send(BatchState *state, std::vector<size_t> indexes) {
    const Subscription &subscription = *state->batch.subscription;
    const WebhookOptions &options = *state->options;
    if (!destinations_.HostAllowed(options.host)) {
      // The list changed since subscribing (SIGHUP): nothing is sent.
      Outcome outcome;
      outcome.verdict = Verdict::kFatal;
      outcome.error = "destination host \"" + options.host +
                      "\" is not allowed by evproc.sink_allowed_destinations";
      state->stop = true;
      state->stats.last_error = outcome.error;
      for (size_t index : indexes) Decide(state, index, outcome);
      return;
    }
    if (reopen_ && requests_ == 0) Reopen();
    auto request = std::make_unique<Request>();
    request->owner = this;
    request->batch = state;
    request->indexes = std::move(indexes);
    const Message &first = state->batch.messages[request->indexes.front()];
    if (options.batch) {
      request->body = "[";
      for (size_t n = 0; n < request->indexes.size(); ++n) {
        if (n > 0) request->body += ",";
        AppendEventJson(subscription, state->batch.messages[request->indexes[n]], &request->body);
      }
      request->body += "]";
    } else {
      AppendEventJson(subscription, first, &request->body);
    }
    // A batch's id: its first and last event (stable for the same events; receivers
    // dedup batches by each element's webhook_id).
    std::string id = WebhookId(subscription, first.event_id);
    if (request->indexes.size() > 1) {
      id += "-" + std::to_string(state->batch.messages[request->indexes.back()].event_id);
    }
    std::string timestamp = std::to_string(static_cast<long long>(std::time(nullptr)));
    std::vector<std::string> lines = {"Content-Type: application/json",
                                      "Expect:",
                                      "webhook-id: " + id,
                                      "webhook-timestamp: " + timestamp,
                                      "evproc-subscription: " + HeaderSafe(subscription.name),
                                      "evproc-topic: " + HeaderSafe(subscription.topic)};
    if (!options.key.empty()) {
      lines.push_back("webhook-signature: " +
                      core::WebhookSignature(options.key, id, timestamp, request->body));
    }
    if (options.batch) {
      lines.push_back("evproc-count: " + std::to_string(request->indexes.size()));
    } else {
      lines.push_back("evproc-event-id: " + std::to_string(first.event_id));
      lines.push_back("evproc-attempt: " + std::to_string(first.attempt));
      if (first.has_key) lines.push_back("evproc-key: " + HeaderSafe(first.key));
      if (first.has_type) lines.push_back("evproc-type: " + HeaderSafe(first.type));
    }
    for (const auto &[name, value] : options.headers) {
      std::string line = name;
      line.append(": ").append(value);
      lines.push_back(std::move(line));
    }
    for (const std::string &line : lines) {
      request->headers = curl_slist_append(request->headers, line.c_str());
    }
    request->host_listed = destinations_.HostAllowed(options.host);
    CURL *easy = curl_easy_init();
    if (easy == nullptr) throw std::runtime_error("curl_easy_init failed");
    request->easy = easy;
    curl_easy_setopt(easy, CURLOPT_URL, options.url.c_str());
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, options.follow_redirects ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(easy, CURLOPT_POSTREDIR, CURL_REDIR_POST_ALL);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    if (reopen_) curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, options.timeout_ms);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, options.connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, options.tls_verify ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, options.tls_verify ? 2L : 0L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "evproc-webhook/0.3");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, request->headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request->body.c_str());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request->body.size()));
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, &WebhookTransport::OnOpenSocket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, request.get());
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &WebhookTransport::OnBody);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, request.get());
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &WebhookTransport::OnHeader);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, request.get());
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, request->error);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, request.get());
    for (size_t index : request->indexes) state->state[index] = 1;
    ++state->in_flight;
    ++requests_;
    ++state->stats.requests;
    state->stats.bytes_sent += static_cast<int64_t>(request->body.size());
    request->started_us = NowUs();
    curl_multi_add_handle(multi_, easy);
    requests_in_flight_.push_back(std::move(request));
  }

  void Free(Request *request) {
    curl_easy_cleanup(request->easy);
    curl_slist_free_all(request->headers);
    request->easy = nullptr;
    request->headers = nullptr;
  }

  // Finished requests: their messages decided.
  void Harvest() {
    int left = 0;
    while (CURLMsg *message = curl_multi_info_read(multi_, &left)) {
      if (message->msg != CURLMSG_DONE) continue;
      Request *request = nullptr;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &request);
      CURLcode result = message->data.result;
      long status = 0;
      curl_easy_getinfo(message->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      curl_multi_remove_handle(multi_, message->easy_handle);
      Judge(request, result, status);
      Free(request);
      --requests_;
      --request->batch->in_flight;
      requests_in_flight_.remove_if(
          [request](const std::unique_ptr<Request> &each) { return each.get() == request; });
    }
  }

  void Judge(Request *request, CURLcode result, long status) {
    BatchState *state = request->batch;
    const WebhookOptions &options = *state->options;
    Stats &stats = state->stats;
    stats.latencies_us.push_back(NowUs() - request->started_us);
    stats.bytes_received += static_cast<int64_t>(request->response.size());
    Outcome outcome;
    if (request->address_refused) {
      outcome.verdict = Verdict::kFatal;
      outcome.error = "destination address of host \"" + options.host +
                      "\" is not allowed by evproc.sink_allowed_destinations";
      ++stats.transport_errors;
      state->stop = true;
    } else if (result != CURLE_OK) {
      outcome.verdict = Verdict::kRetry;
      outcome.error = std::string("webhook request failed: ") +
                      (request->error[0] != '\0' ? request->error : curl_easy_strerror(result));
      ++stats.transport_errors;
      state->stop = true;
    } else {
      if (status >= 200 && status < 300) {
        ++stats.answers_2xx;
      } else if (status >= 300 && status < 400) {
        ++stats.answers_3xx;
      } else if (status >= 400 && status < 500) {
        ++stats.answers_4xx;
      } else {
        ++stats.answers_5xx;
      }
      core::AnswerClass answer = core::ClassifyStatus(status);
      std::string head = "webhook answered HTTP " + std::to_string(status);
      switch (answer) {
        case core::AnswerClass::kDelivered:
          outcome.verdict = Verdict::kDelivered;
          break;
        case core::AnswerClass::kRetryAfter:
          outcome.verdict = Verdict::kRetry;
          outcome.retry_after_ms = core::RetryAfterMs(request->retry_after, std::time(nullptr),
                                                      options.retry_after_cap_ms);
          outcome.error = head;
          state->stop = true;
          break;
        case core::AnswerClass::kRetry:
          outcome.verdict = Verdict::kRetry;
          outcome.error = head;
          state->stop = true;
          break;
        case core::AnswerClass::kRefused:
          if (request->indexes.size() > 1) {  // bisect: each half on its own, in order
            auto half = static_cast<std::ptrdiff_t>(request->indexes.size() / 2);
            std::vector<size_t> first(request->indexes.begin(), request->indexes.begin() + half);
            std::vector<size_t> second(request->indexes.begin() + half, request->indexes.end());
            for (size_t index : request->indexes) state->state[index] = 0;
            state->segments.push_front(std::move(second));
            state->segments.push_front(std::move(first));
            return;
          }
          outcome.verdict = Verdict::kRefused;
          outcome.error = head + ": refused";
          outcome.feeds_breaker = false;
          outcome.context = Context(*request, status);
          break;
        case core::AnswerClass::kGone:
        case core::AnswerClass::kRedirect:
          outcome.verdict = Verdict::kFatal;
          outcome.error = answer == core::AnswerClass::kGone
                              ? head + " (Gone): the endpoint is gone"
                              : head + " (a redirect, not followed: set follow_redirects)";
          state->stop = true;
          break;
      }
    }
    if (outcome.verdict != Verdict::kDelivered) stats.last_error = outcome.error;
    for (size_t index : request->indexes) Decide(state, index, outcome);
  }

  static std::string Context(const Request &request, long status) {
    nlohmann::json headers = nlohmann::json::object();
    for (const auto &[name, value] : request.response_headers) headers[name] = value;
    std::string body = request.response.substr(0, kContextBodyBytes);
    // Not valid UTF-8 → escaped by dump's replace handler rather than failing.
    nlohmann::json context = {{"status", status}, {"headers", headers}, {"body", body}};
    return context.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }

  CURLM *multi_ = nullptr;
  int epoll_fd_ = -1;
  int64_t timer_due_us_ = -1;
  std::set<curl_socket_t> watched_;
  Limits limits_;
  core::DestinationList destinations_;
  int requests_ = 0;
  bool reopen_ = false;  // the allow-list changed: no connection kept alive is reused
  std::map<int32_t, int> batches_per_subscription_;
  std::map<int32_t, std::pair<int64_t, std::shared_ptr<const WebhookOptions>>> options_;
  std::list<std::unique_ptr<BatchState>> batches_;
  std::list<std::unique_ptr<Request>> requests_in_flight_;
};

}  // namespace

std::unique_ptr<Transport> MakeWebhookTransport() { return std::make_unique<WebhookTransport>(); }

}  // namespace evproc::sink

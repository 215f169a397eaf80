// The sink framework's transport interface (docs/design.md): what a sink type — webhook,
// NATS JetStream, Kafka — implements so that the sink workers (src/sink/sink_worker.cpp)
// can deliver a subscription's events to it.
//
// The division of labour:
// - The framework (a sink worker) leases a batch of a sink subscription's events in a short
//   transaction, commits, hands the batch to the subscription's transport with Start(),
//   waits on its latch plus the sockets and timeout the transports ask for (Interest()),
//   calls Poll() when any of them is ready, and writes each finished batch's outcomes
//   (Completion) in another short transaction: delivered events are acknowledged, the
//   others take the subscription's retry line, dead letters or pause. Retries, backoff,
//   the breaker, dead letters, re-drive and replay are the subscription's, unchanged.
// - A transport only moves bytes. It never touches PostgreSQL (no palloc, no ereport, no
//   SPI: plain C++, which is why it can be unit-tested and may throw std::exception, which
//   the worker turns into a logged error), never blocks (non-blocking sockets, the
//   client's async API) and never spawns threads that outlive Abort().
// - Per-key order: the messages of a batch are in per-key commit order. A transport that
//   sends several messages concurrently must not send a message before every earlier
//   message of the same key was delivered; when an earlier one fails, the later ones of
//   that key are answered kHeld (not sent). The framework parks the key behind the failed
//   one, so they are tried again after it, in order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace evproc::sink {

// One event to send, as the lease handed it out. Text fields are UTF-8; JSON fields are
// the jsonb's text form.
struct Message {
  int64_t event_id = 0;
  int32_t partition = 0;
  bool has_key = false;
  std::string key;
  bool has_type = false;
  std::string type;
  std::string payload;      // JSON object text
  std::string headers;      // JSON object text; empty when the event has none
  std::string enqueued_at;  // ISO 8601 with time zone, as PostgreSQL prints timestamptz
  int32_t attempt = 1;      // 1 on the first delivery, then 2, 3, ...
  bool replay = false;      // re-delivered by evproc_replay
};

// What became of one message.
enum class Verdict {
  kDelivered,  // the destination took it: acknowledged
  kRetry,      // failed for now: retry with backoff (or retry_after_ms), parks its key
  kRefused,    // the destination refused it for good: dead letter at once, with context
  kFatal,      // the destination is gone or misconfigured: pause the subscription (error)
  kHeld,       // not sent: an earlier message of its key in this batch did not go through,
               // or the transport stopped sending the batch (the destination failing): it
               // comes again later, in order, without counting as an attempt
};

struct Outcome {
  Verdict verdict = Verdict::kRetry;
  // kRetry: the delay the destination asked for (already capped by the transport), or -1
  // for the subscription's backoff.
  int64_t retry_after_ms = -1;
  // kRetry: whether the failure is the destination's (feeds the circuit breaker: 5xx,
  // timeouts, refused or reset connections, TLS errors) rather than the message's own.
  bool feeds_breaker = true;
  // One line, never a secret: the retry's error, the dead letter's message, the pause
  // reason.
  std::string error;
  // kRefused: a JSON object with what the destination answered (e.g. status, headers,
  // the first kilobytes of the body), stored as the dead letter's context.
  std::string context;
};

// One subscription as the transport sees it. options is the subscription's sink jsonb
// (validated when subscribing, by the transport's Validate — see registry.hpp); it can
// change between batches (evproc_alter_sink): a transport compares options_version and
// rebuilds what it derived from the options when it differs.
struct Subscription {
  int32_t id = 0;
  std::string name;
  std::string topic;
  std::string options;  // JSON object text, secrets included: never log it
  int64_t options_version = 0;
};

// What the framework asks a transport to send: one lease's messages, in order.
struct Batch {
  uint64_t token = 0;  // the framework's handle, given back in the Completion
  std::shared_ptr<const Subscription> subscription;
  std::vector<Message> messages;
};

// Per-request figures for the monitoring views (requests, answers by class, latency,
// bytes, last error); a transport reports what applies to it.
struct Stats {
  int64_t requests = 0;
  int64_t answers_2xx = 0;
  int64_t answers_3xx = 0;
  int64_t answers_4xx = 0;
  int64_t answers_5xx = 0;
  int64_t transport_errors = 0;  // no answer: timeouts, refused/reset connections, TLS
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  std::vector<int64_t> latencies_us;  // one per request, for the p50/p99 histogram
  std::string last_error;             // empty when the batch had none
};

// A finished batch: one outcome per message, in the batch's order.
struct Completion {
  uint64_t token = 0;
  std::vector<Outcome> outcomes;
  Stats stats;
};

// A socket a transport wants the worker to wait on.
struct WaitSocket {
  int fd = -1;
  bool readable = false;
  bool writable = false;
};

// The superuser's limits every transport enforces (see destination.hpp): where it may
// connect, and bounds. Given again after each SIGHUP.
struct Limits {
  std::string allowed_destinations;   // evproc.sink_allowed_destinations
  int max_in_flight_per_worker = 64;  // requests (or publishes) in flight in this process
};

class Transport {
 public:
  Transport() = default;
  Transport(const Transport &) = delete;
  Transport &operator=(const Transport &) = delete;
  virtual ~Transport() = default;

  // New limits (at start and after SIGHUP); applies to batches started afterwards.
  virtual void Configure(const Limits &limits) = 0;

  // Whether the transport would take one more batch of this subscription now (its
  // concurrency cap, Room() and the per-worker bound); the framework leases only then.
  [[nodiscard]] virtual bool HasRoom(const Subscription &subscription) const = 0;

  // How many batches of this subscription it keeps in flight at most. Several batches of
  // one subscription never hold events of the same key: each is a lease, and leases never
  // share a unit (a partition, or the replay), so per-key order holds across them as
  // inside one. 1 unless the transport overlaps its requests (the time a batch spends
  // being acknowledged and the next one leased is then spent sending others).
  [[nodiscard]] virtual int Room(const Subscription & /*subscription*/) const { return 1; }

  // Starts sending a batch; never blocks. May finish it at once (e.g. a destination
  // refused by the allow-list): the completion is then reported by the next Poll().
  virtual void Start(Batch batch) = 0;

  // Drives whatever I/O is ready and appends the batches that finished; never blocks.
  virtual void Poll(std::vector<Completion> *done) = 0;

  // What to wait on before the next Poll(): sockets (replacing *sockets' content) and the
  // longest wait in milliseconds (-1: none; 0: call Poll() at once).
  virtual void Interest(std::vector<WaitSocket> *sockets, long *timeout_ms) = 0;

  // How long a lease of this many messages must last for the transport to finish them in
  // the worst case (every request taking its full timeout); the worker leases for this
  // long (a lease that expires first is a failed attempt of each of its events).
  [[nodiscard]] virtual int64_t LeaseMs(const Subscription & /*subscription*/,
                                        size_t /*messages*/) const {
    return INT64_C(300000);  // 5 minutes
  }

  // Batches started and not yet reported.
  [[nodiscard]] virtual int InFlight() const = 0;

  // Drops everything in flight without completions (shutdown, or a subscription's sink
  // changed under it): the framework fails or lets expire the leases it holds for them.
  virtual void Abort() = 0;
};

}  // namespace evproc::sink

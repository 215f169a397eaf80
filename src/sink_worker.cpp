// A sink worker (sink_worker.hpp): the loop that leases, sends and acknowledges.
//
// One iteration (Step): poll the transports for finished batches and write each
// finished lease's outcomes (a short transaction per lease); then, when there may be
// work (State::lease_wanted: a wake, a lease's end, room freed, once a second; short
// looks spaced, kPassSpacing), in one short transaction, reload this worker's sink
// subscriptions and lease a batch for each active one whose transport has room; after
// the commit, start sending those batches. Then the
// worker waits (WaitEventSet) on its latch, postmaster death and the sockets its
// transports asked for, at most until the nearest transport timeout: never a busy poll,
// never a transaction open while a request is in flight.
//
// The C++ state (transports, batches in flight) lives on the heap for the life of the
// process; Step is noexcept and hands PostgreSQL errors back to the C loop, which
// re-throws them there (no C++ frame is unwound by a longjmp). A failed step loses at
// most the outcomes of the lease it was writing: that lease expires and its events come
// again (an expiry counts as a failed attempt).
#include <algorithm>
#include <csetjmp>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

// nlohmann/json before PostgreSQL's headers (which redefine snprintf).
#include "sink/registry.hpp"

#include "background.hpp"
#include "core/latency.hpp"
#include "error_boundary.hpp"
#include "lease_wait.hpp"
#include "settings.hpp"
#include "sink_lease.hpp"
#include "sink_worker.hpp"

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
}

namespace evproc {

bool in_sink_worker = false;

}  // namespace evproc

namespace {

namespace sink = evproc::sink;
namespace sinkdb = evproc::sinkdb;

// When nothing is in flight: ticks wake us (ReaderRegistration: the launcher sets our
// latch with the pull consumers' readers at each tick that has work, and at a change of
// subscriptions); this bounds how late a retry falling due or a breaker closing is
// noticed while this worker has sink subscriptions. Without any, only a new
// subscription (which wakes us) can give it work: it sleeps longer.
constexpr long kIdleWaitMs = 1000;
constexpr long kNoSubscriptionsWaitMs = 60000;
constexpr long kErrorPauseMs = 1000;
// A lease pass that finds only a few events (every read short) is not followed by
// another sooner than kPassSpacing times what such passes take, and at most
// kMostPassSpacingUs: at 1,000 events/s ticks come every 2 ms or so and a pass costs
// about 1 ms, so without this the worker spent most of a CPU leasing 1 to 4 events at
// a time, and on a loaded machine fell behind (docs/sinks.md, "Latency"). The bound
// keeps what the wait adds to the latency within the p50 target's reach (a pass's cost
// includes starting its sends, which grows with the events it found: unbounded, the
// spacing fed on itself, p50 17 ms). A pass that filled a read (a backlog) is followed
// at once.
constexpr double kPassSpacing = 2.0;
constexpr int64 kMostPassSpacingUs = 5000;
constexpr int kMaxSockets = 64;

int sink_index = -1;

// A sink subscription as this worker keeps it between transactions.
struct Unit {
  std::shared_ptr<sink::Subscription> spec;
  std::string type;
  Oid owner = InvalidOid;
  int batch_size = 100;
  bool active = false;
  int in_flight = 0;     // its batches in flight (up to its transport's Room())
  bool starved = false;  // the last pass stopped for lack of room, not of events
  bool seen = false;
};

struct InFlight {
  std::shared_ptr<sink::Subscription> spec;
  Oid owner = InvalidOid;
  std::string lease;
  std::vector<int64_t> ids;
  std::vector<std::string> keys;
  std::vector<bool> has_key;
};

struct State {
  std::map<std::string, std::unique_ptr<sink::Transport>> transports;
  std::map<int32_t, Unit> units;
  std::map<uint64_t, InFlight> in_flight;
  std::vector<sink::Completion> finished;
  uint64_t next_token = 1;
  bool released = false;
  bool configured = false;
  // A lease whose outcome could not be written (the step failed): expired at the next
  // step, so that its events come again now rather than when it would expire.
  std::vector<std::string> failed_leases;
  // Among the waiting readers of leases: woken at each tick (events committed) and ack.
  evproc::ReaderRegistration *wake = nullptr;
  // What to wait on next (filled by Step).
  sink::WaitSocket sockets[kMaxSockets];
  int socket_count = 0;
  long timeout_ms = kIdleWaitMs;
  // Whether the next step looks for work to lease (a transaction): after a wake (a tick
  // or an acknowledgement set our latch), after a lease ended (room, held events back),
  // after a failed step, and at least every kIdleWaitMs (retries falling due). Not for a
  // socket's readiness alone: a step per HTTP response or NATS acknowledgement that
  // also read the leases cost a transaction each, a whole CPU at 1,000 events/s
  // (docs/sinks.md, "Latency").
  bool lease_wanted = true;
  TimestampTz leased_at = 0;  // when the last lease pass committed
  // Pacing of passes that find little (every read short): what such a pass takes (a
  // moving average, microseconds) and whether the last one was one (see kPassSpacing).
  double pass_cost_us = 0;
  bool last_pass_short = false;
};

State *state = nullptr;

struct StepResult {
  ErrorData *error;
  bool other_failure;
  char message[256];
};

sink::Limits CurrentLimits() {
  sink::Limits limits;
  limits.allowed_destinations =
      evproc::sink_allowed_destinations != nullptr ? evproc::sink_allowed_destinations : "";
  limits.max_in_flight_per_worker = evproc::sink_max_in_flight;
  return limits;
}

sink::Transport *TransportFor(const std::string &type) {
  auto found = state->transports.find(type);
  if (found != state->transports.end()) return found->second.get();
  const sink::SinkType *known = sink::FindSinkType(type);
  if (known == nullptr) return nullptr;
  auto made = known->make();
  made->Configure(CurrentLimits());
  sink::Transport *transport = made.get();
  state->transports.emplace(type, std::move(made));
  return transport;
}

std::string TypeOf(const std::string &sink_text) {
  nlohmann::json sink = nlohmann::json::parse(sink_text, nullptr, false);
  if (!sink.is_object()) return "";
  auto type = sink.find("type");
  return type != sink.end() && type->is_string() ? type->get<std::string>() : "";
}

sinkdb::Fate FateOf(sink::Verdict verdict) {
  switch (verdict) {
    case sink::Verdict::kDelivered:
      return sinkdb::Fate::kDelivered;
    case sink::Verdict::kRetry:
      return sinkdb::Fate::kRetry;
    case sink::Verdict::kRefused:
      return sinkdb::Fate::kDead;
    case sink::Verdict::kFatal:
      return sinkdb::Fate::kPause;
    case sink::Verdict::kHeld:
      return sinkdb::Fate::kHeld;
  }
  return sinkdb::Fate::kRetry;
}

// Writes one finished lease's outcomes in its own transaction.
void EndOne(const InFlight &lease, const sink::Completion &completion) {
  size_t count = lease.ids.size();
  std::vector<sinkdb::EventOutcome> outcomes(count);
  for (size_t i = 0; i < count; ++i) {
    const sink::Outcome *outcome =
        i < completion.outcomes.size() ? &completion.outcomes[i] : nullptr;
    sinkdb::EventOutcome &out = outcomes[i];
    out.event_id = lease.ids[i];
    out.key = lease.has_key[i] ? lease.keys[i].c_str() : nullptr;
    out.fate = outcome != nullptr ? FateOf(outcome->verdict) : sinkdb::Fate::kRetry;
    out.retry_after_ms = outcome != nullptr ? outcome->retry_after_ms : -1;
    out.error = outcome != nullptr && !outcome->error.empty() ? outcome->error.c_str() : nullptr;
    out.context =
        outcome != nullptr && !outcome->context.empty() ? outcome->context.c_str() : nullptr;
  }
  std::vector<int64> buckets(evproc::core::kLatencyBuckets, 0);
  for (int64_t latency : completion.stats.latencies_us) {
    ++buckets[evproc::core::LatencyBucket(latency)];
  }
  sinkdb::BatchStats stats{};
  stats.requests = completion.stats.requests;
  stats.answers_2xx = completion.stats.answers_2xx;
  stats.answers_3xx = completion.stats.answers_3xx;
  stats.answers_4xx = completion.stats.answers_4xx;
  stats.answers_5xx = completion.stats.answers_5xx;
  stats.transport_errors = completion.stats.transport_errors;
  stats.bytes_sent = completion.stats.bytes_sent;
  stats.bytes_received = completion.stats.bytes_received;
  stats.latency_buckets = buckets.data();
  stats.last_error =
      completion.stats.last_error.empty() ? nullptr : completion.stats.last_error.c_str();
  sinkdb::SinkSubscription subscription{};
  subscription.id = lease.spec->id;
  subscription.name = lease.spec->name.c_str();
  subscription.topic = lease.spec->topic.c_str();
  subscription.owner = lease.owner;
  const sinkdb::EventOutcome *data = outcomes.data();
  int n = static_cast<int>(count);
  const char *lease_id = lease.lease.c_str();
  bool open = evproc::pg::CallPostgres([] { return sinkdb::Begin(); });
  if (!open) return;  // the extension is gone: the lease goes with it
  evproc::pg::CallPostgres([&] {
    sinkdb::EndLease(subscription, lease_id, n, data, stats);
    sinkdb::Commit();
  });
}

// Leases one batch of the unit's subscription (in the open transaction) and adds it to
// what starts after the commit; how many events it leased.
int LeaseOne(const Unit &unit, sink::Transport *transport, std::vector<sink::Batch> *batches,
             std::vector<InFlight> *records) {
  int64 lease_ms = transport->LeaseMs(*unit.spec, static_cast<size_t>(unit.batch_size));
  sinkdb::SinkSubscription row{};
  row.id = unit.spec->id;
  row.name = unit.spec->name.c_str();
  row.topic = unit.spec->topic.c_str();
  row.owner = unit.owner;
  int batch_size = unit.batch_size;
  sinkdb::LeaseResult leased = evproc::pg::CallPostgres(
      [&row, batch_size, lease_ms] { return sinkdb::Lease(row, batch_size, lease_ms); });
  if (leased.lease == nullptr || leased.count == 0) return 0;
  sink::Batch batch;
  batch.token = state->next_token++;
  batch.subscription = unit.spec;
  InFlight record;
  record.spec = unit.spec;
  record.owner = unit.owner;
  record.lease = leased.lease;
  for (int i = 0; i < leased.count; ++i) {
    const sinkdb::LeasedEvent &event = leased.events[i];
    sink::Message message;
    message.event_id = event.id;
    message.has_key = event.key != nullptr;
    message.key = event.key != nullptr ? event.key : "";
    message.has_type = event.type != nullptr;
    message.type = event.type != nullptr ? event.type : "";
    message.payload = event.payload != nullptr ? event.payload : "null";
    message.headers = event.headers != nullptr ? event.headers : "";
    message.enqueued_at = event.enqueued_at != nullptr ? event.enqueued_at : "";
    message.attempt = event.attempt;
    message.replay = event.replay;
    record.ids.push_back(message.event_id);
    record.keys.push_back(message.key);
    record.has_key.push_back(message.has_key);
    batch.messages.push_back(std::move(message));
  }
  records->push_back(std::move(record));
  batches->push_back(std::move(batch));
  return leased.count;
}

// Reloads the subscriptions and leases what may be sent; starts it after the commit.
int LeaseAndStart(bool *full_read) {
  if (!evproc::pg::CallPostgres([] { return sinkdb::Begin(); })) return 0;
  if (!state->released) {
    evproc::pg::CallPostgres(
        [] { sinkdb::ReleaseStaleLeases(sink_index, evproc::sink_worker_count); });
  }
  sinkdb::SinkSubscription *rows = nullptr;
  int count = evproc::pg::CallPostgres(
      [&rows] { return sinkdb::LoadSubscriptions(sink_index, evproc::sink_worker_count, &rows); });
  for (auto &[id, unit] : state->units) unit.seen = false;
  for (int i = 0; i < count; ++i) {
    const sinkdb::SinkSubscription &row = rows[i];
    Unit &unit = state->units[row.id];
    unit.seen = true;
    if (!unit.spec || unit.spec->options != row.sink || unit.spec->name != row.name) {
      auto spec = std::make_shared<sink::Subscription>();
      spec->id = row.id;
      spec->name = row.name;
      spec->topic = row.topic;
      spec->options = row.sink;
      spec->options_version = unit.spec ? unit.spec->options_version + 1 : 1;
      unit.spec = std::move(spec);
      unit.type = TypeOf(row.sink);
    }
    unit.owner = row.owner;
    unit.batch_size = row.batch_size;
    unit.active = row.active;
  }
  for (auto it = state->units.begin(); it != state->units.end();) {
    it = (!it->second.seen && it->second.in_flight == 0) ? state->units.erase(it) : std::next(it);
  }
  std::vector<sink::Batch> batches;
  std::vector<InFlight> records;
  for (auto &[id, unit] : state->units) {
    if (!unit.seen || !unit.active) continue;
    sink::Transport *transport = TransportFor(unit.type);
    unit.starved = false;
    if (transport == nullptr) continue;
    if (!transport->HasRoom(*unit.spec)) {
      unit.starved = true;
      continue;
    }
    // Several batches of one subscription at once (transport.hpp Room()): each lease
    // takes units no other lease holds, so they never share a key. Until a read comes
    // back short: it claimed every unit with work no lease holds (lease_read.cpp), so
    // another read would find nothing (commits since wake us again). A read that finds
    // nothing is most of an idle pass's cost.
    int room = transport->Room(*unit.spec) - unit.in_flight;
    int taken = 0;
    bool full = true;
    while (full && taken < room) {
      int count = LeaseOne(unit, transport, &batches, &records);
      if (count == 0) break;
      ++taken;
      full = count >= unit.batch_size;
    }
    unit.starved = full && taken == room;
    if (full && taken > 0) *full_read = true;
  }
  evproc::pg::CallPostgres([] { sinkdb::Commit(); });
  state->released = true;
  // Committed: the leases exist; only now does anything leave the database.
  for (size_t i = 0; i < batches.size(); ++i) {
    ++state->units[batches[i].subscription->id].in_flight;
    state->in_flight.emplace(batches[i].token, std::move(records[i]));
  }
  int leased = 0;
  for (const sink::Batch &batch : batches) leased += static_cast<int>(batch.messages.size());
  for (sink::Batch &batch : batches) {
    const std::string &type = state->units[batch.subscription->id].type;
    TransportFor(type)->Start(std::move(batch));
  }
  return leased;
}

void StepBody() {
  if (state == nullptr) state = new State();
  if (state->wake == nullptr) state->wake = new evproc::ReaderRegistration();
  if (!state->configured) {
    for (auto &[type, transport] : state->transports) transport->Configure(CurrentLimits());
    state->configured = true;
  }
  if (!state->failed_leases.empty()) {
    std::vector<std::string> leases = std::move(state->failed_leases);
    state->failed_leases.clear();
    state->lease_wanted = true;  // their events come again now
    if (evproc::pg::CallPostgres([] { return sinkdb::Begin(); })) {
      for (const std::string &lease : leases) {
        const char *id = lease.c_str();
        evproc::pg::CallPostgres([id] { sinkdb::ExpireLease(id); });
      }
      evproc::pg::CallPostgres([] { sinkdb::Commit(); });
    }
  }
  TimestampTz step_start = GetCurrentTimestamp();
  for (auto &[type, transport] : state->transports) transport->Poll(&state->finished);
  int ended = static_cast<int>(state->finished.size());
  // Each finished lease is written in its own transaction, and forgotten before: if
  // writing it fails, it expires instead of failing again and again.
  while (!state->finished.empty()) {
    sink::Completion completion = std::move(state->finished.back());
    state->finished.pop_back();
    auto found = state->in_flight.find(completion.token);
    if (found == state->in_flight.end()) continue;
    InFlight lease = std::move(found->second);
    state->in_flight.erase(found);
    auto unit = state->units.find(lease.spec->id);
    if (unit != state->units.end() && unit->second.in_flight > 0) --unit->second.in_flight;
    state->failed_leases.push_back(lease.lease);
    EndOne(lease, completion);
    state->failed_leases.pop_back();
  }
  TimestampTz lease_start = GetCurrentTimestamp();
  if (ended > 0 || lease_start - state->leased_at >= kIdleWaitMs * 1000L) {
    state->lease_wanted = true;
  }
  // A unit that found no room may have some now (requests of other batches ended).
  for (auto &[id, unit] : state->units) {
    if (!unit.starved || state->lease_wanted) continue;
    sink::Transport *transport = TransportFor(unit.type);
    if (transport != nullptr && transport->HasRoom(*unit.spec) &&
        transport->Room(*unit.spec) > unit.in_flight) {
      state->lease_wanted = true;
    }
  }
  int leased = 0;
  auto spacing_us =
      std::min(static_cast<int64>(kPassSpacing * state->pass_cost_us), kMostPassSpacingUs);
  bool paced = state->last_pass_short && lease_start - state->leased_at < spacing_us;
  if (state->lease_wanted && !paced) {
    bool full = false;
    leased = LeaseAndStart(&full);
    state->lease_wanted = false;  // only once it committed: a failed step looks again
    state->leased_at = lease_start;
    state->last_pass_short = !full;
    if (!full) {
      auto took = static_cast<double>(GetCurrentTimestamp() - lease_start);
      state->pass_cost_us =
          state->pass_cost_us == 0 ? took : 0.8 * state->pass_cost_us + 0.2 * took;
    }
  }
  // Where a step's time goes (bench/webhook SINK_DEBUG=1 KEEP_LOG=1).
  if (ended > 0 || leased > 0) {
    TimestampTz step_end = GetCurrentTimestamp();
    evproc::pg::CallPostgres([&] {
      elog(DEBUG1, "evproc sink %d: ended %d leases in %.2f ms, leased %d events in %.2f ms",
           sink_index, ended, static_cast<double>(lease_start - step_start) / 1000.0, leased,
           static_cast<double>(step_end - lease_start) / 1000.0);
    });
  }
  // What to wait on.
  state->socket_count = 0;
  long timeout = state->units.empty() ? kNoSubscriptionsWaitMs : kIdleWaitMs;
  std::vector<sink::WaitSocket> sockets;
  for (auto &[type, transport] : state->transports) {
    long wanted = -1;
    transport->Interest(&sockets, &wanted);
    if (wanted >= 0 && wanted < timeout) timeout = wanted;
    for (const sink::WaitSocket &socket : sockets) {
      if (state->socket_count < kMaxSockets) state->sockets[state->socket_count++] = socket;
    }
  }
  // The next pass for retries falling due comes kIdleWaitMs after this one, however
  // often sockets wake us meanwhile.
  long until_pass =
      kIdleWaitMs - static_cast<long>((GetCurrentTimestamp() - state->leased_at) / 1000);
  if (until_pass < timeout) timeout = until_pass < 0 ? 0 : until_pass;
  if (state->lease_wanted) {  // paced: the pass comes when its spacing has passed
    int64 left_us = state->leased_at + spacing_us - GetCurrentTimestamp();
    long left_ms = left_us <= 0 ? 0 : static_cast<long>((left_us + 999) / 1000);
    if (left_ms < timeout) timeout = left_ms;
  }
  state->timeout_ms = timeout;
}

void Step(StepResult *out) noexcept {
  out->error = nullptr;
  out->other_failure = false;
  try {
    StepBody();
  } catch (const evproc::pg::PgError &error) {
    out->error = error.data();
  } catch (const std::bad_alloc &) {
    out->other_failure = true;
    std::strncpy(out->message, "out of memory", sizeof(out->message) - 1);
  } catch (const std::exception &error) {
    out->other_failure = true;
    std::strncpy(out->message, error.what(), sizeof(out->message) - 1);
  }
}

// Stopping (SIGTERM) with batches in flight: their leases end at once with every event
// held, so they come again after the restart without an attempt counted (whether a
// request in flight reached its destination is unknown; receivers deduplicate). Each
// in its own short transaction; any error gives up (the leases then expire, counted).
// Runs with interrupts held.
void ReturnInFlight() noexcept {
  if (state == nullptr) return;
  try {
    while (!state->in_flight.empty()) {
      auto first = state->in_flight.begin();
      InFlight lease = std::move(first->second);
      state->in_flight.erase(first);
      sink::Completion completion;
      completion.outcomes.resize(lease.ids.size());
      for (sink::Outcome &outcome : completion.outcomes) outcome.verdict = sink::Verdict::kHeld;
      EndOne(lease, completion);
    }
  } catch (const std::exception &) {
    // Leaving anyway: proc_exit aborts a transaction left open.
  }
}

void Reconfigure() noexcept {
  if (state != nullptr) state->configured = false;
}

// Waits on the latch, postmaster death and the transports' sockets (PostgreSQL code).
void Wait() {
  long timeout = state != nullptr ? state->timeout_ms : kIdleWaitMs;
  int sockets = state != nullptr ? state->socket_count : 0;
  long stats_due = evproc::ReportStats();
  if (stats_due > 0 && stats_due < timeout) timeout = stats_due;
  WaitEventSet *set = CreateWaitEventSet(TopMemoryContext, sockets + 2);
  AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
  AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
  for (int i = 0; i < sockets; ++i) {
    uint32 events = 0;
    if (state->sockets[i].readable) events |= WL_SOCKET_READABLE;
    if (state->sockets[i].writable) events |= WL_SOCKET_WRITEABLE;
    if (events != 0) AddWaitEventToSet(set, events, state->sockets[i].fd, nullptr, nullptr);
  }
  WaitEvent event;
  (void)WaitEventSetWait(set, timeout, &event, 1, PG_WAIT_EXTENSION);
  FreeWaitEventSet(set);
  // Reset only when seen set: a wake after this look stays set and ends the next wait.
  if (MyLatch->is_set) {
    ResetLatch(MyLatch);
    if (state != nullptr) state->lease_wanted = true;
  }
}

}  // namespace

extern "C" void evproc_sink_main(Datum main_arg) {
  sink_index = DatumGetInt32(main_arg);
  evproc::in_sink_worker = true;
  // Started by the launcher (sink_supervisor.hpp) for the database it serves.
  Oid database = InvalidOid;
  std::memcpy(&database, MyBgworkerEntry->bgw_extra, sizeof(Oid));
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);  // the latch is set: a wait on the network ends at once
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnectionByOid(database, InvalidOid, 0);
  pgstat_report_appname("evproc sink");
  // Its commits need not wait for a WAL flush: a lease or an acknowledgement lost in a
  // crash only makes its events come again, and they are sent again (receivers
  // deduplicate by webhook-id, streams by message id); nothing is acknowledged before
  // the destination took it. A flush per commit was most of a step's time under load.
  SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
  ereport(LOG, (errmsg("evproc sink %d started", sink_index)));

  MemoryContext loop_context =
      AllocSetContextCreate(TopMemoryContext, "evproc sink loop", ALLOCSET_DEFAULT_SIZES);
  sigjmp_buf recover;
  if (sigsetjmp(recover, 1) != 0) {
    evproc::RecoverFromError();
    evproc::SleepOnLatch(kErrorPauseMs);
  }
  PG_exception_stack = &recover;

  for (;;) {
    // SIGTERM (the launcher stopping its workers: extension dropped, database dropped,
    // renamed or moved, server shutdown) between two steps: no transaction is open, so a
    // plain line and exit code 0 instead of die()'s FATAL. Batches in flight are
    // returned, their events held (ReturnInFlight): they come again with no attempt
    // counted. Inside a step, die() aborts its transaction at the next
    // interrupt check, as a delivery worker's.
    if (ProcDiePending) {
      // Held: ereport and the exit callbacks check for interrupts, and the pending die()
      // would turn the exit into a FATAL.
      HOLD_INTERRUPTS();
      ReturnInFlight();
      ereport(LOG, (errmsg("evproc sink %d stopped", sink_index)));
      proc_exit(0);
    }
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
      Reconfigure();
    }
    MemoryContextReset(loop_context);
    MemoryContextSwitchTo(loop_context);
    StepResult step{};
    Step(&step);
    if (step.error != nullptr) ReThrowError(step.error);
    if (step.other_failure) elog(ERROR, "evproc sink %d: %s", sink_index, step.message);
    Wait();
  }
}

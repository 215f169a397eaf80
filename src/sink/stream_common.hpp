// What the stream transports share: a wake-up descriptor that libraries' own threads
// write to (the worker waits on it next to its latch), signals blocked around calls that
// may start library threads, and per-key sequencing of a batch.
#pragma once

#include <pthread.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "sink/transport.hpp"

namespace evproc::sink {

inline int64_t StreamNowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Blocks every signal in this thread while alive. A thread inherits its creator's mask:
// the client libraries' threads, started inside calls made under this guard, never run
// PostgreSQL's signal handlers (SIGTERM, SIGHUP, SIGUSR1 and the latch's SIGURG stay with
// the worker's own thread).
class SignalsBlocked {
 public:
  SignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &saved_);
  }
  ~SignalsBlocked() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  SignalsBlocked(const SignalsBlocked &) = delete;
  SignalsBlocked &operator=(const SignalsBlocked &) = delete;

 private:
  sigset_t saved_;
};

// One batch's progress through a stream transport: per-key order (transport.hpp) — a
// message is sent once every earlier message of its key was delivered; a failed one holds
// the later ones of its key; once the destination fails, nothing more is sent.
struct StreamBatch {
  Batch batch;
  std::vector<Outcome> outcomes;
  std::vector<uint8_t> state;         // 0 waiting, 1 in flight, 2 decided
  std::vector<int64_t> sent_us;       // when each message went out
  std::set<std::string> busy_keys;    // a message of the key is in flight
  std::set<std::string> failed_keys;  // a message of the key failed: hold the rest
  int in_flight = 0;
  bool stop = false;
  Stats stats;

  explicit StreamBatch(Batch from) : batch(std::move(from)) {
    outcomes.resize(batch.messages.size());
    state.assign(batch.messages.size(), 0);
    sent_us.assign(batch.messages.size(), 0);
  }

  void Decide(size_t index, Verdict verdict, std::string error = {}, bool feeds_breaker = true,
              std::string context = {}) {
    Outcome &outcome = outcomes[index];
    outcome.verdict = verdict;
    outcome.feeds_breaker = feeds_breaker;
    outcome.error = std::move(error);
    outcome.context = std::move(context);
    if (verdict != Verdict::kDelivered && verdict != Verdict::kHeld && !outcome.error.empty()) {
      stats.last_error = outcome.error;
    }
    state[index] = 2;
  }

  // Marks a sent message finished and frees (or, when it failed, blocks) its key.
  void Finished(size_t index, bool failed) {
    const Message &message = batch.messages[index];
    --in_flight;
    if (message.has_key) {
      busy_keys.erase(message.key);
      if (failed) failed_keys.insert(message.key);
    }
  }

  // Whether message index may go out now: 1 yes, -1 not yet (an earlier message of its
  // key is in flight), 0 never in this batch (held, decided here).
  int Ready(size_t index) {
    const Message &message = batch.messages[index];
    if (stop || (message.has_key && failed_keys.count(message.key) != 0)) {
      Decide(index, Verdict::kHeld);
      return 0;
    }
    if (message.has_key && busy_keys.count(message.key) != 0) return -1;
    return 1;
  }

  void Sent(size_t index) {
    const Message &message = batch.messages[index];
    state[index] = 1;
    sent_us[index] = StreamNowUs();
    ++in_flight;
    if (message.has_key) busy_keys.insert(message.key);
  }

  [[nodiscard]] bool Done() const {
    if (in_flight != 0) return false;
    for (uint8_t each : state) {
      if (each != 2) return false;
    }
    return true;
  }

  Completion Complete() {
    Completion completion;
    completion.token = batch.token;
    completion.outcomes = std::move(outcomes);
    completion.stats = std::move(stats);
    return completion;
  }
};

}  // namespace evproc::sink

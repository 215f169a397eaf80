#include "delivery_isolation.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

#include "delivery_plans.hpp"
#include "error_boundary.hpp"
#include "handler_call.hpp"
#include "settings.hpp"

namespace evproc::delivery {
namespace {

class Batch {
 public:
  Batch(const Unit &unit, ItemList &items, const char *handler_search_path,
        const ChargedEvents &charged, MemoryContext context)
      : items_(items.items),
        count_(static_cast<size_t>(items.count)),
        charged_(charged),
        context_(context) {
    // evproc.max_handler_timeout caps what the subscription asks for.
    int timeout_ms = std::min(unit.timeout_ms, max_handler_timeout_ms);
    target_ =
        HandlerTarget{unit.subscription_id, unit.partition, unit.handler_fn,  unit.batch_form,
                      unit.owner,           timeout_ms,     plans.event_type, handler_search_path};
  }

  // Delivers the pending items in order. Returns the error of a handler that is broken
  // for the whole batch (nothing was charged to the events), or nullptr.
  ErrorData *Deliver() {
    std::vector<size_t> line;
    for (size_t i = 0; i < count_; ++i) {
      Item &item = items_[i];
      // Window events of parked keys wait behind their head, in order.
      if (!item.from_retry && item.key_parked) {
        item.outcome = Outcome::kParked;
        continue;
      }
      line.push_back(i);
    }
    if (line.empty()) return nullptr;
    ErrorData *error = TryCall(line);
    if (error == nullptr) {
      for (size_t i : line) items_[i].outcome = Outcome::kDelivered;
      return nullptr;
    }
    if (IsBrokenHandler(error)) return error;
    Bisect(line, error);
    return nullptr;
  }

 private:
  // Errors that say the handler itself cannot work (its code refers to something missing
  // or forbidden), whatever the events: pause instead of burning every event's attempts.
  static bool IsBrokenHandler(const ErrorData *error) {
    const char *state = unpack_sql_state(error->sqlerrcode);
    return std::strncmp(state, "42", 2) == 0 || std::strncmp(state, "3F", 2) == 0;
  }

  ErrorData *TryCall(const std::vector<size_t> &line) {
    std::vector<Datum> events;
    std::vector<int64> ids;
    events.reserve(line.size());
    ids.reserve(line.size());
    bool holds_charged = false;
    for (size_t i : line) {
      events.push_back(items_[i].event);
      ids.push_back(items_[i].event_id);
      holds_charged =
          holds_charged ||
          std::binary_search(charged_.ids, charged_.ids + charged_.count, items_[i].event_id);
    }
    // A call with an event whose handler call outlived its worker (handler_watch.hpp)
    // fails as that call did, without running: bisected, the charged events fail alone.
    if (holds_charged) return RanAway();
    return CallHandlerIsolated(target_, events.data(), ids.data(), static_cast<int>(ids.size()),
                               context_);
  }

  ErrorData *RanAway() {
    if (ran_away_ == nullptr) {
      ran_away_ = pg::CallPostgres([&] {
        MemoryContext previous = MemoryContextSwitchTo(context_);
        auto *error = static_cast<ErrorData *>(palloc0(sizeof(ErrorData)));
        error->elevel = ERROR;
        error->sqlerrcode = ERRCODE_QUERY_CANCELED;
        error->message = psprintf(
            "canceling statement due to statement timeout: the handler ran past its "
            "handler_timeout of %d ms plus evproc.handler_grace, and its worker was ended",
            target_.timeout_ms);
        MemoryContextSwitchTo(previous);
        return error;
      });
    }
    return ran_away_;
  }

  // The line failed as a whole with `error`: split it until the poison events are alone.
  // Halves go in order, and a key that failed holds back its later events.
  void Bisect(const std::vector<size_t> &line, ErrorData *error) {
    if (line.size() == 1) {
      MarkFailed(line.front(), error);
      return;
    }
    size_t half = line.size() / 2;
    DeliverLine(
        std::vector<size_t>(line.begin(), line.begin() + static_cast<std::ptrdiff_t>(half)));
    DeliverLine(std::vector<size_t>(line.begin() + static_cast<std::ptrdiff_t>(half), line.end()));
  }

  void DeliverLine(const std::vector<size_t> &candidates) {
    std::vector<size_t> line;
    for (size_t i : candidates) {
      Item &item = items_[i];
      if (item.key != nullptr && failed_keys_.count(item.key) != 0) {
        if (!item.from_retry) item.outcome = Outcome::kParked;
        continue;  // a retry stays where it is in line
      }
      line.push_back(i);
    }
    if (line.empty()) return;
    ErrorData *error = TryCall(line);
    if (error == nullptr) {
      for (size_t i : line) items_[i].outcome = Outcome::kDelivered;
      return;
    }
    Bisect(line, error);
  }

  void MarkFailed(size_t index, ErrorData *error) {
    Item &item = items_[index];
    item.outcome = Outcome::kFailed;
    item.error = error;
    if (item.key != nullptr) failed_keys_.emplace(item.key);
  }

  Item *items_;
  size_t count_;
  ChargedEvents charged_;
  ErrorData *ran_away_ = nullptr;
  MemoryContext context_;
  HandlerTarget target_{};
  std::unordered_set<std::string> failed_keys_;
};

}  // namespace

ErrorData *DeliverIsolated(const Unit &unit, ItemList &items, const char *handler_search_path,
                           const ChargedEvents &charged, MemoryContext context) {
  Batch batch(unit, items, handler_search_path, charged, context);
  return batch.Deliver();
}

}  // namespace evproc::delivery

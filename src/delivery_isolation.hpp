// Running the handler (delivery step 3) with poison isolation: the batch's events go to
// the subscription's handler in one call, each attempt in a subtransaction; when it
// fails, the line is bisected until the poison events are alone, and a key that failed
// holds back its later events (docs/design.md). C++ code.
#pragma once

#include "delivery_types.hpp"
#include "handler_watch.hpp"

namespace evproc::delivery {

// Delivers the batch's pending items in order and sets each one's outcome (delivered,
// failed with its error, or parked behind its key; a window or replay event whose key
// was read parked, Item::key_parked, waits behind its head). Returns the error of a handler that is
// broken for the whole batch (nothing is charged to the events), or nullptr. The handler runs with
// `handler_search_path`, its owner's. A call with one of the `charged` events (whose
// call outlived a worker, handler_watch.hpp) fails with 57014 without running.
ErrorData *DeliverIsolated(const Unit &unit, ItemList &items, const char *handler_search_path,
                           const ChargedEvents &charged, MemoryContext context);

}  // namespace evproc::delivery

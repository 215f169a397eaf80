// Reading a batch's events (delivery step 2): the unit's due retries, the next events of
// its snapshot windows (docs/design.md), or a replay's next events; each window or replay
// event with whether its key is parked, read in the same statement.
// Read-only; items and strings go to `context`.
#pragma once

#include "delivery_types.hpp"

namespace evproc::delivery {

// PostgreSQL code (inside SPI; wrap in CallPostgres):
// The unit's due parked keys with the events waiting behind them, in line order.
void ReadDueRetries(const Unit &unit, ItemList *items, MemoryContext context);
// A replay's next events (up to a batch); moves *at past the ids it looked at. Each
// says whether its key is parked (Item::key_parked), as window events do.
void ReadReplay(const Unit &unit, ReplayPosition *at, ItemList *items, MemoryContext context);

// C++ code: fills the batch from the unit's windows, one after the other (a window is
// about one tick of commits wide, often less than a batch), and moves *at along. Each
// event says whether its key is parked when the unit has parked keys (has_retries).
void ReadWindows(const Unit &unit, Position *at, ItemList *items, MemoryContext context);

}  // namespace evproc::delivery

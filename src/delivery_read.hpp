// Reading a batch's events (delivery step 2): the unit's due retries and parked keys,
// the next events of its snapshot windows (docs/design.md), or a replay's next events.
// Read-only; items and strings go to `context`.
#pragma once

#include "delivery_types.hpp"

namespace evproc::delivery {

// PostgreSQL code (inside SPI; wrap in CallPostgres):
// The unit's due parked keys with the events waiting behind them, in line order.
void ReadDueRetries(const Unit &unit, ItemList *items, MemoryContext context);
// The keys parked in the unit's partition (a replay's: in any partition).
void ReadParkedKeys(const Unit &unit, KeyList *keys, MemoryContext context);
// A replay's next events (up to a batch); moves *at past the ids it looked at.
void ReadReplay(const Unit &unit, ReplayPosition *at, ItemList *items, MemoryContext context);

// C++ code: fills the batch from the unit's windows, one after the other (a window is
// about one tick of commits wide, often less than a batch), and moves *at along.
void ReadWindows(const Unit &unit, Position *at, ItemList *items, MemoryContext context);

}  // namespace evproc::delivery

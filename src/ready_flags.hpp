// Marking units ready after a tick (docs/design.md "Claiming a unit"): the launcher's
// part of the ready units. After each tick the units of the slots it stamped (every
// unit after a start) become ready, through one statement (kFlagReady,
// delivery_statements.hpp), which skips the units someone holds and returns their slots:
// they are tried again within kRetryMs, with the next tick's slots or alone, as are all
// of them when the statement's tables are locked by someone else. Extension versions
// before 0.3.0 have no ready units (their workers claim the old way). Launcher process
// only.
#pragma once

extern "C" {
#include "postgres.h"
}

namespace evproc::ready {

constexpr long kRetryMs = 10;

// Adds `slots` (every unit with every_unit) to what the next flagging marks.
void Remember(const int *slots, int count, bool every_unit);
// Whether something is left to mark.
bool Pending();
// Marks what was remembered, inside the caller's transaction (the launcher's gated one,
// taken after the slots' stamps: a batch that commits after its snapshot looks at the
// stamp after its commit, src/delivery_ready.cpp). `extension` and `version` name the
// served extension (whether it marks units ready is looked up once per version).
// Returns how many units became ready. An error leaves every slot to try again.
int FlagInTransaction(Oid extension, const char *version);
// After the commit of that transaction: names the units it marked ready to the workers
// (shared_state.hpp HintReady), so that they claim them by key. Before the commit a
// worker would find them not ready yet and drop the hints.
void HintFlagged();

}  // namespace evproc::ready

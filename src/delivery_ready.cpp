#include "delivery_ready.hpp"

#include "commit_wake.hpp"
#include "core/ready_hints.hpp"
#include "error_boundary.hpp"
#include "extension_gate.hpp"
#include "shared_state.hpp"

extern "C" {
#include "access/xact.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace evproc::delivery {

namespace {

bool may_clear = false;

// The unit the last batch cleared, and the tick it moved to.
struct Cleared {
  bool pending;
  int32 subscription_id;
  int32 partition;
  int32 topic_id;
  int64 tick_id;
};
Cleared cleared{};

// The unit the last batch left ready, hinted after its commit.
struct Kept {
  bool pending;
  int32 subscription_id;
  int32 partition;
};
Kept kept{};

// Stale hints (units claimed or cleared meanwhile) cost a look each; a claim looks at no
// more than this many before it reads every ready unit instead.
constexpr int kMostHintsPerClaim = 64;
TimestampTz last_full_claim = 0;
// Hints were lost: every claim reads every ready unit until one finds none.
bool reading_all = false;
uint32 lost_seen = 0;
// The earliest due retry or closing breaker this worker last heard of (NextDue, when it
// found nothing to claim); 0: none.
TimestampTz next_due = 0;

}  // namespace

void SetReadyMayClear(bool value) {
  may_clear = value;
  cleared.pending = false;
  kept.pending = false;
}

SPIPlanPtr ClaimPlan() {
  return plans.claim_ready != nullptr && LauncherServesHere() ? plans.claim_ready : plans.claim;
}

HintedClaim ClaimHintedUnit() {
  if (plans.claim_hinted == nullptr || ClaimPlan() != plans.claim_ready)
    return HintedClaim::kReadAll;
  // Hints were lost (the ring was full): read every ready unit until that finds none.
  uint32 lost = HintsLostCount();
  if (lost != lost_seen) {
    lost_seen = lost;
    reading_all = true;
  }
  if (reading_all) return HintedClaim::kReadAll;
  TimestampTz now = GetCurrentTimestamp();
  bool due = TimestampDifferenceExceeds(last_full_claim, now, core::kFullClaimEveryMs);
  if (due) {
    last_full_claim = now;
    return HintedClaim::kReadAll;
  }
  int32 subscription_id = 0;
  int32 partition = 0;
  for (int i = 0; i < kMostHintsPerClaim && TakeReadyHint(&subscription_id, &partition); ++i) {
    Datum args[] = {Int32GetDatum(subscription_id), Int32GetDatum(partition)};
    if (Run(plans.claim_hinted, args, nullptr, false, SPI_OK_SELECT) == 1)
      return HintedClaim::kClaimed;
  }
  // Out of hints: a worker that slept until a retry fell due reads every unit for it.
  if (next_due != 0 && next_due <= now) {
    next_due = 0;
    last_full_claim = now;
    return HintedClaim::kReadAll;
  }
  return HintedClaim::kNone;
}

void NoteNextDue(TimestampTz due) { next_due = due; }

void ReadAllFound(bool found) {
  if (!found) reading_all = false;
}

bool StillReady(const Unit &unit, const Position &at, bool *isnull) {
  *isnull = !may_clear;
  if (!may_clear) return true;
  bool ready = at.window_tick != 0 || at.tick_id < DirtyTick(unit.topic_id, unit.partition);
  if (ready) {
    kept = Kept{true, unit.subscription_id, unit.partition};
  } else {
    cleared = Cleared{true, unit.subscription_id, unit.partition, unit.topic_id, at.tick_id};
  }
  return ready;
}

// Why nothing is missed: the launcher stamps a slot (dirty_tick) before its statement
// that marks the slot's units ready takes its snapshot (src/launcher.cpp). If our commit
// came before that snapshot, the launcher sees the unit not ready: it marks it, or,
// should someone else hold it, tries again shortly. If it came after, the stamp came
// before our commit, and this look, after the commit, sees it.
void ReadyAfterCommit() {
  if (kept.pending) {
    kept.pending = false;
    HintReady(kept.subscription_id, kept.partition);
  }
  if (!cleared.pending) return;
  cleared.pending = false;
  pg_memory_barrier();
  if (DirtyTick(cleared.topic_id, cleared.partition) <= cleared.tick_id) return;
  bool marked = false;
  pg::CallPostgres([&marked] {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    if (EnterExtension(nullptr) == ExtensionGate::kInstalled) {
      if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "evproc: SPI_connect failed");
      PushActiveSnapshot(GetTransactionSnapshot());
      if (EnsurePlans() && plans.set_ready != nullptr) {
        Datum args[] = {Int32GetDatum(cleared.subscription_id), Int32GetDatum(cleared.partition)};
        marked = Run(plans.set_ready, args, nullptr, false, SPI_OK_UPDATE) == 1;
      }
      PopActiveSnapshot();
      SPI_finish();
    }
    CommitTransactionCommand();
  });
  if (marked) HintReady(cleared.subscription_id, cleared.partition);  // once committed
}

}  // namespace evproc::delivery

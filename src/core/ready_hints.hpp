// Ready hints (docs/design.md "Claiming a unit"): the units that may have work, named in
// the order they became ready, for workers to claim one by its key instead of reading
// every ready unit. Pure C++, unit-tested; it lives in shared memory (shared_state.hpp),
// where a spinlock guards every call.
//
// A hint is only a hint: progress.ready stays the truth. A worker that takes a hint looks
// at the unit's newest row version and claims it only if it is still ready; a unit ready
// without a hint (the ring was full, its holder was not a worker, a unit made ready by
// SQL) is found by the claim that reads every ready unit, which a worker runs when the
// hints run out and at least every kFullClaimEveryMs. Under a transaction held open that
// difference is the point: the ready units' index then holds an entry for every version
// that was ever ready, and reading it cost each claim in proportion to the time the
// transaction had been open (docs/performance.md "Under a transaction held open").
#pragma once

#include <cstdint>

namespace evproc::core {

struct UnitKey {
  int32_t subscription_id;
  int32_t partition;
};

constexpr uint32_t kReadyHintCapacity = 1024;
// A worker that keeps finding hints still runs the full claim this often: due retries
// and units no hint named are claimed by it.
constexpr int kFullClaimEveryMs = 100;

// A FIFO ring of unit keys. Plain data: zeroed, it is empty.
struct ReadyHints {
  uint32_t head;     // the oldest hint
  uint32_t count;    // hints held
  uint64_t dropped;  // hints refused because the ring was full
  UnitKey units[kReadyHintCapacity];

  // Adds a hint at the end; refuses it (and counts it) when the ring is full.
  bool Push(UnitKey unit);
  // Takes the oldest hint; false when there is none.
  bool Pop(UnitKey *unit);
};

}  // namespace evproc::core

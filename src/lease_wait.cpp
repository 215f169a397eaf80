#include "lease_wait.hpp"

#include "shared_state.hpp"

extern "C" {
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/wait_event.h"
}

namespace evproc {
namespace {

// Without a slot (all taken, or no shared memory) a reader looks again this often.
constexpr long kUnregisteredSliceMs = 100;

bool exit_hook_set = false;
int my_slot = -1;  // the slot this backend holds, if any

void ReleaseSlot() {
  SharedState *state = Shared();
  if (state == nullptr || my_slot < 0) return;
  pg_atomic_write_u32(&state->reader_procno[my_slot], kNoProc);
  my_slot = -1;
}

// A backend that exits while it waits (terminated) frees its slot.
void ReleaseAtExit(int /*code*/, Datum /*arg*/) { ReleaseSlot(); }

}  // namespace

ReaderRegistration::ReaderRegistration() noexcept {
  SharedState *state = Shared();
  if (state == nullptr || MyProc == nullptr) return;
  if (!exit_hook_set) {
    // Cannot fail once the backend runs (a fixed-size array of callbacks with room).
    before_shmem_exit(ReleaseAtExit, 0);
    exit_hook_set = true;
  }
  auto procno = static_cast<uint32>(MyProc->pgprocno);
  for (int i = 0; i < kMaxReaders; ++i) {
    uint32 expected = kNoProc;
    if (pg_atomic_compare_exchange_u32(&state->reader_procno[i], &expected, procno)) {
      my_slot = i;
      slot_ = i;
      return;
    }
  }
}

ReaderRegistration::~ReaderRegistration() {
  if (slot_ >= 0) ReleaseSlot();
}

void WaitForReaderWake(long timeout_ms) {
  if (my_slot < 0 && timeout_ms > kUnregisteredSliceMs) timeout_ms = kUnregisteredSliceMs;
  if (timeout_ms < 1) timeout_ms = 1;
  (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout_ms,
                  PG_WAIT_EXTENSION);
  ResetLatch(MyLatch);
  CHECK_FOR_INTERRUPTS();
}

}  // namespace evproc

// What the launcher and the workers do alike as PostgreSQL background processes.
#include "background.hpp"

extern "C" {
#include "access/xact.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
}

namespace evproc {

void RecoverFromError() {
  // Same recovery as PostgreSQL's own background processes after a longjmp.
  error_context_stack = nullptr;
  HOLD_INTERRUPTS();
  disable_all_timeouts(false);
  EmitErrorReport();
  AbortCurrentTransaction();
  FlushErrorState();
  MemoryContextSwitchTo(TopMemoryContext);
  RESUME_INTERRUPTS();
}

void SleepOnLatch(long milliseconds) {
  (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, milliseconds,
                  PG_WAIT_EXTENSION);
  ResetLatch(MyLatch);
}

}  // namespace evproc

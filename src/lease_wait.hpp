// Waiting readers (docs/design.md): an evproc_read that found nothing waits on its latch,
// registered in shared memory, until a tick (events committed), an acknowledgement
// (units freed) or its own deadline; no polling.
#pragma once

#include "pg_headers.hpp"

namespace evproc {

// Registers this backend's latch among the waiting readers for as long as it lives;
// unregisters when it goes out of scope. Registered() is false when every slot is
// taken (or evproc is not preloaded): the reader then waits in short slices.
class ReaderRegistration {
 public:
  ReaderRegistration() noexcept;
  ~ReaderRegistration();
  ReaderRegistration(const ReaderRegistration &) = delete;
  ReaderRegistration &operator=(const ReaderRegistration &) = delete;
  [[nodiscard]] bool Registered() const noexcept { return slot_ >= 0; }

 private:
  int slot_ = -1;
};

// Waits on the backend's latch for at most timeout_ms, then resets it; interrupts
// (cancel, statement_timeout, termination) are served. PostgreSQL code.
void WaitForReaderWake(long timeout_ms);

}  // namespace evproc

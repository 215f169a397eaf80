// The prepared statements of leases (lease_sql.hpp) and what the read and the end of a
// lease share. PostgreSQL code, inside SPI.
#pragma once

#include <vector>

#include "pg_headers.hpp"

extern "C" {
#include "executor/spi.h"
}

namespace evproc::lease {

struct Plans {
  Oid extension = InvalidOid;
  SPIPlanPtr consumer_subscription = nullptr;
  SPIPlanPtr claim = nullptr;
  SPIPlanPtr claim_next = nullptr;
  SPIPlanPtr claim_replay = nullptr;
  SPIPlanPtr mark_replay_leased = nullptr;
  SPIPlanPtr lock_replay = nullptr;
  SPIPlanPtr release_replay = nullptr;
  SPIPlanPtr insert_lease = nullptr;
  SPIPlanPtr mark_leased = nullptr;
  SPIPlanPtr expired = nullptr;
  SPIPlanPtr all_expired = nullptr;
  SPIPlanPtr lease_subscription = nullptr;
  SPIPlanPtr lease_units = nullptr;
  SPIPlanPtr lease_events = nullptr;
  SPIPlanPtr retry_events = nullptr;
  SPIPlanPtr log_events = nullptr;
  SPIPlanPtr next_attempt_at = nullptr;
  SPIPlanPtr lock_units = nullptr;
  SPIPlanPtr release_units = nullptr;
  SPIPlanPtr delete_lease = nullptr;
  SPIPlanPtr next_due = nullptr;
  SPIPlanPtr pause = nullptr;
  SPIPlanPtr checked_lease = nullptr;
};
extern Plans plans;

// Prepares delivery's and the lease statements (again after the extension was
// re-created). Errors when the extension is not installed.
void EnsurePlans();

// An array of `type` from values, NULL where nulls[i].
Datum ArrayWithNulls(const std::vector<Datum> &values, const std::vector<bool> &nulls, Oid type);

// Ends the expired leases the statement `plan` (bound with args) selects and locks,
// each as its expiry. Returns how many.
int64 ExpireLeases(SPIPlanPtr plan, const Datum *args);

// Ends the locked lease `id`: writes every event's outcome as a worker writes a batch's
// and moves its units to where the read left them. expired: every event it handed out
// failed (nacked ones with their own error). held (held_count ids, or nullptr): events
// the consumer never sent, which return without an attempt counted (delivery_types.hpp
// Outcome::kHeld). Returns the events delivered.
int64 EndLease(const char *id, bool expired, const int64 *held, int held_count);

// A sink worker's evproc_ack: the checks of evproc.ack_impl (the caller may act for the
// subscription, the lease is live), then EndLease with the events it never sent.
int64 AckHolding(Oid caller, const char *subscription, const char *lease, const int64 *held,
                 int held_count);

}  // namespace evproc::lease

// Delivery's kept plans: every statement of delivery_statements.hpp prepared once per
// backend, and again when the extension is re-created (its OIDs change); and the small
// SPI helpers the delivery steps run them with. PostgreSQL code: call inside SPI, POD
// only, wrapped in CallPostgres by C++ callers.
#pragma once

#include "pg_headers.hpp"

extern "C" {
#include "executor/spi.h"
}

namespace evproc::delivery {

struct Plans {
  Oid extension = InvalidOid;
  Oid event_type = InvalidOid;
  SPIPlanPtr claim = nullptr;
  SPIPlanPtr claim_replay = nullptr;
  SPIPlanPtr replay_events = nullptr;
  SPIPlanPtr advance_replay = nullptr;
  SPIPlanPtr retry_due = nullptr;
  SPIPlanPtr next_due = nullptr;
  SPIPlanPtr bounds = nullptr;
  SPIPlanPtr due_retries = nullptr;
  SPIPlanPtr window_pending = nullptr;
  SPIPlanPtr window_range = nullptr;
  SPIPlanPtr delete_retries = nullptr;
  SPIPlanPtr park = nullptr;
  SPIPlanPtr dead_letter = nullptr;
  SPIPlanPtr promote = nullptr;
  SPIPlanPtr advance = nullptr;
  SPIPlanPtr pause = nullptr;
  SPIPlanPtr trip = nullptr;
  SPIPlanPtr owner_search_path = nullptr;
  // nullptr: an extension version without progress.ready (claim and advance then)
  SPIPlanPtr claim_ready = nullptr;
  SPIPlanPtr claim_hinted = nullptr;
  SPIPlanPtr advance_ready = nullptr;
  SPIPlanPtr set_ready = nullptr;
  SPIPlanPtr bound_handler = nullptr;  // nullptr: an extension version without bindings
  SPIPlanPtr bind_handler = nullptr;
};

extern Plans plans;

// PostgreSQL code (inside SPI): prepares and keeps a statement with a generic plan;
// delivery's and the leases' statements are prepared alike.
SPIPlanPtr Prepare(const char *text, int nargs, const Oid *types);

// Prepares the plans if the extension was (re-)created since. Returns false when the
// extension is not installed.
bool EnsurePlans();

// Runs a kept statement; an unexpected result is an ERROR. Returns the rows processed.
uint64 Run(SPIPlanPtr plan, const Datum *args, const char *nulls, bool read_only, int expected);
// A column of the last result's row.
Datum Column(uint64 row, int column, bool *isnull);
// A column copied into `context` (SPI frees its results).
Datum CopiedColumn(uint64 row, int column, bool *isnull, MemoryContext context);
// A text column as a C string in `context`, or nullptr for NULL.
char *CopiedText(uint64 row, int column, MemoryContext context);
// A C string as a text Datum (0 for nullptr: pass NullFlag(true) with it).
Datum TextOrNull(const char *value);
inline char NullFlag(bool isnull) { return isnull ? 'n' : ' '; }

}  // namespace evproc::delivery

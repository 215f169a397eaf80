// Prepared SPI statements kept for the life of the backend.
#pragma once

#include "pg_headers.hpp"

extern "C" {
#include "executor/spi.h"
}

namespace evproc {

// Returns *slot, preparing and keeping the statement on first use. PostgreSQL's plan
// cache re-plans a kept statement when the tables it reads change, so one preparation
// per backend is enough. `cursor_options` as SPI_prepare_cursor's:
// CURSOR_OPT_GENERIC_PLAN for a statement run so often that planning it at each call
// would cost more than running it. Must be called inside SPI_connect.
SPIPlanPtr PrepareOnce(SPIPlanPtr *slot, const char *sql, int nargs, const Oid *types,
                       int cursor_options = 0);

}  // namespace evproc

// Prepared SPI statements kept for the life of the backend.
#pragma once

#include "pg_headers.hpp"

extern "C" {
#include "executor/spi.h"
}

namespace evproc {

// Returns *slot, preparing and keeping the statement on first use. PostgreSQL's plan
// cache re-plans a kept statement when the tables it reads change, so one preparation
// per backend is enough. Must be called inside SPI_connect.
SPIPlanPtr PrepareOnce(SPIPlanPtr *slot, const char *sql, int nargs, const Oid *types);

}  // namespace evproc

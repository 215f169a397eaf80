// The one place C++ files pull in PostgreSQL headers.
//
// Standard C++ headers must come before this file: PostgreSQL's port.h redefines
// snprintf, printf and friends as macros, which breaks <string> and <cstdio> if they are
// included afterwards. postgres.h must be the first PostgreSQL header of a unit.
#pragma once

extern "C" {
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
}

// Lifecycle protections of evproc's background processes, one file each: the extension
// gate, the database check before the launcher connects, and the utility hook for DROP
// DATABASE of evproc.database and DROP EXTENSION evproc. Kept only for src/delivery.cpp
// (being split elsewhere); it should include extension_gate.hpp, and this header go.
#pragma once

#include "database_check.hpp"
#include "extension_gate.hpp"
#include "utility_hook.hpp"

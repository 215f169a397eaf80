// Which versions of evproc's SQL objects this library serves: pure C++, unit-tested.
//
// The library (evproc.so, loaded once by the postmaster) and the extension's SQL
// objects (pg_extension.extversion, moved on by ALTER EXTENSION evproc UPDATE) change
// at different moments of an upgrade: new packages and a restart bring the library,
// the update brings the objects. A library serves the objects of its own version and of
// the version before it, so that delivery goes on between the restart and the update;
// on anything else the background processes stop and say which of the two steps is
// missing (docs/operations.md "Upgrading").
#pragma once

#include <string_view>

namespace evproc::core {

// Keep equal to EXTVERSION in the Makefile (sql/install.sql checks it).
inline constexpr std::string_view kLibraryVersion = "0.3.0";
// The oldest version whose SQL objects this library still works with.
inline constexpr std::string_view kOldestServedVersion = "0.2.0";

enum class VersionFit {
  kServed,   // between kOldestServedVersion and kLibraryVersion
  kOlder,    // older: ALTER EXTENSION evproc UPDATE is missing
  kNewer,    // newer than the library: the server still runs the old library (restart)
  kUnknown,  // not a version number of ours (major.minor.patch)
};

VersionFit FitOf(std::string_view extversion);

// -1, 0 or 1 as a is older than, the same as or newer than b; both major.minor.patch.
// False when either is not such a number.
bool CompareVersions(std::string_view a, std::string_view b, int *order);

}  // namespace evproc::core

#include "core/version.hpp"

#include <array>
#include <cstdint>

namespace evproc::core {
namespace {

using Parts = std::array<uint32_t, 3>;

// major.minor.patch, each a decimal number without sign or leading '+'.
bool Parse(std::string_view text, Parts *parts) {
  size_t part = 0;
  bool digit_seen = false;
  uint64_t value = 0;
  for (char c : text) {
    if (c >= '0' && c <= '9') {
      value = value * 10 + static_cast<uint64_t>(c - '0');
      if (value > UINT32_MAX) return false;
      digit_seen = true;
    } else if (c == '.' && digit_seen && part < 2) {
      (*parts)[part++] = static_cast<uint32_t>(value);
      value = 0;
      digit_seen = false;
    } else {
      return false;
    }
  }
  if (!digit_seen || part != 2) return false;
  (*parts)[2] = static_cast<uint32_t>(value);
  return true;
}

}  // namespace

bool CompareVersions(std::string_view a, std::string_view b, int *order) {
  Parts left{};
  Parts right{};
  if (!Parse(a, &left) || !Parse(b, &right)) return false;
  *order = left < right ? -1 : (left == right ? 0 : 1);
  return true;
}

VersionFit FitOf(std::string_view extversion) {
  int to_oldest = 0;
  int to_library = 0;
  if (!CompareVersions(extversion, kOldestServedVersion, &to_oldest) ||
      !CompareVersions(extversion, kLibraryVersion, &to_library)) {
    return VersionFit::kUnknown;
  }
  if (to_oldest < 0) return VersionFit::kOlder;
  if (to_library > 0) return VersionFit::kNewer;
  return VersionFit::kServed;
}

}  // namespace evproc::core

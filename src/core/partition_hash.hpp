// Key-to-partition mapping for evproc.
//
// The hash is part of the on-disk contract: events with the same key must land
// in the same partition forever, because per-key ordering is only guaranteed
// within one partition. Therefore the function is fixed (FNV-1a, 64 bit, over
// the raw key bytes), documented, and independent of platform, compiler,
// endianness, locale and std::hash. Changing it (or its constants) silently
// breaks per-key ordering of existing data; the unit tests pin exact values so
// that such a change fails the build.
#pragma once

#include <cstdint>
#include <string_view>

namespace evproc::core {

inline constexpr std::uint64_t kFnv1a64OffsetBasis = 14695981039346656037ULL;
inline constexpr std::uint64_t kFnv1a64Prime = 1099511628211ULL;

constexpr std::uint64_t Fnv1a64(std::string_view bytes) noexcept {
  std::uint64_t hash = kFnv1a64OffsetBasis;
  for (const char c : bytes) {
    // Bytes must be taken as unsigned: char signedness differs between ABIs
    // (x86 vs. ARM) and would otherwise change the hash of non-ASCII keys.
    hash ^= static_cast<std::uint64_t>(static_cast<unsigned char>(c));
    hash *= kFnv1a64Prime;  // wraps modulo 2^64 by definition of unsigned math
  }
  return hash;
}

// Returns a partition in [0, partitions). A non-positive partition count is a
// caller bug; 0 is returned so that the function stays total and noexcept.
constexpr std::int32_t PartitionForKey(std::string_view key, std::int32_t partitions) noexcept {
  if (partitions < 1) {
    return 0;
  }
  return static_cast<std::int32_t>(Fnv1a64(key) % static_cast<std::uint64_t>(partitions));
}

}  // namespace evproc::core

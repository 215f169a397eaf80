#include "core/partition_hash.hpp"

#include <cstdint>
#include <string_view>

#include <gtest/gtest.h>

namespace {

using evproc::core::Fnv1a64;
using evproc::core::PartitionForKey;

// Expected values were computed once with an independent Python
// implementation of FNV-1a 64. They must never be updated to match a changed
// implementation: doing so would silently re-route existing keys.

static_assert(Fnv1a64("") == 14695981039346656037ULL, "FNV-1a must be usable at compile time");

TEST(PartitionHash, EmptyIsOffsetBasis) { EXPECT_EQ(Fnv1a64(""), 14695981039346656037ULL); }

TEST(PartitionHash, FixedValues) {
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a64("customer-42"), 0x1e1b8c70eb18f59eULL);
  EXPECT_EQ(Fnv1a64("order-1001"), 0x2e681292c686c08cULL);
  // UTF-8 bytes d0 ba d0 bb d1 8e d1 87; exercises bytes >= 0x80, which would
  // differ if char were sign-extended.
  EXPECT_EQ(Fnv1a64("ключ"), 0x296130de6f5b7a81ULL);
}

TEST(PartitionHash, EmbeddedNulIsHashed) {
  constexpr std::string_view with_nul("a\0b", 3);
  EXPECT_NE(Fnv1a64(with_nul), Fnv1a64("a"));
  EXPECT_NE(Fnv1a64(with_nul), Fnv1a64("ab"));
}

TEST(PartitionHash, PartitionsOf16) {
  EXPECT_EQ(PartitionForKey("", 16), 5);
  EXPECT_EQ(PartitionForKey("a", 16), 12);
  EXPECT_EQ(PartitionForKey("customer-42", 16), 14);
  EXPECT_EQ(PartitionForKey("order-1001", 16), 12);
  EXPECT_EQ(PartitionForKey("ключ", 16), 1);
}

TEST(PartitionHash, PartitionsOf7) {
  EXPECT_EQ(PartitionForKey("", 7), 2);
  EXPECT_EQ(PartitionForKey("a", 7), 5);
  EXPECT_EQ(PartitionForKey("customer-42", 7), 0);
  EXPECT_EQ(PartitionForKey("order-1001", 7), 0);
  EXPECT_EQ(PartitionForKey("ключ", 7), 6);
}

TEST(PartitionHash, SinglePartitionAndInvalidCounts) {
  EXPECT_EQ(PartitionForKey("customer-42", 1), 0);
  EXPECT_EQ(PartitionForKey("customer-42", 0), 0);
  EXPECT_EQ(PartitionForKey("customer-42", -3), 0);
}

TEST(PartitionHash, AlwaysInRange) {
  for (std::int32_t parts = 1; parts <= 64; ++parts) {
    for (const char* key : {"", "a", "b", "customer-1", "customer-2", "ключ"}) {
      const std::int32_t p = PartitionForKey(key, parts);
      EXPECT_GE(p, 0);
      EXPECT_LT(p, parts);
    }
  }
  // The largest count must not overflow the int32 result.
  const std::int32_t p = PartitionForKey("customer-42", INT32_MAX);
  EXPECT_GE(p, 0);
  EXPECT_EQ(static_cast<std::uint64_t>(p), 0x1e1b8c70eb18f59eULL % 2147483647ULL);
}

}  // namespace

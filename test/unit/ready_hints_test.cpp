#include "core/ready_hints.hpp"

#include <gtest/gtest.h>

using evproc::core::kReadyHintCapacity;
using evproc::core::ReadyHints;
using evproc::core::UnitKey;

namespace {

class Hints : public ::testing::Test {
 protected:
  ReadyHints hints{};  // zeroed, as shared memory starts
};

}  // namespace

TEST_F(Hints, ZeroedIsEmpty) {
  UnitKey unit{};
  EXPECT_FALSE(hints.Pop(&unit));
  EXPECT_EQ(hints.count, 0U);
}

TEST_F(Hints, FirstInFirstOut) {
  EXPECT_TRUE(hints.Push({1, 0}));
  EXPECT_TRUE(hints.Push({1, 5}));
  EXPECT_TRUE(hints.Push({2, 3}));
  UnitKey unit{};
  ASSERT_TRUE(hints.Pop(&unit));
  EXPECT_EQ(unit.subscription_id, 1);
  EXPECT_EQ(unit.partition, 0);
  ASSERT_TRUE(hints.Pop(&unit));
  EXPECT_EQ(unit.partition, 5);
  ASSERT_TRUE(hints.Pop(&unit));
  EXPECT_EQ(unit.subscription_id, 2);
  EXPECT_EQ(unit.partition, 3);
  EXPECT_FALSE(hints.Pop(&unit));
}

TEST_F(Hints, FullRingRefusesAndCounts) {
  for (uint32_t i = 0; i < kReadyHintCapacity; ++i) {
    ASSERT_TRUE(hints.Push({1, static_cast<int32_t>(i)}));
  }
  EXPECT_FALSE(hints.Push({9, 9}));
  EXPECT_FALSE(hints.Push({9, 10}));
  EXPECT_EQ(hints.dropped, 2U);
  EXPECT_EQ(hints.count, kReadyHintCapacity);
  UnitKey unit{};
  ASSERT_TRUE(hints.Pop(&unit));
  EXPECT_EQ(unit.partition, 0);  // the oldest kept, the refused ones never entered
  EXPECT_TRUE(hints.Push({9, 11}));
}

TEST_F(Hints, WrapsAroundKeepingOrder) {
  UnitKey unit{};
  // Move the head to the middle of the ring, then fill it across the end.
  for (uint32_t i = 0; i < kReadyHintCapacity / 2; ++i) {
    ASSERT_TRUE(hints.Push({0, 0}));
    ASSERT_TRUE(hints.Pop(&unit));
  }
  for (uint32_t i = 0; i < kReadyHintCapacity; ++i) {
    ASSERT_TRUE(hints.Push({2, static_cast<int32_t>(i)}));
  }
  for (uint32_t i = 0; i < kReadyHintCapacity; ++i) {
    ASSERT_TRUE(hints.Pop(&unit));
    EXPECT_EQ(unit.partition, static_cast<int32_t>(i));
  }
  EXPECT_FALSE(hints.Pop(&unit));
  EXPECT_EQ(hints.dropped, 0U);
}

#include "core/breaker.hpp"

#include <gtest/gtest.h>

using evproc::core::BreakerCounts;
using evproc::core::BreakerSlice;
using evproc::core::BreakerTrips;
using evproc::core::Judged;
using evproc::core::Since;
using evproc::core::SumRecent;

TEST(Breaker, TripsAboveBudgetWithEnoughAttempts) {
  EXPECT_FALSE(BreakerTrips({10, 9}, 0.5, 20));  // too few attempts to judge
  EXPECT_TRUE(BreakerTrips({20, 18}, 0.5, 20));
  EXPECT_FALSE(BreakerTrips({20, 18}, 0.95, 20));
  EXPECT_FALSE(BreakerTrips({20, 10}, 0.5, 20));  // at the budget is not past it
  EXPECT_FALSE(BreakerTrips({0, 0}, 0.0, 0));     // nothing attempted, nothing to judge
}

TEST(Breaker, SumsTheSlicesOfTheWindowOnly) {
  // A ring of six slices; epochs 95 and 94 are too old for a window of six at epoch 101
  // (96..101), 102 is from a clock ahead of ours.
  const BreakerSlice ring[] = {{100, {10, 9}}, {101, {10, 9}}, {95, {50, 50}},
                               {96, {1, 0}},   {94, {7, 7}},   {102, {3, 3}}};
  BreakerCounts recent = SumRecent(ring, 6, 101, 6);
  EXPECT_EQ(recent.attempts, 21);
  EXPECT_EQ(recent.failures, 18);
  // Later, the old slices fall out of the window (102 is in it now).
  EXPECT_EQ(SumRecent(ring, 6, 106, 6).attempts, 13);
  EXPECT_EQ(SumRecent(ring, 6, 107, 6).attempts, 3);
  EXPECT_EQ(SumRecent(ring, 6, 108, 6).attempts, 0);
}

TEST(Breaker, ForgetsWhatCameBeforeItTripped) {
  // 30 attempts, all failed, before the trip; 5 since, 1 failed: the breaker judges 5.
  BreakerCounts recent{35, 31};
  BreakerCounts since_trip = Since({1035, 531}, {1030, 530});
  BreakerCounts judged = Judged(recent, since_trip);
  EXPECT_EQ(judged.attempts, 5);
  EXPECT_EQ(judged.failures, 1);
  EXPECT_TRUE(BreakerTrips(judged, 0.1, 1));
  EXPECT_FALSE(BreakerTrips(judged, 0.5, 1));
  // A trip longer ago than the window: the window's counts are the smaller ones.
  BreakerCounts long_ago = Judged({40, 2}, Since({5000, 900}, {100, 50}));
  EXPECT_EQ(long_ago.attempts, 40);
  EXPECT_EQ(long_ago.failures, 2);
}

TEST(Breaker, TotalsThatWentBackCountNothing) {
  BreakerCounts since = Since({3, 1}, {10, 8});  // the slot was reused since the mark
  EXPECT_EQ(since.attempts, 0);
  EXPECT_EQ(since.failures, 0);
}

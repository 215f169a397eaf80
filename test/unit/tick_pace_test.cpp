#include "core/tick_pace.hpp"

#include <gtest/gtest.h>

using evproc::core::TickPace;

TEST(TickPace, QuietSystemTicksAtTheFloor) {
  TickPace pace(2, 25);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 2);
  for (int i = 0; i < 100; ++i) pace.Ticked(0.2, true);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 2);
}

TEST(TickPace, SlowTicksSpaceOut) {
  TickPace pace(2, 25);
  for (int i = 0; i < 100; ++i) pace.Ticked(1.0, true);
  EXPECT_NEAR(pace.IntervalMs(), 5.0, 0.01);  // five times what a tick takes
  for (int i = 0; i < 100; ++i) pace.Ticked(100.0, true);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 25);  // never past the ceiling
  for (int i = 0; i < 100; ++i) pace.Ticked(0.1, true);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 2);  // and back when ticks are cheap again
}

TEST(TickPace, BusyWorkersDoubleTheIntervalUpToTheCeiling) {
  TickPace pace(2, 25);
  pace.Ticked(0.1, false);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 4);
  pace.Ticked(0.1, false);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 8);
  for (int i = 0; i < 10; ++i) pace.Ticked(0.1, false);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 25);
  pace.Ticked(0.1, true);  // a worker waits: at once back to the floor
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 2);
}

TEST(TickPace, AWaitingWorkerIsNotMadeToWaitForTheWidenedInterval) {
  TickPace pace(2, 25);
  for (int i = 0; i < 10; ++i) pace.Ticked(0.1, false);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 25);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(true), 2);  // a worker waits now: the floor
  for (int i = 0; i < 100; ++i) pace.Ticked(1.0, false);
  EXPECT_NEAR(pace.IntervalMs(true), 5.0, 0.01);  // still at most 1/5 of the launcher's time
}

TEST(TickPace, FloorFollowsTheSetting) {
  TickPace pace(2, 25);
  pace.Ticked(0.1, false);
  pace.SetFloor(10);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 10);
  pace.SetFloor(50);  // a floor above the ceiling wins
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 50);
}

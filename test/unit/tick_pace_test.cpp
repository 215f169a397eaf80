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

// Feeds `rate` events a second for `ms` milliseconds, one count per tick of `tick_ms`.
static void Feed(TickPace *pace, uint64_t *total, double *now, double rate, double ms,
                 double tick_ms) {
  for (double t = 0; t < ms; t += tick_ms) {
    *total += static_cast<uint64_t>(rate * tick_ms / 1000.0);
    *now += tick_ms;
    pace->CountedEvents(*total, *now);
  }
}

TEST(TickPace, RateBelowTheWideningKeepsTheFloor) {
  TickPace pace(1, 25);
  pace.SetWidenRate(2000);
  uint64_t total = 0;
  double now = 0;
  Feed(&pace, &total, &now, 1000, 2000, 1);
  EXPECT_NEAR(pace.EventRate(), 1000, 10);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 1);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(true), 1);
}

TEST(TickPace, HighRateWidensTicksEvenWhileAWorkerWaits) {
  TickPace pace(1, 25);
  pace.SetWidenRate(2000);
  uint64_t total = 0;
  double now = 0;
  Feed(&pace, &total, &now, 3000, 2000, 5);  // halfway to twice the rate: sqrt(25) = 5 ms
  EXPECT_NEAR(pace.IntervalMs(), 5, 0.1);
  EXPECT_NEAR(pace.IntervalMs(true), 5, 0.1);
  Feed(&pace, &total, &now, 6000, 2000, 25);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(true), 25);  // the ceiling from twice the rate
  Feed(&pace, &total, &now, 0, 2000, 25);       // publishing stops: back to the floor
  EXPECT_DOUBLE_EQ(pace.IntervalMs(true), 1);
}

TEST(TickPace, RateIsAnAverageOverTimeNotTicks) {
  TickPace pace(1, 25);
  pace.SetWidenRate(2000);
  uint64_t total = 0;
  double now = 0;
  Feed(&pace, &total, &now, 1000, 1000, 1);
  // One burst of 50 events within a millisecond, then quiet: a moment, not a rate.
  total += 50;
  now += 1;
  pace.CountedEvents(total, now);
  Feed(&pace, &total, &now, 1000, 100, 1);
  EXPECT_LT(pace.EventRate(), 2000);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 1);
}

TEST(TickPace, WideningOffWithZero) {
  TickPace pace(1, 25);
  pace.SetWidenRate(0);
  uint64_t total = 0;
  double now = 0;
  Feed(&pace, &total, &now, 100000, 2000, 1);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(true), 1);
}

TEST(TickPace, RateMayWidenPastTheBusyWorkersCeiling) {
  TickPace pace(1, 25, 50);
  pace.SetWidenRate(2000);
  for (int i = 0; i < 20; ++i) pace.Ticked(0.1, false);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(), 25);  // busy workers: their ceiling
  uint64_t total = 0;
  double now = 0;
  Feed(&pace, &total, &now, 8000, 2000, 25);
  EXPECT_DOUBLE_EQ(pace.IntervalMs(true), 50);  // the rate: its own
}

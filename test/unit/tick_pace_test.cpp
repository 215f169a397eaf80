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

// A pace with a widening rate, fed a running total of events by ticks.
struct Publishing {
  explicit Publishing(double widen_rate, double rate_ceiling_ms = 0)
      : pace(1, 25, rate_ceiling_ms) {
    pace.SetWidenRate(widen_rate);
  }
  // `rate` events a second for `ms` milliseconds, one count per tick of `tick_ms`.
  void Feed(double rate, double ms, double tick_ms) {
    for (double t = 0; t < ms; t += tick_ms) {
      total += static_cast<uint64_t>(rate * tick_ms / 1000.0);
      now += tick_ms;
      pace.CountedEvents(total, now);
    }
  }
  TickPace pace;
  uint64_t total = 0;
  double now = 0;
};

TEST(TickPace, RateBelowTheWideningKeepsTheFloor) {
  Publishing p(2000);
  p.Feed(1000, 2000, 1);
  EXPECT_NEAR(p.pace.EventRate(), 1000, 10);
  EXPECT_DOUBLE_EQ(p.pace.IntervalMs(), 1);
  EXPECT_DOUBLE_EQ(p.pace.IntervalMs(true), 1);
}

TEST(TickPace, HighRateWidensTicksEvenWhileAWorkerWaits) {
  Publishing p(2000);
  p.Feed(3000, 2000, 5);  // halfway to twice the rate: sqrt(25) = 5 ms
  EXPECT_NEAR(p.pace.IntervalMs(), 5, 0.1);
  EXPECT_NEAR(p.pace.IntervalMs(true), 5, 0.1);
  p.Feed(6000, 2000, 25);
  EXPECT_DOUBLE_EQ(p.pace.IntervalMs(true), 25);  // the ceiling from twice the rate
  p.Feed(0, 2000, 25);                            // publishing stops: back to the floor
  EXPECT_DOUBLE_EQ(p.pace.IntervalMs(true), 1);
}

TEST(TickPace, RateIsAnAverageOverTimeNotTicks) {
  Publishing p(2000);
  p.Feed(1000, 1000, 1);
  // One burst of 50 events within a millisecond, then quiet: a moment, not a rate.
  p.total += 50;
  p.now += 1;
  p.pace.CountedEvents(p.total, p.now);
  p.Feed(1000, 100, 1);
  EXPECT_LT(p.pace.EventRate(), 2000);
  EXPECT_DOUBLE_EQ(p.pace.IntervalMs(), 1);
}

TEST(TickPace, WideningOffWithZero) {
  Publishing p(0);
  p.Feed(100000, 2000, 1);
  EXPECT_DOUBLE_EQ(p.pace.IntervalMs(true), 1);
}

TEST(TickPace, RateMayWidenPastTheBusyWorkersCeiling) {
  Publishing p(2000, 50);
  for (int i = 0; i < 20; ++i) p.pace.Ticked(0.1, false);
  EXPECT_DOUBLE_EQ(p.pace.IntervalMs(), 25);  // busy workers: their ceiling
  p.Feed(8000, 2000, 25);
  EXPECT_DOUBLE_EQ(p.pace.IntervalMs(true), 50);  // the rate: its own
}

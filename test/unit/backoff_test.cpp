#include "core/backoff.hpp"

#include <gtest/gtest.h>

using evproc::core::BackoffDelay;

TEST(Backoff, DoublesFromTheBase) {
  // jitter 1.0 gives the full delay, 0.0 its fixed half.
  EXPECT_EQ(BackoffDelay(1, 1000, 1000000, 1.0), 1000);
  EXPECT_EQ(BackoffDelay(2, 1000, 1000000, 1.0), 2000);
  EXPECT_EQ(BackoffDelay(5, 1000, 1000000, 1.0), 16000);
  EXPECT_EQ(BackoffDelay(5, 1000, 1000000, 0.0), 8000);
}

TEST(Backoff, StaysWithinCapAndHalfOfIt) {
  for (int attempt = 1; attempt < 200; ++attempt) {
    for (double jitter : {0.0, 0.3, 0.999}) {
      int64_t delay = BackoffDelay(attempt, 1000, 60000, jitter);
      EXPECT_LE(delay, 60000);
      EXPECT_GE(delay, 500);
    }
  }
  EXPECT_EQ(BackoffDelay(1000, 1000, 60000, 0.0), 30000);
}

TEST(Backoff, JitterSpreadsRetries) {
  EXPECT_LT(BackoffDelay(4, 1000, 1000000, 0.1), BackoffDelay(4, 1000, 1000000, 0.9));
}

TEST(Backoff, OddInputsAreClamped) {
  EXPECT_EQ(BackoffDelay(0, 1000, 10, 1.0), 1000);  // cap below base: base wins
  EXPECT_GE(BackoffDelay(3, 0, 0, 0.5), 1);
  EXPECT_EQ(BackoffDelay(1, 1000, 1000, 7.0), 1000);  // jitter clamped to 1
}

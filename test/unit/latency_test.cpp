#include "core/latency.hpp"

#include <gtest/gtest.h>

#include <array>

using evproc::core::kLatencyBuckets;
using evproc::core::LatencyBucket;
using evproc::core::LatencyBucketMidpointMs;
using evproc::core::LatencyPercentileMs;

TEST(Latency, BucketsGrowByAQuarterOctave) {
  EXPECT_EQ(LatencyBucket(0), 0);
  EXPECT_EQ(LatencyBucket(99), 0);
  EXPECT_EQ(LatencyBucket(100), 1);
  EXPECT_EQ(LatencyBucket(118), 1);  // 100 * 2^0.25 = 118.9
  EXPECT_EQ(LatencyBucket(119), 2);
  EXPECT_EQ(LatencyBucket(200), 5);  // one octave = four buckets
  EXPECT_EQ(LatencyBucket(INT64_C(1) << 50), kLatencyBuckets - 1);
}

TEST(Latency, MidpointLiesInsideItsBucket) {
  for (int bucket = 1; bucket < kLatencyBuckets - 1; ++bucket) {
    double midpoint_us = LatencyBucketMidpointMs(bucket) * 1000.0;
    EXPECT_EQ(LatencyBucket(static_cast<int64_t>(midpoint_us)), bucket) << bucket;
  }
}

TEST(Latency, PercentilesPickTheBucketHoldingTheRank) {
  std::array<uint64_t, kLatencyBuckets> buckets{};
  // 90 samples around 1 ms, 9 around 10 ms, 1 around 100 ms.
  buckets[LatencyBucket(1000)] = 90;
  buckets[LatencyBucket(10000)] = 9;
  buckets[LatencyBucket(100000)] = 1;
  EXPECT_NEAR(LatencyPercentileMs(buckets.data(), 100, 0.50), 1.0, 0.2);
  EXPECT_NEAR(LatencyPercentileMs(buckets.data(), 100, 0.95), 10.0, 2.0);
  EXPECT_NEAR(LatencyPercentileMs(buckets.data(), 100, 0.99), 100.0, 20.0);
  EXPECT_NEAR(LatencyPercentileMs(buckets.data(), 100, 1.0), 100.0, 20.0);
}

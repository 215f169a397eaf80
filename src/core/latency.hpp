// The latency histogram's buckets and percentiles: pure C++, unit-tested.
#pragma once

#include <cstdint>

namespace evproc::core {

// Bucket 0 holds latencies under 100 us; bucket i >= 1 holds [100 us * 2^((i-1)/4),
// 100 us * 2^(i/4)): steps of 19%, up to about 23 minutes; the last bucket also holds
// everything longer.
constexpr int kLatencyBuckets = 96;

int LatencyBucket(int64_t microseconds);
// The geometric middle of a bucket, in milliseconds (what a percentile reports).
double LatencyBucketMidpointMs(int bucket);
// The latency at `fraction` (0..1) of `total` samples counted in `buckets`
// (kLatencyBuckets of them), in milliseconds; total must be positive.
double LatencyPercentileMs(const uint64_t *buckets, uint64_t total, double fraction);

}  // namespace evproc::core

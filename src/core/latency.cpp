#include "core/latency.hpp"

#include <cmath>

namespace evproc::core {

int LatencyBucket(int64_t microseconds) {
  if (microseconds < 100) return 0;
  int bucket =
      static_cast<int>(std::floor(4.0 * std::log2(static_cast<double>(microseconds) / 100.0))) + 1;
  return bucket >= kLatencyBuckets ? kLatencyBuckets - 1 : bucket;
}

double LatencyBucketMidpointMs(int bucket) {
  if (bucket <= 0) return 0.05;
  return 0.1 * std::exp2((static_cast<double>(bucket) - 0.5) / 4.0);
}

double LatencyPercentileMs(const uint64_t *buckets, uint64_t total, double fraction) {
  auto rank = static_cast<uint64_t>(fraction * static_cast<double>(total));
  if (rank >= total) rank = total - 1;
  uint64_t seen = 0;
  for (int i = 0; i < kLatencyBuckets; ++i) {
    seen += buckets[i];
    if (seen > rank) return LatencyBucketMidpointMs(i);
  }
  return LatencyBucketMidpointMs(kLatencyBuckets - 1);
}

}  // namespace evproc::core

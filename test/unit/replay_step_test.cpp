#include "core/replay_step.hpp"

#include <gtest/gtest.h>

using evproc::core::kMostReplayChunk;
using evproc::core::NextReplayStep;
using evproc::core::ReplayBaseChunk;
using evproc::core::ReplayStep;

TEST(ReplayStep, BaseChunkIsTenBatchesAtLeastTenThousand) {
  EXPECT_EQ(ReplayBaseChunk(100), 10000);
  EXPECT_EQ(ReplayBaseChunk(5000), 50000);
}

TEST(ReplayStep, AFullBatchContinuesAfterItsLastEvent) {
  ReplayStep next = NextReplayStep({1000, 10000, false}, 100, 100, 1234, 50000);
  EXPECT_EQ(next.cursor, 1234);
  EXPECT_EQ(next.chunk, 468);  // twice the 234 ids the batch spanned
  EXPECT_FALSE(next.done);
}

TEST(ReplayStep, AFullBatchNarrowsTheChunkWithinBounds) {
  // A batch of consecutive ids: at least two batches' worth.
  EXPECT_EQ(NextReplayStep({1000, 10000, false}, 100, 100, 1100, 50000).chunk, 200);
  // A sparse topic: at most the base chunk.
  EXPECT_EQ(NextReplayStep({1000, 10000, false}, 100, 100, 9000, 50000).chunk, 10000);
}

TEST(ReplayStep, AShortReadCoversItsChunk) {
  ReplayStep next = NextReplayStep({1000, 10000, false}, 7, 100, 1500, 50000);
  EXPECT_EQ(next.cursor, 11000);
  EXPECT_EQ(next.chunk, 10000);
  EXPECT_FALSE(next.done);
}

TEST(ReplayStep, EmptyReadsWidenUpToTheMost) {
  ReplayStep at{0, 10000, false};
  at = NextReplayStep(at, 0, 100, 0, 100000000);
  EXPECT_EQ(at.cursor, 10000);
  EXPECT_EQ(at.chunk, 40000);
  for (int i = 0; i < 10; ++i) at = NextReplayStep(at, 0, 100, 0, 100000000);
  EXPECT_EQ(at.chunk, kMostReplayChunk);
  // A read that finds events narrows it back.
  at = NextReplayStep(at, 3, 100, at.cursor + 5, 100000000);
  EXPECT_EQ(at.chunk, 10000);
}

TEST(ReplayStep, DoneAtTheLastId) {
  ReplayStep next = NextReplayStep({45000, 10000, false}, 2, 100, 45010, 50000);
  EXPECT_EQ(next.cursor, 50000);  // not past it
  EXPECT_TRUE(next.done);
  EXPECT_TRUE(NextReplayStep({49000, 10000, false}, 100, 100, 50000, 50000).done);
}

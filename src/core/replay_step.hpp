// How a replay's read moves through the log's ids: pure C++, unit-tested.
#pragma once

#include <cstdint>

namespace evproc::core {

// Where a replay stands: ids up to cursor were looked at; the next read spans chunk ids.
struct ReplayStep {
  int64_t cursor = 0;
  int64_t chunk = 0;
  bool done = false;
};

// The widest read: an empty read widens the next one up to this many ids.
constexpr int64_t kMostReplayChunk = 1000000;

// The chunk a read that found events narrows back to: ten batches, at least 10,000 ids.
int64_t ReplayBaseChunk(int64_t batch_size);

// The step after a read of ids (at.cursor, at.cursor + at.chunk] (up to last_id) that
// returned `rows` events, the last of them with id last_read_id. A full batch may have
// stopped inside the chunk: the next read starts after its last event. A shorter one
// looked at the whole chunk. An empty read (ids of other topics, or dropped) widens the
// next one fourfold, so old gaps are crossed in a few steps; a read that found events
// narrows it back: after a full batch to twice the ids that batch spanned (at least two
// batches' worth, at most the base chunk), so that a replay of a dense topic reads about
// two batches of rows per batch rather than ten batches or more (issue 17.3); after a
// short read to the base chunk. Done once the cursor reaches last_id.
ReplayStep NextReplayStep(ReplayStep at, int64_t rows, int64_t batch_size, int64_t last_read_id,
                          int64_t last_id);

}  // namespace evproc::core

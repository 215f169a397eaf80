#include "core/replay_step.hpp"

#include <algorithm>

namespace evproc::core {

int64_t ReplayBaseChunk(int64_t batch_size) { return std::max<int64_t>(10 * batch_size, 10000); }

ReplayStep NextReplayStep(ReplayStep at, int64_t rows, int64_t batch_size, int64_t last_read_id,
                          int64_t last_id) {
  ReplayStep next = at;
  if (rows == batch_size) {
    next.cursor = last_read_id;
  } else {
    next.cursor = std::min(at.cursor + at.chunk, last_id);
  }
  if (rows == 0) {
    next.chunk = std::min(at.chunk * 4, kMostReplayChunk);
  } else if (rows == batch_size) {
    // Twice the ids this batch spanned: the next read finds a batch again where the topic
    // is as dense, without reading (and sorting) ten batches' worth of ids to return one.
    next.chunk = std::clamp<int64_t>(2 * (last_read_id - at.cursor), 2 * batch_size,
                                     ReplayBaseChunk(batch_size));
  } else {
    next.chunk = ReplayBaseChunk(batch_size);
  }
  next.done = next.cursor >= last_id;
  return next;
}

}  // namespace evproc::core

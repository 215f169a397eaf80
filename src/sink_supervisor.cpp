// The launcher's pool of sink workers (sink_supervisor.hpp). Launcher code (PostgreSQL's
// C side): no C++ objects with destructors.
#include <cstring>

#include "background.hpp"
#include "settings.hpp"
#include "sink_supervisor.hpp"

extern "C" {
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
}

namespace evproc {
namespace {

constexpr int kMostSinkWorkers = 32;  // evproc.sink_workers' maximum (settings.cpp)
constexpr long kLookAgainMs = 1000;
// A worker that exits is started again after this pause, so one that dies at once does
// not spin.
constexpr int64 kRestartPauseUs = INT64CONST(1000000);
constexpr int64 kNoSlotRetryUs = INT64CONST(2000000);

struct SinkPool {
  BackgroundWorkerHandle *handles[kMostSinkWorkers];
  TimestampTz not_before[kMostSinkWorkers];
  bool warned_no_slot;
};
SinkPool sink_pool;

bool StartSinkWorker(int index) {
  char name[BGW_MAXLEN];
  snprintf(name, sizeof name, "evproc sink %d", index);
  return StartDatabaseWorker("evproc_sink_main", name, "evproc sink", index,
                             &sink_pool.handles[index]);
}

void StopSinkWorker(int index) { StopDatabaseWorker(&sink_pool.handles[index]); }

}  // namespace

long SuperviseSinkWorkers() {
  TimestampTz now = GetCurrentTimestamp();
  long next_look = -1;
  int wanted = sink_worker_count < kMostSinkWorkers ? sink_worker_count : kMostSinkWorkers;
  bool short_of_slots = false;
  for (int i = 0; i < kMostSinkWorkers; ++i) {
    if (i >= wanted) {
      StopSinkWorker(i);
      continue;
    }
    pid_t pid = 0;
    if (sink_pool.handles[i] != nullptr &&
        GetBackgroundWorkerPid(sink_pool.handles[i], &pid) != BGWH_STOPPED) {
      continue;
    }
    if (sink_pool.handles[i] != nullptr) {
      ereport(LOG, (errmsg("evproc sink %d exited; restarting it", i)));
      pfree(sink_pool.handles[i]);
      sink_pool.handles[i] = nullptr;
      sink_pool.not_before[i] = now + kRestartPauseUs;
    }
    if (now < sink_pool.not_before[i]) {
      next_look = kLookAgainMs;
      continue;
    }
    if (StartSinkWorker(i)) continue;
    short_of_slots = true;
    sink_pool.not_before[i] = now + kNoSlotRetryUs;
    next_look = kLookAgainMs;
  }
  if (short_of_slots && !sink_pool.warned_no_slot) {
    ereport(WARNING,
            (errmsg("evproc could not start a sink worker: no free background worker slot"),
             errdetail("The launcher tries again every 2 seconds; sink subscriptions served by "
                       "the missing worker wait meanwhile."),
             errhint("Raise max_worker_processes (it must cover evproc.workers + "
                     "evproc.sink_workers + 2 and every other extension's workers).")));
  }
  sink_pool.warned_no_slot = short_of_slots;
  return next_look;
}

void StopSinkWorkers() {
  for (int i = 0; i < kMostSinkWorkers; ++i) StopSinkWorker(i);
}

}  // namespace evproc

// How far apart the launcher's ticks are (issue 13.1): pure C++, unit-tested.
//
// At low rates a tick follows each commit (the floor, evproc.tick_interval, is the only
// wait), so a quiet system delivers within about one commit's time. Under load ticks
// space out, so each one opens a larger window and the cost of ticking and claiming is
// paid per batch rather than per commit:
//  * a tick never takes more than a fifth of the launcher's time: the interval is at
//    least five times what recent ticks took (ticks slow down when CPUs are busy);
//  * while every worker is busy when a tick is due, there is no one to take a new
//    window at once: the interval doubles, up to the ceiling; it falls back to the
//    floor as soon as a tick finds a worker idle;
//  * but a worker that waits for work now is that someone: while one waits, the widened
//    interval does not apply (only the floor and the tick's own share), so a batch that
//    ends between two widened ticks does not leave its worker asleep on committed events
//    for up to the ceiling (the p99 latency at 1,000 events/s, docs/performance.md);
//  * above a rate of committed events (evproc.tick_widen_above), ticks space out with the
//    rate whether workers wait or not, reaching a ceiling of their own (the rate's, wider
//    than the busy workers' one) at twice that rate. The
//    workers would otherwise take each unit as soon as it has a few events, and pay a
//    claim, a read, a handler call and a progress update for every three or four of them:
//    publishing at full speed beside a draining subscription kept 0.46 x a plain INSERT's
//    rate with 1 ms ticks, 0.75 x with 25 ms ones and 0.81 x with 50 ms ones (the
//    launcher's rate ceiling; docs/performance.md). Below that rate a tick follows each
//    commit as before, so the latency at 1,000 events a second is not touched.
#pragma once

#include <cstdint>

namespace evproc::core {

class TickPace {
 public:
  // `rate_ceiling_ms`: how far the event rate alone may widen them (default: the ceiling).
  TickPace(double floor_ms, double ceiling_ms, double rate_ceiling_ms = 0);

  // After a tick that took `took_ms`, taken while `worker_idle` (some worker waited).
  void Ticked(double took_ms, bool worker_idle);
  // The wait from one tick to the next; `worker_waiting`: some worker waits for work now.
  [[nodiscard]] double IntervalMs(bool worker_waiting = false) const;
  void SetFloor(double floor_ms);  // evproc.tick_interval changed
  // The running total of committed events at `now_ms` (any clock in milliseconds).
  void CountedEvents(uint64_t total, double now_ms);
  // Events a second above which ticks widen (evproc.tick_widen_above); 0: never.
  void SetWidenRate(double events_per_s);
  [[nodiscard]] double EventRate() const { return rate_; }  // smoothed, events a second

 private:
  double floor_ms_;
  double ceiling_ms_;
  double rate_ceiling_ms_;
  double took_ms_ = 0;    // a moving average of what ticks took
  double backoff_ = 1.0;  // doubles while every worker is busy
  double widen_rate_ = 0;
  double rate_ = 0;
  uint64_t counted_ = 0;
  double counted_at_ms_ = -1;  // no count yet

  [[nodiscard]] double RateIntervalMs() const;
};

}  // namespace evproc::core

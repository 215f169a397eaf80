#include "core/tick_pace.hpp"

#include <algorithm>
#include <cmath>

namespace evproc::core {

namespace {
constexpr double kTickShare = 5.0;      // a tick takes at most 1/5 of the launcher's time
constexpr double kAverageWeight = 0.2;  // of the newest tick in the moving average
constexpr double kRateTimeMs = 200;     // the event rate's memory: a burst counts in ~0.2 s
}  // namespace

TickPace::TickPace(double floor_ms, double ceiling_ms, double rate_ceiling_ms)
    : floor_ms_(floor_ms),
      ceiling_ms_(std::max(floor_ms, ceiling_ms)),
      rate_ceiling_ms_(std::max(ceiling_ms_, rate_ceiling_ms)) {}

void TickPace::Ticked(double took_ms, bool worker_idle) {
  took_ms = std::max(0.0, took_ms);
  took_ms_ = took_ms_ == 0 ? took_ms : took_ms_ + kAverageWeight * (took_ms - took_ms_);
  backoff_ = worker_idle ? 1.0 : std::min(backoff_ * 2, ceiling_ms_ / floor_ms_);
}

double TickPace::IntervalMs(bool worker_waiting) const {
  double backoff = worker_waiting ? 1.0 : backoff_;
  double paced =
      std::clamp(std::max(floor_ms_ * backoff, kTickShare * took_ms_), floor_ms_, ceiling_ms_);
  return std::max(paced, RateIntervalMs());
}

// The floor up to the widening rate, the rate's ceiling from twice that rate, geometric
// in between (each step of the rate multiplies the interval by the same factor).
double TickPace::RateIntervalMs() const {
  if (widen_rate_ <= 0 || rate_ <= widen_rate_ || floor_ms_ >= rate_ceiling_ms_) return floor_ms_;
  double over = std::min(1.0, (rate_ - widen_rate_) / widen_rate_);
  return floor_ms_ * std::pow(rate_ceiling_ms_ / floor_ms_, over);
}

void TickPace::CountedEvents(uint64_t total, double now_ms) {
  if (counted_at_ms_ < 0 || total < counted_ || now_ms < counted_at_ms_) {  // first, or reset
    counted_ = total;
    counted_at_ms_ = now_ms;
    return;
  }
  double elapsed = now_ms - counted_at_ms_;
  if (elapsed <= 0) return;
  double rate = static_cast<double>(total - counted_) * 1000.0 / elapsed;
  // An average over time, not over ticks: ticks come 1 to 50 ms apart.
  rate_ += (1.0 - std::exp(-elapsed / kRateTimeMs)) * (rate - rate_);
  counted_ = total;
  counted_at_ms_ = now_ms;
}

void TickPace::SetWidenRate(double events_per_s) { widen_rate_ = std::max(0.0, events_per_s); }

void TickPace::SetFloor(double floor_ms) {
  floor_ms_ = floor_ms;
  ceiling_ms_ = std::max(ceiling_ms_, floor_ms);
  rate_ceiling_ms_ = std::max(rate_ceiling_ms_, floor_ms);
  backoff_ = 1.0;
}

}  // namespace evproc::core

#include "core/tick_pace.hpp"

#include <algorithm>

namespace evproc::core {

namespace {
constexpr double kTickShare = 5.0;      // a tick takes at most 1/5 of the launcher's time
constexpr double kAverageWeight = 0.2;  // of the newest tick in the moving average
}  // namespace

TickPace::TickPace(double floor_ms, double ceiling_ms)
    : floor_ms_(floor_ms), ceiling_ms_(std::max(floor_ms, ceiling_ms)) {}

void TickPace::Ticked(double took_ms, bool worker_idle) {
  took_ms = std::max(0.0, took_ms);
  took_ms_ = took_ms_ == 0 ? took_ms : took_ms_ + kAverageWeight * (took_ms - took_ms_);
  backoff_ = worker_idle ? 1.0 : std::min(backoff_ * 2, ceiling_ms_ / floor_ms_);
}

double TickPace::IntervalMs(bool worker_waiting) const {
  double backoff = worker_waiting ? 1.0 : backoff_;
  return std::clamp(std::max(floor_ms_ * backoff, kTickShare * took_ms_), floor_ms_, ceiling_ms_);
}

void TickPace::SetFloor(double floor_ms) {
  floor_ms_ = floor_ms;
  ceiling_ms_ = std::max(ceiling_ms_, floor_ms);
  backoff_ = 1.0;
}

}  // namespace evproc::core

// The circuit breaker (delivery step 5): after each batch, judges the subscription's
// failures over the last minute against its failure budget, and past it opens the
// breaker (no unit of the subscription is claimed for breaker_cooldown). C++ code.
#pragma once

#include "delivery_types.hpp"

namespace evproc::delivery {

// Judges the batch's outcome (`attempted` events, tally.failed of them failed).
void JudgeBreaker(const Unit &unit, const Tally &tally, int64 attempted);

}  // namespace evproc::delivery

// The circuit breaker (delivery step 5): after each batch, judges the subscription's
// failures over the last minute against its failure budget, and past it opens the
// breaker (no unit of the subscription is claimed for breaker_cooldown). C++ code.
#pragma once

#include "delivery_types.hpp"

namespace evproc::delivery {

// Judges the subscription after a batch that attempted `attempted` deliveries (its
// counts are already noted with metrics::Note*, uncommitted).
void JudgeBreaker(const Unit &unit, int64 attempted);

}  // namespace evproc::delivery

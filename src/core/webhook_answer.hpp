// What a webhook endpoint's answer means (docs/sinks.md "What the answers mean"): pure
// C++, unit-tested.
#pragma once

#include <cstdint>
#include <ctime>
#include <string_view>

namespace evproc::core {

enum class AnswerClass {
  kDelivered,   // 2xx
  kRetryAfter,  // 429, 503: retry after the Retry-After the endpoint sent (else backoff)
  kRetry,       // other 5xx, 408, 409, 425, anything unexpected: retry with backoff
  kRefused,     // other 4xx: dead letter at once (a batch is bisected first)
  kGone,        // 410: the endpoint is gone, pause the subscription
  kRedirect,    // 3xx not followed: misconfigured, pause the subscription
};

AnswerClass ClassifyStatus(long status);

// Whether the class feeds the circuit breaker (the endpoint is failing, not the event).
bool FeedsBreaker(AnswerClass answer);

// The delay a Retry-After header value asks for, in milliseconds, capped at cap_ms:
// delta-seconds ("120") or an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT", judged against
// now). -1 when the value is missing or malformed (the subscription's backoff applies);
// a date in the past is 0.
int64_t RetryAfterMs(std::string_view value, std::time_t now, int64_t cap_ms);

}  // namespace evproc::core

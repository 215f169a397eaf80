#include "core/webhook_answer.hpp"

#include <cctype>
#include <cstring>
#include <string>

namespace evproc::core {

AnswerClass ClassifyStatus(long status) {
  if (status >= 200 && status < 300) return AnswerClass::kDelivered;
  if (status == 429 || status == 503) return AnswerClass::kRetryAfter;
  if (status == 410) return AnswerClass::kGone;
  // 408 Request Timeout, 409 Conflict, 425 Too Early: the same request may work later.
  if (status == 408 || status == 409 || status == 425) return AnswerClass::kRetry;
  if (status >= 400 && status < 500) return AnswerClass::kRefused;
  if (status >= 300 && status < 400) return AnswerClass::kRedirect;
  return AnswerClass::kRetry;
}

bool FeedsBreaker(AnswerClass answer) {
  return answer == AnswerClass::kRetry || answer == AnswerClass::kRetryAfter;
}

namespace {

std::string_view Trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

// IMF-fixdate only ("Sun, 06 Nov 1994 08:49:37 GMT"), the form RFC 9110 requires senders
// to use; -1 when malformed.
std::time_t ParseHttpDate(std::string_view text) {
  static const char *const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (text.size() != 29 || text[3] != ',' || text.substr(25) != " GMT") return -1;
  auto number = [&](size_t at, size_t length) -> int {
    int value = 0;
    for (size_t i = at; i < at + length; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(text[i]))) return -1;
      value = value * 10 + (text[i] - '0');
    }
    return value;
  };
  struct tm parts {};
  parts.tm_mday = number(5, 2);
  parts.tm_mon = -1;
  for (int month = 0; month < 12; ++month) {
    if (text.substr(8, 3) == kMonths[month]) parts.tm_mon = month;
  }
  int year = number(12, 4);
  parts.tm_hour = number(17, 2);
  parts.tm_min = number(20, 2);
  parts.tm_sec = number(23, 2);
  if (parts.tm_mday < 1 || parts.tm_mday > 31 || parts.tm_mon < 0 || year < 1970 ||
      parts.tm_hour < 0 || parts.tm_hour > 23 || parts.tm_min < 0 || parts.tm_min > 59 ||
      parts.tm_sec < 0 || parts.tm_sec > 60 || text[16] != ' ' || text[19] != ':' ||
      text[22] != ':') {
    return -1;
  }
  parts.tm_year = year - 1900;
  return timegm(&parts);
}

}  // namespace

int64_t RetryAfterMs(std::string_view value, std::time_t now, int64_t cap_ms) {
  value = Trim(value);
  if (value.empty()) return -1;
  int64_t ms = -1;
  if (std::isdigit(static_cast<unsigned char>(value.front()))) {
    int64_t seconds = 0;
    for (char c : value) {
      if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
      seconds = seconds * 10 + (c - '0');
      if (seconds > INT64_C(1000000000)) break;  // far past any cap
    }
    ms = seconds * 1000;
  } else {
    std::time_t at = ParseHttpDate(value);
    if (at < 0) return -1;
    ms = at <= now ? 0 : static_cast<int64_t>(at - now) * 1000;
  }
  return ms > cap_ms ? cap_ms : ms;
}

}  // namespace evproc::core

// A webhook sink's options, parsed from the subscription's sink object (docs/sinks.md):
//   url                 http(s) URL, its host allowed by evproc.sink_allowed_destinations
//   mode                "event" (one request per event, default) or "batch" (a JSON array)
//   headers             extra request headers {"name": "value"} (values are secrets)
//   secret              signing secret: "whsec_<base64 key>" or at least 16 bytes
//   timeout_ms          per request, 1..300000, default 10000
//   connect_timeout_ms  1..60000, default 5000
//   max_in_flight       requests in flight for the subscription, 1..256, default 8
//   retry_after_cap_ms  longest Retry-After honoured, 0..86400000, default 600000
//   follow_redirects    false (default): a 3xx pauses the subscription
//   tls_verify          true (default); false only for superusers
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "sink/registry.hpp"

namespace evproc::sink {

struct WebhookOptions {
  std::string url;
  std::string host;  // of url, lower case, without brackets
  bool batch = false;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string key;  // the signing key (decoded from the secret); empty: unsigned
  long timeout_ms = 10000;
  long connect_timeout_ms = 5000;
  int max_in_flight = 8;
  int64_t retry_after_cap_ms = 600000;
  bool follow_redirects = false;
  bool tls_verify = true;
};

// Parses options already validated (or reports the first problem when not).
std::optional<OptionProblem> ParseWebhookOptions(const nlohmann::json &options,
                                                 WebhookOptions *out);

// The host of an http(s) URL, lower case (IPv6 without brackets); empty when url is not
// an absolute http or https URL with a host.
std::string UrlHost(const std::string &url);

}  // namespace evproc::sink

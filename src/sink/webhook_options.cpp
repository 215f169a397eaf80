#include "sink/webhook_options.hpp"

#include <algorithm>
#include <cctype>

#include "core/destination.hpp"
#include "core/webhook_signature.hpp"
#include "sink/webhook.hpp"

namespace evproc::sink {

namespace {

// Headers evproc sets itself: a sink's extra headers may not replace them.
bool Reserved(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name.rfind("webhook-", 0) == 0 || name.rfind("evproc-", 0) == 0 ||
         name == "content-type" || name == "content-length" || name == "host" ||
         name == "transfer-encoding" || name == "connection" || name == "expect";
}

bool Token(const std::string &name) {
  if (name.empty() || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
  });
}

std::optional<OptionProblem> Integer(const nlohmann::json &options, const char *name, int64_t least,
                                     int64_t most, int64_t *out) {
  auto it = options.find(name);
  if (it == options.end()) return std::nullopt;
  if (!it->is_number_integer() || it->get<int64_t>() < least || it->get<int64_t>() > most) {
    return OptionProblem{name, std::string("sink option \"") + name +
                                   "\" must be an integer between " + std::to_string(least) +
                                   " and " + std::to_string(most)};
  }
  *out = it->get<int64_t>();
  return std::nullopt;
}

std::optional<OptionProblem> Boolean(const nlohmann::json &options, const char *name, bool *out) {
  auto it = options.find(name);
  if (it == options.end()) return std::nullopt;
  if (!it->is_boolean()) {
    return OptionProblem{name, std::string("sink option \"") + name + "\" must be true or false"};
  }
  *out = it->get<bool>();
  return std::nullopt;
}

}  // namespace

std::string UrlHost(const std::string &url) {
  std::string lower = url;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  size_t start;
  if (lower.rfind("http://", 0) == 0) {
    start = 7;
  } else if (lower.rfind("https://", 0) == 0) {
    start = 8;
  } else {
    return "";
  }
  size_t end = lower.find_first_of("/?#", start);
  std::string authority = lower.substr(start, end == std::string::npos ? end : end - start);
  if (authority.find('@') != std::string::npos) return "";  // no credentials in URLs
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return "";
    return authority.substr(1, close - 1);
  }
  return authority.substr(0, authority.find(':'));
}

std::optional<OptionProblem> ParseWebhookOptions(const nlohmann::json &options,
                                                 WebhookOptions *out) {
  static const char *const kKnown[] = {"type",
                                       "url",
                                       "mode",
                                       "headers",
                                       "secret",
                                       "timeout_ms",
                                       "connect_timeout_ms",
                                       "max_in_flight",
                                       "retry_after_cap_ms",
                                       "follow_redirects",
                                       "tls_verify"};
  for (const auto &item : options.items()) {
    if (std::none_of(std::begin(kKnown), std::end(kKnown),
                     [&](const char *known) { return item.key() == known; })) {
      return OptionProblem{item.key(), "unknown webhook sink option \"" + item.key() + "\""};
    }
  }
  auto url = options.find("url");
  if (url == options.end() || !url->is_string()) {
    return OptionProblem{"url", "sink option \"url\" must be an http or https URL"};
  }
  out->url = url->get<std::string>();
  out->host = UrlHost(out->url);
  bool control = std::any_of(out->url.begin(), out->url.end(),
                             [](unsigned char c) { return c <= ' ' || c == 0x7f; });
  if (out->host.empty() || control || out->url.size() > 2048) {
    return OptionProblem{"url",
                         "sink option \"url\" must be an http or https URL with a host, "
                         "without credentials or spaces, at most 2048 bytes"};
  }
  if (auto mode = options.find("mode"); mode != options.end()) {
    if (!mode->is_string() || (*mode != "event" && *mode != "batch")) {
      return OptionProblem{"mode", "sink option \"mode\" must be \"event\" or \"batch\""};
    }
    out->batch = *mode == "batch";
  }
  if (auto headers = options.find("headers"); headers != options.end()) {
    if (!headers->is_object() || headers->size() > 32) {
      return OptionProblem{"headers",
                           "sink option \"headers\" must be an object of at most 32 "
                           "header names and string values"};
    }
    for (const auto &item : headers->items()) {
      std::string option = "headers." + item.key();
      if (!Token(item.key())) {
        return OptionProblem{option, "header name \"" + item.key() + "\" is not a valid token"};
      }
      if (Reserved(item.key())) {
        return OptionProblem{option, "header \"" + item.key() + "\" is set by evproc itself"};
      }
      if (!item.value().is_string()) {
        return OptionProblem{option, "header \"" + item.key() + "\" must have a string value"};
      }
      const std::string &value = item.value().get_ref<const std::string &>();
      if (value.size() > 8192 || std::any_of(value.begin(), value.end(), [](unsigned char c) {
            return c == '\r' || c == '\n' || c == 0;
          })) {
        return OptionProblem{
            option, "header \"" + item.key() + "\" must be at most 8192 bytes without line breaks"};
      }
      out->headers.emplace_back(item.key(), value);
    }
  }
  if (auto secret = options.find("secret"); secret != options.end()) {
    std::optional<std::string> key;
    if (secret->is_string()) key = core::WebhookKey(secret->get<std::string>());
    if (!key || key->size() < 16 || key->size() > 1024) {
      return OptionProblem{"secret",
                           "sink option \"secret\" must be \"whsec_\" followed by the "
                           "base64 of a key, or a string, of 16 to 1024 bytes"};
    }
    out->key = *key;
  }
  int64_t value = out->timeout_ms;
  if (auto problem = Integer(options, "timeout_ms", 1, 300000, &value)) return problem;
  out->timeout_ms = static_cast<long>(value);
  value = out->connect_timeout_ms;
  if (auto problem = Integer(options, "connect_timeout_ms", 1, 60000, &value)) return problem;
  out->connect_timeout_ms = static_cast<long>(value);
  value = out->max_in_flight;
  if (auto problem = Integer(options, "max_in_flight", 1, 256, &value)) return problem;
  out->max_in_flight = static_cast<int>(value);
  if (auto problem =
          Integer(options, "retry_after_cap_ms", 0, 86400000, &out->retry_after_cap_ms)) {
    return problem;
  }
  if (auto problem = Boolean(options, "follow_redirects", &out->follow_redirects)) return problem;
  if (auto problem = Boolean(options, "tls_verify", &out->tls_verify)) return problem;
  return std::nullopt;
}

std::optional<OptionProblem> ValidateWebhook(const nlohmann::json &options,
                                             const ValidationContext &context) {
  WebhookOptions parsed;
  if (auto problem = ParseWebhookOptions(options, &parsed)) return problem;
  if (!parsed.tls_verify && !context.superuser) {
    return OptionProblem{"tls_verify", "only superusers may turn TLS verification off"};
  }
  std::string error;
  auto list = core::DestinationList::Parse(context.allowed_destinations, &error);
  if (!list || !list->HostAllowed(parsed.host)) {
    return OptionProblem{"url", "destination host \"" + parsed.host +
                                    "\" is not allowed by evproc.sink_allowed_destinations"};
  }
  return std::nullopt;
}

nlohmann::json MaskWebhook(const nlohmann::json &options) {
  nlohmann::json masked = options;
  if (masked.contains("secret")) masked["secret"] = kMasked;
  // A URL's query may carry a token ("?key=..."): shown without it.
  if (auto url = masked.find("url"); url != masked.end() && url->is_string()) {
    std::string text = url->get<std::string>();
    if (size_t query = text.find('?'); query != std::string::npos) {
      *url = text.substr(0, query + 1) + kMasked;
    }
  }
  if (auto headers = masked.find("headers"); headers != masked.end() && headers->is_object()) {
    for (auto &item : headers->items()) item.value() = kMasked;
  }
  return masked;
}

}  // namespace evproc::sink

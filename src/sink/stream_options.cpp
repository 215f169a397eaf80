// Parsing, validation and masking of the stream sinks' options (stream_options.hpp).
#include "sink/stream_options.hpp"

#include <algorithm>
#include <cctype>

#include "core/destination.hpp"
#include "sink/stream.hpp"

namespace evproc::sink {

namespace {

std::optional<OptionProblem> Unknown(const nlohmann::json &options,
                                     const std::vector<const char *> &known, const char *type) {
  for (const auto &item : options.items()) {
    if (std::none_of(known.begin(), known.end(),
                     [&](const char *name) { return item.key() == name; })) {
      return OptionProblem{item.key(),
                           std::string("unknown ") + type + " sink option \"" + item.key() + "\""};
    }
  }
  return std::nullopt;
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

// A string option: at most max_length bytes, no control characters (a credential or name
// must never break a protocol line).
std::optional<OptionProblem> Text(const nlohmann::json &options, const char *name,
                                  size_t max_length, std::string *out,
                                  bool allow_newlines = false) {
  auto it = options.find(name);
  if (it == options.end()) return std::nullopt;
  bool bad = !it->is_string();
  if (!bad) {
    const auto &value = it->get_ref<const std::string &>();
    bad = value.empty() || value.size() > max_length ||
          std::any_of(value.begin(), value.end(), [&](unsigned char c) {
            return c == 0 || (c < 0x20 && !(allow_newlines && (c == '\n' || c == '\r')));
          });
  }
  if (bad) {
    return OptionProblem{name, std::string("sink option \"") + name +
                                   "\" must be a non-empty string of at most " +
                                   std::to_string(max_length) + " bytes" +
                                   (allow_newlines ? "" : " without control characters")};
  }
  *out = it->get<std::string>();
  return std::nullopt;
}

bool NameChars(const std::string &text, const char *extra) {
  return std::all_of(text.begin(), text.end(), [&](unsigned char c) {
    return std::isalnum(c) ||
           std::string_view(extra).find(static_cast<char>(c)) != std::string_view::npos;
  });
}

std::optional<OptionProblem> Allowed(const std::vector<std::string> &hosts, const char *option,
                                     const ValidationContext &context) {
  std::string error;
  auto list = core::DestinationList::Parse(context.allowed_destinations, &error);
  for (const std::string &host : hosts) {
    if (!list || !list->HostAllowed(host)) {
      return OptionProblem{option, "destination host \"" + host +
                                       "\" is not allowed by evproc.sink_allowed_destinations"};
    }
  }
  return std::nullopt;
}

nlohmann::json Masked(const nlohmann::json &options, std::initializer_list<const char *> secrets) {
  nlohmann::json masked = options;
  for (const char *name : secrets) {
    if (masked.contains(name)) masked[name] = kMasked;
  }
  return masked;
}

}  // namespace

std::string ServerHost(const std::string &server) {
  std::string lower = server;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  size_t start = 0;
  if (size_t scheme = lower.find("://"); scheme != std::string::npos) start = scheme + 3;
  std::string authority = lower.substr(start);
  if (authority.empty() || authority.find_first_of("@/?# ") != std::string::npos) return "";
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return "";
    return authority.substr(1, close - 1);
  }
  return authority.substr(0, authority.find(':'));
}

std::optional<OptionProblem> ParseNatsOptions(const nlohmann::json &options, NatsOptions *out) {
  if (auto problem = Unknown(options,
                             {"type", "servers", "subject", "source", "expect_stream", "token",
                              "user", "password", "nkey", "nkey_seed", "tls", "tls_ca",
                              "tls_verify", "timeout_ms", "connect_timeout_ms", "max_in_flight"},
                             "nats")) {
    return problem;
  }
  auto servers = options.find("servers");
  if (servers != options.end() && servers->is_string()) {
    // One server may be given as a string.
    nlohmann::json copy = options;
    copy["servers"] = nlohmann::json::array({*servers});
    return ParseNatsOptions(copy, out);
  }
  const char *servers_problem =
      "sink option \"servers\" must be an array of 1 to 16 server URLs (\"nats://host:port\", "
      "\"tls://host:port\" or \"host:port\") without credentials";
  if (servers == options.end() || !servers->is_array() || servers->empty() ||
      servers->size() > 16) {
    return OptionProblem{"servers", servers_problem};
  }
  for (const auto &server : *servers) {
    if (!server.is_string()) return OptionProblem{"servers", servers_problem};
    NatsServer parsed;
    parsed.url = server.get<std::string>();
    std::string lower = parsed.url;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower.find("://") == std::string::npos) {
      parsed.url = "nats://" + parsed.url;
    } else if (lower.rfind("tls://", 0) == 0) {
      parsed.tls = true;
    } else if (lower.rfind("nats://", 0) != 0) {
      return OptionProblem{"servers", servers_problem};
    }
    parsed.host = ServerHost(parsed.url);
    if (parsed.host.empty() || parsed.url.size() > 512) {
      return OptionProblem{"servers", servers_problem};
    }
    out->tls = out->tls || parsed.tls;
    out->servers.push_back(std::move(parsed));
  }
  if (auto problem =
          Text(options, "subject", core::SubjectTemplate::kMaxTemplateLength, &out->subject_text)) {
    return problem;
  }
  std::string error;
  out->subject = core::SubjectTemplate::Parse(out->subject_text, &error);
  if (!out->subject) {
    return OptionProblem{"subject", "sink option \"subject\" " + error};
  }
  if (auto problem = Text(options, "source", 64, &out->source)) return problem;
  if (!out->source.empty() && !NameChars(out->source, "_.-")) {
    return OptionProblem{"source",
                         R"(sink option "source" must be letters, digits, "_", "." and "-")"};
  }
  if (auto problem = Text(options, "expect_stream", 255, &out->expect_stream)) return problem;
  if (!out->expect_stream.empty() && !NameChars(out->expect_stream, "_-")) {
    return OptionProblem{"expect_stream",
                         "sink option \"expect_stream\" must be a stream name (letters, digits, "
                         "\"_\" and \"-\")"};
  }
  if (auto problem = Text(options, "token", 4096, &out->token)) return problem;
  if (auto problem = Text(options, "user", 1024, &out->user)) return problem;
  if (auto problem = Text(options, "password", 4096, &out->password)) return problem;
  if (auto problem = Text(options, "nkey", 128, &out->nkey)) return problem;
  if (auto problem = Text(options, "nkey_seed", 128, &out->nkey_seed)) return problem;
  if (out->user.empty() != out->password.empty()) {
    return OptionProblem{out->user.empty() ? "user" : "password",
                         R"(sink options "user" and "password" go together)"};
  }
  if (out->nkey.empty() != out->nkey_seed.empty()) {
    return OptionProblem{out->nkey.empty() ? "nkey" : "nkey_seed",
                         R"(sink options "nkey" (the public key) and "nkey_seed" go together)"};
  }
  if (!out->nkey.empty() && (out->nkey[0] != 'U' || out->nkey_seed.rfind("SU", 0) != 0)) {
    return OptionProblem{"nkey",
                         "sink option \"nkey\" must be a user public key (\"U...\") and "
                         "\"nkey_seed\" its seed (\"SU...\")"};
  }
  int credentials =
      (out->token.empty() ? 0 : 1) + (out->user.empty() ? 0 : 1) + (out->nkey.empty() ? 0 : 1);
  if (credentials > 1) {
    return OptionProblem{"token",
                         "give one of \"token\", \"user\"/\"password\" and "
                         "\"nkey\"/\"nkey_seed\""};
  }
  bool tls = out->tls;
  if (auto problem = Boolean(options, "tls", &tls)) return problem;
  if (!tls && out->tls) {
    return OptionProblem{"tls", "sink option \"tls\" cannot be false with a tls:// server"};
  }
  out->tls = tls;
  if (auto problem = Text(options, "tls_ca", 65536, &out->tls_ca, true)) return problem;
  if (auto problem = Boolean(options, "tls_verify", &out->tls_verify)) return problem;
  if (auto problem = Integer(options, "timeout_ms", 1, 300000, &out->timeout_ms)) return problem;
  if (auto problem = Integer(options, "connect_timeout_ms", 1, 60000, &out->connect_timeout_ms)) {
    return problem;
  }
  int64_t value = out->max_in_flight;
  if (auto problem = Integer(options, "max_in_flight", 1, 4096, &value)) return problem;
  out->max_in_flight = static_cast<int>(value);
  return std::nullopt;
}

std::optional<OptionProblem> ValidateNats(const nlohmann::json &options,
                                          const ValidationContext &context) {
  NatsOptions parsed;
  if (auto problem = ParseNatsOptions(options, &parsed)) return problem;
  if (!parsed.tls_verify && !context.superuser) {
    return OptionProblem{"tls_verify", "only superusers may turn TLS verification off"};
  }
  std::vector<std::string> hosts;
  for (const NatsServer &server : parsed.servers) hosts.push_back(server.host);
  return Allowed(hosts, "servers", context);
}

nlohmann::json MaskNats(const nlohmann::json &options) {
  return Masked(options, {"token", "password", "nkey_seed"});
}

std::optional<OptionProblem> ParseKafkaOptions(const nlohmann::json &options, KafkaOptions *out) {
  if (auto problem = Unknown(options,
                             {"type", "brokers", "topic", "security_protocol", "sasl_mechanism",
                              "sasl_username", "sasl_password", "ssl_ca", "tls_verify",
                              "timeout_ms", "linger_ms", "compression", "max_in_flight"},
                             "kafka")) {
    return problem;
  }
  const char *brokers_problem =
      R"(sink option "brokers" must be a comma-separated list of 1 to 16 "host:port")";
  if (auto problem = Text(options, "brokers", 4096, &out->brokers)) {
    return OptionProblem{"brokers", brokers_problem};
  }
  if (out->brokers.empty()) return OptionProblem{"brokers", brokers_problem};
  size_t start = 0;
  while (start <= out->brokers.size()) {
    size_t comma = out->brokers.find(',', start);
    std::string broker =
        out->brokers.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    broker.erase(0, broker.find_first_not_of(' '));
    broker.erase(broker.find_last_not_of(' ') + 1);
    std::string host = ServerHost(broker);
    if (host.empty() || broker.find("://") != std::string::npos) {
      return OptionProblem{"brokers", brokers_problem};
    }
    out->hosts.push_back(host);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out->hosts.size() > 16) return OptionProblem{"brokers", brokers_problem};
  if (auto problem = Text(options, "topic", 249, &out->topic)) return problem;
  if (out->topic.empty() || !NameChars(out->topic, "._-") || out->topic == "." ||
      out->topic == "..") {
    return OptionProblem{"topic",
                         "sink option \"topic\" must be a Kafka topic name (1 to 249 "
                         "letters, digits, \".\", \"_\" and \"-\")"};
  }
  if (auto problem = Text(options, "security_protocol", 32, &out->security_protocol)) {
    return problem;
  }
  static const char *const kProtocols[] = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
  if (std::none_of(std::begin(kProtocols), std::end(kProtocols),
                   [&](const char *p) { return out->security_protocol == p; })) {
    return OptionProblem{"security_protocol",
                         "sink option \"security_protocol\" must be plaintext, ssl, "
                         "sasl_plaintext or sasl_ssl"};
  }
  if (auto problem = Text(options, "sasl_mechanism", 32, &out->sasl_mechanism)) return problem;
  if (!out->sasl_mechanism.empty() && out->sasl_mechanism != "PLAIN" &&
      out->sasl_mechanism != "SCRAM-SHA-256" && out->sasl_mechanism != "SCRAM-SHA-512") {
    return OptionProblem{"sasl_mechanism",
                         "sink option \"sasl_mechanism\" must be PLAIN, "
                         "SCRAM-SHA-256 or SCRAM-SHA-512"};
  }
  if (auto problem = Text(options, "sasl_username", 1024, &out->sasl_username)) return problem;
  if (auto problem = Text(options, "sasl_password", 4096, &out->sasl_password)) return problem;
  bool sasl = out->security_protocol.rfind("sasl_", 0) == 0;
  if (sasl &&
      (out->sasl_mechanism.empty() || out->sasl_username.empty() || out->sasl_password.empty())) {
    return OptionProblem{"sasl_mechanism",
                         "a sasl_* security_protocol needs sasl_mechanism, "
                         "sasl_username and sasl_password"};
  }
  if (!sasl &&
      !(out->sasl_mechanism.empty() && out->sasl_username.empty() && out->sasl_password.empty())) {
    return OptionProblem{"security_protocol",
                         "SASL options need security_protocol sasl_plaintext or sasl_ssl"};
  }
  if (auto problem = Text(options, "ssl_ca", 65536, &out->ssl_ca, true)) return problem;
  if (auto problem = Boolean(options, "tls_verify", &out->tls_verify)) return problem;
  if (auto problem = Integer(options, "timeout_ms", 1000, 900000, &out->timeout_ms)) {
    return problem;
  }
  if (auto problem = Integer(options, "linger_ms", 0, 1000, &out->linger_ms)) return problem;
  if (auto problem = Text(options, "compression", 16, &out->compression)) return problem;
  static const char *const kCodecs[] = {"none", "gzip", "snappy", "lz4", "zstd"};
  if (std::none_of(std::begin(kCodecs), std::end(kCodecs),
                   [&](const char *c) { return out->compression == c; })) {
    return OptionProblem{"compression",
                         "sink option \"compression\" must be none, gzip, snappy, lz4 or zstd"};
  }
  int64_t value = out->max_in_flight;
  if (auto problem = Integer(options, "max_in_flight", 1, 100000, &value)) return problem;
  out->max_in_flight = static_cast<int>(value);
  return std::nullopt;
}

std::optional<OptionProblem> ValidateKafka(const nlohmann::json &options,
                                           const ValidationContext &context) {
  KafkaOptions parsed;
  if (auto problem = ParseKafkaOptions(options, &parsed)) return problem;
  if (!parsed.tls_verify && !context.superuser) {
    return OptionProblem{"tls_verify", "only superusers may turn TLS verification off"};
  }
  return Allowed(parsed.hosts, "brokers", context);
}

nlohmann::json MaskKafka(const nlohmann::json &options) {
  return Masked(options, {"sasl_password"});
}

std::string (*stream_origin_source)() = nullptr;

const std::string &StreamOrigin() {
  static std::string origin;
  static const std::string unknown = "unknown";
  if (origin.empty() && stream_origin_source != nullptr) origin = stream_origin_source();
  return origin.empty() ? unknown : origin;
}

}  // namespace evproc::sink

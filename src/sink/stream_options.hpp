// The stream sinks' options (docs/streams.md), parsed from the subscription's sink object.
//
// NATS JetStream ({"type": "nats", ...}):
//   servers             ["nats://host:port", "tls://host:port", "host:port"], 1..16, required
//   subject             subject template (core/stream_naming.hpp), default "{topic}"
//   source              the message ids' origin, [A-Za-z0-9_.-]{1,64}; default: this cluster's
//                       system identifier and the database's OID
//   expect_stream       the stream that must store the messages (else the subscription pauses)
//   token | user+password | nkey+nkey_seed   credentials (token, password, nkey_seed: secrets)
//   tls                 true: TLS required (implied by a tls:// server); tls_ca: PEM
//   tls_verify          true (default); false only for superusers
//   timeout_ms          wait for the stream's acknowledgement, 1..300000, default 5000
//   connect_timeout_ms  1..60000, default 2000
//   max_in_flight       publishes awaiting acknowledgement per subscription, 1..4096, 256
//
// Kafka ({"type": "kafka", ...}):
//   brokers             "host:port,host:port", 1..16, required
//   topic               the Kafka topic, [A-Za-z0-9._-]{1,249}, required
//   security_protocol   plaintext (default), ssl, sasl_plaintext, sasl_ssl
//   sasl_mechanism      PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; sasl_username, sasl_password
//   ssl_ca              PEM; tls_verify true (default), false only for superusers
//   timeout_ms          message.timeout.ms, 1000..900000, default 30000
//   linger_ms           0..1000, default 1
//   compression         none (default), gzip, snappy, lz4, zstd
//   max_in_flight       messages awaiting their delivery report per subscription, 1..100000,
//                       default 1000
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/stream_naming.hpp"
#include "sink/registry.hpp"

namespace evproc::sink {

struct NatsServer {
  std::string url;   // as given, with a scheme (nats:// added when missing)
  std::string host;  // lower case, IPv6 without brackets
  bool tls = false;
};

struct NatsOptions {
  std::vector<NatsServer> servers;
  std::string subject_text = "{topic}";
  std::optional<core::SubjectTemplate> subject;
  std::string source;  // empty: the default origin
  std::string expect_stream;
  std::string token;
  std::string user;
  std::string password;
  std::string nkey;
  std::string nkey_seed;
  bool tls = false;
  std::string tls_ca;
  bool tls_verify = true;
  int64_t timeout_ms = 5000;
  int64_t connect_timeout_ms = 2000;
  int max_in_flight = 256;
};

struct KafkaOptions {
  std::vector<std::string> hosts;  // of brokers, lower case
  std::string brokers;
  std::string topic;
  std::string security_protocol = "plaintext";
  std::string sasl_mechanism;
  std::string sasl_username;
  std::string sasl_password;
  std::string ssl_ca;
  bool tls_verify = true;
  int64_t timeout_ms = 30000;
  int64_t linger_ms = 1;
  std::string compression = "none";
  int max_in_flight = 1000;
};

std::optional<OptionProblem> ParseNatsOptions(const nlohmann::json &options, NatsOptions *out);
std::optional<OptionProblem> ParseKafkaOptions(const nlohmann::json &options, KafkaOptions *out);

// The host of "scheme://host:port" or "host:port" (lower case, IPv6 without brackets);
// empty when malformed or carrying credentials.
std::string ServerHost(const std::string &server);

}  // namespace evproc::sink

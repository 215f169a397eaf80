// Naming for the stream sinks (docs/streams.md): the NATS subject template, the key made
// subject-safe, the stable message id, and what a broker's error means. Pure C++,
// unit-tested; the transports (src/sink/nats_transport.cpp, kafka_transport.cpp) use it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace evproc::core {

// A subject template: dot-separated tokens of literal text ([A-Za-z0-9_:-]) and the
// placeholders {topic}, {key}, {subscription} and {partition}, e.g. "evproc.{topic}.{key}".
// No wildcards ("*", ">"), no empty tokens, at most kMaxTemplateLength characters.
class SubjectTemplate {
 public:
  static constexpr size_t kMaxTemplateLength = 200;
  // The longest subject a message may get (longer ones are refused: a dead letter),
  // far below the server's control-line limit (4 kB), which would close the connection.
  static constexpr size_t kMaxSubjectLength = 1024;

  // Parses a template; nullopt with *error set (one line, naming what is wrong) when not.
  static std::optional<SubjectTemplate> Parse(std::string_view text, std::string *error);

  // The subject for one event. {topic} is the topic with its dots kept as token
  // separators (when a dot would make an empty token, every dot is encoded); {key} and
  // {subscription} are subject-safe encoded (SubjectToken); {partition} is the number.
  // has_key false: {key} renders as "%00" (a key never holds a NUL byte).
  [[nodiscard]] std::string Render(std::string_view topic, bool has_key, std::string_view key,
                                   std::string_view subscription, int32_t partition) const;

  [[nodiscard]] bool uses_key() const { return uses_key_; }

 private:
  enum class Part { kLiteral, kTopic, kKey, kSubscription, kPartition };
  std::vector<std::pair<Part, std::string>> parts_;
  bool uses_key_ = false;
};

// A text made one subject token: bytes other than ASCII letters, digits, "_" and "-" are
// percent-encoded ("%2E" for "."), so distinct texts give distinct tokens; the empty
// text is "%".
std::string SubjectToken(std::string_view text);

// The topic as subject tokens: dots kept when every dot-separated piece is non-empty,
// else encoded like SubjectToken.
std::string SubjectTopic(std::string_view topic);

// The stable message id of one event for one subscription (Nats-Msg-Id): the same on
// every re-publish, so the stream's duplicate window drops a re-publish after a crash;
// distinct across databases publishing into one stream through origin (the cluster's
// system identifier and the database, or the sink's "source" option). Replayed events
// (evproc_replay) get a ":replay" suffix: a replay is meant to be delivered again.
std::string StreamMessageId(std::string_view origin, std::string_view subscription,
                            int64_t event_id, bool replay);

// A header value made safe: bytes outside printable ASCII and "%" percent-encoded, so no
// event field can break a header line.
std::string HeaderValue(std::string_view text);

// What a broker's answer to one message means.
enum class StreamFailure {
  kRetry,    // the broker failing (connection, timeout, no responders, cluster
             // unavailable): retry with backoff, feeds the breaker
  kRefused,  // the broker refused this message for good: dead letter with its error
  kFatal,    // misconfigured or not allowed (authorization, JetStream off, wrong stream):
             // pause the subscription with the reason
};

// NATS: a publish's status (natsStatus) and, when the stream answered with an error, its
// JetStream error code (jsErrCode, 0 when none).
StreamFailure ClassifyNats(int nats_status, int js_error_code);

// Kafka: a delivery report's error (rd_kafka_resp_err_t) and whether the producer's state
// is fatal (rd_kafka_fatal_error) or the error retriable.
StreamFailure ClassifyKafka(int kafka_error, bool fatal);

}  // namespace evproc::core

// Subject templates, message ids and broker error classes for the stream sinks
// (stream_naming.hpp).
#include "core/stream_naming.hpp"

#include <librdkafka/rdkafka.h>
#include <nats/status.h>

namespace evproc::core {

namespace {

constexpr char kHex[] = "0123456789ABCDEF";

bool TokenSafe(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

bool LiteralSafe(unsigned char c) { return TokenSafe(c) || c == ':'; }

void Encode(unsigned char c, std::string *out) {
  *out += '%';
  *out += kHex[c >> 4];
  *out += kHex[c & 15];
}

}  // namespace

std::optional<SubjectTemplate> SubjectTemplate::Parse(std::string_view text, std::string *error) {
  if (text.empty()) {
    *error = "must not be empty";
    return std::nullopt;
  }
  if (text.size() > kMaxTemplateLength) {
    *error = "must be at most " + std::to_string(kMaxTemplateLength) + " characters";
    return std::nullopt;
  }
  SubjectTemplate result;
  bool token_empty = true;  // the current dot-separated token has nothing yet
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '.') {
      if (token_empty) {
        *error = "must not have an empty token (a leading, trailing or doubled \".\")";
        return std::nullopt;
      }
      result.parts_.emplace_back(Part::kLiteral, ".");
      token_empty = true;
      ++i;
    } else if (c == '{') {
      size_t close = text.find('}', i);
      if (close == std::string_view::npos) {
        *error = "has an unclosed \"{\"";
        return std::nullopt;
      }
      std::string_view name = text.substr(i + 1, close - i - 1);
      Part part;
      if (name == "topic") {
        part = Part::kTopic;
      } else if (name == "key") {
        part = Part::kKey;
        result.uses_key_ = true;
      } else if (name == "subscription") {
        part = Part::kSubscription;
      } else if (name == "partition") {
        part = Part::kPartition;
      } else {
        *error = "has an unknown placeholder \"{" + std::string(name) +
                 "}\" (known: {topic}, {key}, {subscription}, {partition})";
        return std::nullopt;
      }
      result.parts_.emplace_back(part, "");
      token_empty = false;
      i = close + 1;
    } else if (LiteralSafe(static_cast<unsigned char>(c))) {
      if (result.parts_.empty() || result.parts_.back().first != Part::kLiteral ||
          result.parts_.back().second == ".") {
        result.parts_.emplace_back(Part::kLiteral, "");
      }
      result.parts_.back().second += c;
      token_empty = false;
      ++i;
    } else {
      *error = std::string("has a character not allowed in a subject: \"") + c +
               R"(" (literal text: letters, digits, "_", ":" and "-"; no wildcards))";
      return std::nullopt;
    }
  }
  if (token_empty) {
    *error = "must not have an empty token (a leading, trailing or doubled \".\")";
    return std::nullopt;
  }
  return result;
}

std::string SubjectTemplate::Render(std::string_view topic, bool has_key, std::string_view key,
                                    std::string_view subscription, int32_t partition) const {
  std::string out;
  for (const auto &[part, literal] : parts_) {
    switch (part) {
      case Part::kLiteral:
        out += literal;
        break;
      case Part::kTopic:
        out += SubjectTopic(topic);
        break;
      case Part::kKey:
        out += has_key ? SubjectToken(key) : std::string("%00");
        break;
      case Part::kSubscription:
        out += SubjectToken(subscription);
        break;
      case Part::kPartition:
        out += std::to_string(partition);
        break;
    }
  }
  return out;
}

std::string SubjectToken(std::string_view text) {
  if (text.empty()) return "%";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (TokenSafe(c)) {
      out += static_cast<char>(c);
    } else {
      Encode(c, &out);
    }
  }
  return out;
}

std::string SubjectTopic(std::string_view topic) {
  bool dots_ok = !topic.empty() && topic.front() != '.' && topic.back() != '.' &&
                 topic.find("..") == std::string_view::npos;
  std::string out;
  for (unsigned char c : topic) {
    if (TokenSafe(c) || c == ':' || (c == '.' && dots_ok)) {
      out += static_cast<char>(c);
    } else {
      Encode(c, &out);
    }
  }
  return out.empty() ? "%" : out;
}

std::string StreamMessageId(std::string_view origin, std::string_view subscription,
                            int64_t event_id, bool replay) {
  std::string id = "evproc:";
  id += HeaderValue(origin);
  id += ':';
  id += HeaderValue(subscription);
  id += ':';
  id += std::to_string(event_id);
  if (replay) id += ":replay";
  return id;
}

std::string HeaderValue(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c < 0x20 || c >= 0x7f || c == '%') {
      Encode(c, &out);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

StreamFailure ClassifyNats(int nats_status, int js_error_code) {
  if (js_error_code != 0) {
    switch (js_error_code) {
      // The stream is unavailable or out of room for now: retry.
      case JSClusterNotAvailErr:
      case JSClusterNotLeaderErr:
      case JSClusterNoPeersErr:
      case JSClusterIncompleteErr:
      case JSInsufficientResourcesErr:
      case JSStorageResourcesExceededErr:
      case JSMemoryResourcesExceededErr:
      case JSAccountResourcesExceededErr:
      case JSStreamStoreFailedErr:
      case JSStreamLimitsErr:
      case JSRaftGeneralErr:
      case JSStreamNotFoundErr:
        return StreamFailure::kRetry;
      // JetStream off, or the subject captured by another stream than the one expected:
      // configuration, not this message.
      case JSNotEnabledErr:
      case JSNotEnabledForAccountErr:
      case JSNoAccountErr:
      case JSStreamNotMatchErr:
        return StreamFailure::kFatal;
      // Anything else the stream answered about this message (too large, bad headers):
      // refused for good.
      default:
        return StreamFailure::kRefused;
    }
  }
  switch (nats_status) {
    case NATS_MAX_PAYLOAD:
    case NATS_INVALID_SUBJECT:
      return StreamFailure::kRefused;
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_NOT_PERMITTED:
    case NATS_SECURE_CONNECTION_WANTED:
    case NATS_SECURE_CONNECTION_REQUIRED:
      return StreamFailure::kFatal;
    default:
      // Timeouts, no responders (no stream captures the subject, or it is moving between
      // servers), lost or closed connections, no server: the broker's failure.
      return StreamFailure::kRetry;
  }
}

StreamFailure ClassifyKafka(int kafka_error, bool fatal) {
  if (fatal) return StreamFailure::kFatal;
  switch (static_cast<rd_kafka_resp_err_t>(kafka_error)) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
      return StreamFailure::kRefused;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_TOPIC_DELETION_DISABLED:
      return StreamFailure::kFatal;
    default:
      // Timeouts, brokers down, leaders moving, not enough replicas, unknown topic or
      // partition (not created yet): the broker's failure.
      return StreamFailure::kRetry;
  }
}

}  // namespace evproc::core

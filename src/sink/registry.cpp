// The table of sink types and the checks common to all of them.
#include "sink/registry.hpp"

#include "sink/stream.hpp"
#include "sink/webhook.hpp"

namespace evproc::sink {

namespace {

// One line per sink type.
const SinkType kSinkTypes[] = {
    {"webhook", ValidateWebhook, MaskWebhook, MakeWebhookTransport},
    {"nats", ValidateNats, MaskNats, MakeNatsTransport},
    {"kafka", ValidateKafka, MaskKafka, MakeKafkaTransport},
};

}  // namespace

const SinkType *FindSinkType(std::string_view name) {
  for (const SinkType &type : kSinkTypes) {
    if (name == type.name) return &type;
  }
  return nullptr;
}

std::optional<OptionProblem> ValidateSink(const nlohmann::json &sink,
                                          const ValidationContext &context) {
  if (!sink.is_object()) return OptionProblem{"sink", "sink must be a JSON object"};
  auto type = sink.find("type");
  if (type == sink.end() || !type->is_string()) {
    return OptionProblem{"type", "sink option \"type\" must be a string naming the sink type"};
  }
  const SinkType *found = FindSinkType(type->get<std::string>());
  if (found == nullptr) {
    std::string known;
    for (const SinkType &each : kSinkTypes) {
      known += known.empty() ? "" : ", ";
      known += each.name;
    }
    return OptionProblem{
        "type", "unknown sink type \"" + type->get<std::string>() + "\" (known: " + known + ")"};
  }
  return found->validate(sink, context);
}

nlohmann::json MaskSink(const nlohmann::json &sink) {
  if (!sink.is_object()) return nlohmann::json::object();
  auto type = sink.find("type");
  const SinkType *found =
      (type != sink.end() && type->is_string()) ? FindSinkType(type->get<std::string>()) : nullptr;
  if (found == nullptr) {
    nlohmann::json only = nlohmann::json::object();
    if (type != sink.end()) only["type"] = *type;
    return only;
  }
  return found->mask(sink);
}

}  // namespace evproc::sink

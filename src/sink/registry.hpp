// The sink types evproc knows (webhook, and the stream sinks), each with what the
// framework needs of it: option validation when subscribing or altering a sink, the
// masked form shown to roles other than the owner, and a transport for the sink workers.
// Adding a sink type: implement Transport (transport.hpp) and these three functions, and
// add one line to kSinkTypes in registry.cpp.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "sink/transport.hpp"

namespace evproc::sink {

// A bad option: the subscribe or alter call fails with 22023 and this message; option is
// the option's name (a JSON path like "headers.Authorization" for nested ones).
struct OptionProblem {
  std::string option;
  std::string message;
};

// Who is subscribing, and under which limits: some options (e.g. turning TLS
// verification off) are for superusers only, and the destination must be allowed.
struct ValidationContext {
  bool superuser = false;
  std::string allowed_destinations;  // evproc.sink_allowed_destinations
};

struct SinkType {
  const char *name;  // the sink's "type"
  // Checks the whole sink object ("type" included, already known to be this type). An
  // unknown option is a problem too (a typo must not silently do nothing).
  std::optional<OptionProblem> (*validate)(const nlohmann::json &options,
                                           const ValidationContext &context);
  // The options as roles other than the subscription's owner see them: every secret
  // (signing secrets, passwords, tokens, credential headers) replaced by "********".
  nlohmann::json (*mask)(const nlohmann::json &options);
  // A transport for one sink worker; it serves every subscription of this type there.
  std::unique_ptr<Transport> (*make)();
};

// The type named name, or nullptr.
const SinkType *FindSinkType(std::string_view name);

// Validates a sink object: a JSON object with a known "type", then that type's options.
std::optional<OptionProblem> ValidateSink(const nlohmann::json &sink,
                                          const ValidationContext &context);

// What MaskSink puts in place of a secret.
inline constexpr const char *kMasked = "********";

// The sink as roles other than its owner see it (unknown types: only "type").
nlohmann::json MaskSink(const nlohmann::json &sink);

}  // namespace evproc::sink

// The stream sink types: NATS JetStream (libnats' async JetStream publish) and Kafka
// (librdkafka's idempotent producer). Options: stream_options.hpp; docs/streams.md.
#pragma once

#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "sink/registry.hpp"
#include "sink/transport.hpp"

namespace evproc::sink {

std::optional<OptionProblem> ValidateNats(const nlohmann::json &options,
                                          const ValidationContext &context);
nlohmann::json MaskNats(const nlohmann::json &options);
std::unique_ptr<Transport> MakeNatsTransport();

std::optional<OptionProblem> ValidateKafka(const nlohmann::json &options,
                                           const ValidationContext &context);
nlohmann::json MaskKafka(const nlohmann::json &options);
std::unique_ptr<Transport> MakeKafkaTransport();

// The message ids' default origin, "<system identifier>.<database OID>": read once per
// process through stream_origin_source, which src/stream_origin.cpp (the PostgreSQL side)
// sets when the library is loaded; "unknown" without it (unit tests). Transports read it
// when they start a batch (the sink worker is connected to its database by then).
const std::string &StreamOrigin();
extern std::string (*stream_origin_source)();

}  // namespace evproc::sink

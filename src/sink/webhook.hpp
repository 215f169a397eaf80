// The webhook sink type: POST to an HTTP(S) endpoint with libcurl's multi interface,
// Standard Webhooks signatures, answers classified by core/webhook_answer.hpp.
#pragma once

#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "sink/registry.hpp"
#include "sink/transport.hpp"

namespace evproc::sink {

std::optional<OptionProblem> ValidateWebhook(const nlohmann::json &options,
                                             const ValidationContext &context);
nlohmann::json MaskWebhook(const nlohmann::json &options);
std::unique_ptr<Transport> MakeWebhookTransport();

}  // namespace evproc::sink

// Standard Webhooks (standardwebhooks.com) signing: webhook-signature is "v1," followed
// by base64(HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")). A secret of the
// form "whsec_<base64>" is the base64 of the key (as the spec's libraries generate them);
// any other secret is the key's bytes as given. Pure C++ over OpenSSL's libcrypto.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace evproc::core {

std::string Base64Encode(std::string_view bytes);
// nullopt when text is not valid base64 (padding optional).
std::optional<std::string> Base64Decode(std::string_view text);

// The key a secret stands for; nullopt for a "whsec_" secret whose rest is not base64.
std::optional<std::string> WebhookKey(std::string_view secret);

// The webhook-signature header's value ("v1,<base64>").
std::string WebhookSignature(std::string_view key, std::string_view id, std::string_view timestamp,
                             std::string_view body);

}  // namespace evproc::core

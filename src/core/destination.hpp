// Where sinks may connect: evproc.sink_allowed_destinations, a superuser setting, is a
// comma-separated list of host names ("hooks.example.com", "*.example.com"), IP addresses
// and CIDR blocks ("10.1.0.0/16", "::1/128", "127.0.0.1"). A destination is allowed when
// its host name is listed, or when the address the transport actually connects to is in
// a listed block: a name that resolves to an address no entry covers is refused when
// connecting, so DNS cannot lead a sink somewhere the superuser did not allow. Loopback,
// link-local, unspecified and multicast addresses are refused unless an entry lists them
// by address or block (a host name entry never admits them). An empty list allows
// nothing. Pure C++, unit-tested; transports call AddressAllowed from the socket-open
// hook of their client library.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct sockaddr;

namespace evproc::core {

class DestinationList {
 public:
  // Parses the setting; nullopt with *error set when an entry is malformed.
  static std::optional<DestinationList> Parse(std::string_view setting, std::string *error);

  // Whether the host name (or literal address) may be aimed at at all: listed by name,
  // matched by a wildcard entry, or a literal address AddressAllowed admits. Checked when
  // subscribing (22023 if not) and before each request.
  [[nodiscard]] bool HostAllowed(std::string_view host) const;

  // Whether the address the transport is about to connect to is allowed: in a listed
  // block, or (not loopback, link-local, unspecified or multicast) the connection's host
  // name is listed (host_listed, from HostAllowed of the name being connected to).
  [[nodiscard]] bool AddressAllowed(const struct sockaddr *address, bool host_listed) const;

  [[nodiscard]] bool empty() const { return names_.empty() && blocks_.empty(); }

 private:
  struct Block {
    int family = 0;  // AF_INET or AF_INET6
    uint8_t bytes[16] = {};
    int prefix = 0;
  };
  [[nodiscard]] bool InBlock(int family, const uint8_t *bytes) const;

  std::vector<std::string> names_;  // lower case; "*.x" matches any name ending in ".x"
  std::vector<Block> blocks_;
};

// Whether an address is loopback, link-local, unspecified or multicast (refused unless
// listed by address or block). IPv4-mapped IPv6 addresses are judged as IPv4.
bool IsSpecialAddress(int family, const uint8_t *bytes);

}  // namespace evproc::core

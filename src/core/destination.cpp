#include "core/destination.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace evproc::core {

namespace {

std::string Lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

// A literal address (brackets of an IPv6 URL host allowed): its family and bytes.
bool ParseAddress(std::string_view text, int *family, uint8_t *bytes) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  std::string copy(text);
  if (inet_pton(AF_INET, copy.c_str(), bytes) == 1) {
    *family = AF_INET;
    return true;
  }
  if (inet_pton(AF_INET6, copy.c_str(), bytes) == 1) {
    *family = AF_INET6;
    return true;
  }
  return false;
}

bool ValidHostName(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) {
      return false;
    }
  }
  return true;
}

// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as IPv4.
void Unmap(int *family, const uint8_t **bytes) {
  static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (*family == AF_INET6 && std::memcmp(*bytes, kMapped, 12) == 0) {
    *family = AF_INET;
    *bytes += 12;
  }
}

}  // namespace

bool IsSpecialAddress(int family, const uint8_t *bytes) {
  Unmap(&family, &bytes);
  if (family == AF_INET) {
    return bytes[0] == 127 || bytes[0] == 0 || (bytes[0] == 169 && bytes[1] == 254) ||
           bytes[0] >= 224;  // multicast and reserved, broadcast
  }
  static const uint8_t kZero[16] = {};
  bool unspecified_or_loopback =
      std::memcmp(bytes, kZero, 15) == 0 && (bytes[15] == 0 || bytes[15] == 1);
  bool link_local = bytes[0] == 0xfe && (bytes[1] & 0xc0) == 0x80;
  bool multicast = bytes[0] == 0xff;
  return unspecified_or_loopback || link_local || multicast;
}

std::optional<DestinationList> DestinationList::Parse(std::string_view setting,
                                                      std::string *error) {
  DestinationList list;
  while (!setting.empty()) {
    size_t comma = setting.find(',');
    std::string_view entry = Trim(setting.substr(0, comma));
    setting = comma == std::string_view::npos ? std::string_view() : setting.substr(comma + 1);
    if (entry.empty()) continue;
    size_t slash = entry.find('/');
    Block block;
    if (ParseAddress(entry.substr(0, slash), &block.family, block.bytes)) {
      int most = block.family == AF_INET ? 32 : 128;
      block.prefix = most;
      if (slash != std::string_view::npos) {
        std::string_view digits = entry.substr(slash + 1);
        if (digits.empty() || digits.size() > 3 ||
            !std::all_of(digits.begin(), digits.end(),
                         [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
          *error = "bad prefix length in \"" + std::string(entry) + "\"";
          return std::nullopt;
        }
        block.prefix = std::stoi(std::string(digits));
        if (block.prefix > most) {
          *error = "prefix length beyond the address in \"" + std::string(entry) + "\"";
          return std::nullopt;
        }
      }
      list.blocks_.push_back(block);
      continue;
    }
    std::string_view name = entry;
    if (name.substr(0, 2) == "*.") name.remove_prefix(2);
    if (slash != std::string_view::npos || !ValidHostName(name)) {
      *error = "\"" + std::string(entry) + "\" is neither a host name, an address nor a CIDR block";
      return std::nullopt;
    }
    list.names_.push_back(Lower(entry));
  }
  return list;
}

bool DestinationList::InBlock(int family, const uint8_t *bytes) const {
  for (const Block &block : blocks_) {
    int block_family = block.family;
    const uint8_t *block_bytes = block.bytes;
    int prefix = block.prefix;
    int this_family = family;
    const uint8_t *these = bytes;
    Unmap(&this_family, &these);
    if (block_family != this_family) continue;
    int full = prefix / 8;
    int rest = prefix % 8;
    if (std::memcmp(block_bytes, these, full) != 0) continue;
    if (rest != 0) {
      uint8_t mask = static_cast<uint8_t>(0xFF << (8 - rest));
      if ((block_bytes[full] & mask) != (these[full] & mask)) continue;
    }
    return true;
  }
  return false;
}

bool DestinationList::HostAllowed(std::string_view host) const {
  int family = 0;
  uint8_t bytes[16] = {};
  if (ParseAddress(host, &family, bytes)) return InBlock(family, bytes);
  std::string name = Lower(host);
  while (!name.empty() && name.back() == '.') name.pop_back();  // "example.com."
  for (const std::string &entry : names_) {
    if (entry.compare(0, 2, "*.") == 0) {
      std::string_view suffix(entry.c_str() + 1);  // ".example.com"
      if (name.size() > suffix.size() &&
          name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        return true;
      }
    } else if (entry == name) {
      return true;
    }
  }
  return false;
}

bool DestinationList::AddressAllowed(const struct sockaddr *address, bool host_listed) const {
  int family = address->sa_family;
  const uint8_t *bytes = nullptr;
  if (family == AF_INET) {
    bytes = reinterpret_cast<const uint8_t *>(
        &reinterpret_cast<const struct sockaddr_in *>(address)->sin_addr);
  } else if (family == AF_INET6) {
    bytes = reinterpret_cast<const uint8_t *>(
        &reinterpret_cast<const struct sockaddr_in6 *>(address)->sin6_addr);
  } else {
    return false;  // Unix sockets and anything else: never
  }
  if (InBlock(family, bytes)) return true;
  return host_listed && !IsSpecialAddress(family, bytes);
}

}  // namespace evproc::core

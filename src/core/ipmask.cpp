#include "core/ipmask.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace referral {
namespace {

// Zeroes every bit of `addr` (len bytes) past the first `bits`.
void keep_leading_bits(unsigned char* addr, std::size_t len, unsigned bits) noexcept {
    for (std::size_t i = 0; i < len; i++) {
        const unsigned start = static_cast<unsigned>(i) * 8;
        if (bits >= start + 8) continue;
        const unsigned keep = bits > start ? bits - start : 0;  // 0..7
        addr[i] &= static_cast<unsigned char>(0xff00u >> keep);
    }
}

std::size_t write(int family, const void* addr, char* out) noexcept {
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(family, addr, text, sizeof(text)) == nullptr) return 0;
    const std::size_t n = std::strlen(text);
    std::memcpy(out, text, n);
    return n;
}

}  // namespace

std::size_t mask_ip(std::string_view text, unsigned v4bits, unsigned v6bits,
                    char* out) noexcept {
    if (v4bits > kIpv4Bits || v6bits > kIpv6Bits) return 0;
    // inet_pton wants a C string; the longest address with a zone id is far
    // below this, anything longer is not an address.
    char buf[INET6_ADDRSTRLEN + 16];
    const std::size_t zone = text.find('%');
    if (zone != std::string_view::npos) {
        // Only an IPv6 address has a zone; it names an interface of this
        // host and is not kept.
        if (text.find(':') == std::string_view::npos) return 0;
        text = text.substr(0, zone);
    }
    if (text.empty() || text.size() >= sizeof(buf) ||
        text.find('\0') != std::string_view::npos) {
        return 0;
    }
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';

    unsigned char v4[4];
    if (inet_pton(AF_INET, buf, v4) == 1) {
        keep_leading_bits(v4, sizeof(v4), v4bits);
        return write(AF_INET, v4, out);
    }
    in6_addr v6;
    if (inet_pton(AF_INET6, buf, &v6) != 1) return 0;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
        std::memcpy(v4, v6.s6_addr + 12, sizeof(v4));
        keep_leading_bits(v4, sizeof(v4), v4bits);
        return write(AF_INET, v4, out);
    }
    keep_leading_bits(v6.s6_addr, sizeof(v6.s6_addr), v6bits);
    return write(AF_INET6, &v6, out);
}

}  // namespace referral

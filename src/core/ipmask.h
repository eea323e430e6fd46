// referral_ip_mask (SPEC "nginx directives"): the client address of an
// event keeps only its leading bits, written as the plain address with the
// other bits zero ("203.0.113.0", "2001:db8:abcd::"). Shared by the module
// and anything else that has to reduce an address the same way.
#pragma once
#include <cstddef>
#include <string_view>

namespace referral {

constexpr unsigned kIpv4Bits = 32;
constexpr unsigned kIpv6Bits = 128;
constexpr unsigned kDefaultIpv6MaskBits = 48;
// Room for the longest result, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
// and its NUL (INET6_ADDRSTRLEN).
constexpr std::size_t kMaskedIpMaxLen = 46;

// Masks `text`, an IPv4 or IPv6 address in text form (as nginx's addr_text,
// after realip), keeping `v4bits` (0..32) leading bits of an IPv4 address
// and `v6bits` (0..128) of an IPv6 one. An IPv4-mapped IPv6 address
// (::ffff:a.b.c.d) is masked as IPv4 and written as plain IPv4. A zone id
// ("fe80::1%eth0") is dropped. Writes the result into `out` (at least
// kMaskedIpMaxLen bytes, not NUL-terminated) and returns its length; returns
// 0 (an empty ip: never the unmasked text) when `text` is not an address or
// a bit count is out of range.
std::size_t mask_ip(std::string_view text, unsigned v4bits, unsigned v6bits,
                    char* out) noexcept;

}  // namespace referral

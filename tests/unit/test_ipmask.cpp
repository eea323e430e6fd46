// Unit tests for referral_ip_mask's masking (core/ipmask.h).
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

// cmocka 1.1 declares its functions without extern "C".
extern "C" {
#include <cmocka.h>
}

#include <arpa/inet.h>

#include <cstring>
#include <string>
#include <string_view>

#include "core/ipmask.h"

using referral::kMaskedIpMaxLen;
using referral::mask_ip;

namespace {

// The masked text, "" for "not an address"; checks the bound on the way.
std::string masked(std::string_view text, unsigned v4bits, unsigned v6bits) {
    char out[kMaskedIpMaxLen + 8];
    std::memset(out, '#', sizeof(out));
    std::size_t n = mask_ip(text, v4bits, v6bits, out);
    assert_true(n <= kMaskedIpMaxLen);
    for (std::size_t i = n; i < sizeof(out); i++) assert_int_equal(out[i], '#');
    return std::string(out, n);
}

void expect(std::string_view text, unsigned v4bits, unsigned v6bits, const char* want) {
    std::string got = masked(text, v4bits, v6bits);
    if (got != want) {
        fail_msg("mask_ip(\"%.*s\", %u, %u) = \"%s\", expected \"%s\"", static_cast<int>(text.size()),
                 text.data(), v4bits, v6bits, got.c_str(), want);
    }
}

void ipv4_at_0_8_24_32_bits(void**) {
    expect("203.0.113.7", 0, 48, "0.0.0.0");
    expect("203.0.113.7", 8, 48, "203.0.0.0");
    expect("203.0.113.7", 24, 48, "203.0.113.0");
    expect("203.0.113.7", 32, 48, "203.0.113.7");
    // a count that cuts inside a byte: 113 = 0111 0001, 20 bits keep 0111
    expect("203.0.113.7", 20, 48, "203.0.112.0");
    expect("203.0.113.255", 31, 48, "203.0.113.254");
    expect("127.0.0.1", 24, 0, "127.0.0.0");
}

void ipv4_is_not_touched_by_v6bits(void**) {
    expect("198.51.100.200", 24, 0, "198.51.100.0");
    expect("198.51.100.200", 24, 128, "198.51.100.0");
}

void ipv6_at_0_48_64_128_bits(void**) {
    const char* a = "2001:db8:abcd:1234:5678:9abc:def0:1234";
    expect(a, 24, 0, "::");
    expect(a, 24, 48, "2001:db8:abcd::");
    expect(a, 24, 64, "2001:db8:abcd:1234::");
    expect(a, 24, 128, "2001:db8:abcd:1234:5678:9abc:def0:1234");
    expect(a, 24, 52, "2001:db8:abcd:1000::");
    expect(a, 24, 127, "2001:db8:abcd:1234:5678:9abc:def0:1234");
    expect("2001:db8:abcd:1234:5678:9abc:def0:1235", 24, 127, "2001:db8:abcd:1234:5678:9abc:def0:1234");
    expect("::1", 24, 128, "::1");
    expect("::1", 24, 127, "::");
}

void ipv6_is_not_touched_by_v4bits(void**) {
    expect("2001:db8:abcd:1234::1", 0, 48, "2001:db8:abcd::");
    expect("2001:db8:abcd:1234::1", 32, 48, "2001:db8:abcd::");
}

void ipv6_is_written_in_canonical_form(void**) {
    // upper case, leading zeros, an uncompressed run: RFC 5952 text
    expect("2001:0DB8:ABCD:0000:0000:0000:0000:0001", 24, 128, "2001:db8:abcd::1");
    expect("2001:DB8:ABCD:FFFF::", 24, 48, "2001:db8:abcd::");
}

void ipv4_mapped_ipv6_is_masked_as_ipv4(void**) {
    expect("::ffff:203.0.113.7", 24, 48, "203.0.113.0");
    expect("::ffff:203.0.113.7", 32, 0, "203.0.113.7");
    expect("::ffff:203.0.113.7", 0, 128, "0.0.0.0");
    expect("::ffff:203.0.113.7", 8, 128, "203.0.0.0");
    // the same address in hex and in upper case
    expect("::FFFF:cb00:7107", 24, 48, "203.0.113.0");
    expect("0:0:0:0:0:ffff:cb00:7107", 24, 128, "203.0.113.0");
}

void other_ipv6_with_ipv4_inside_is_ipv6(void**) {
    // NAT64 and IPv4-compatible addresses are IPv6 addresses: V6BITS rules
    expect("64:ff9b::203.0.113.7", 24, 48, "64:ff9b::");
    expect("::ffff:0:203.0.113.7", 24, 48, "::");
}

void zone_ids_are_dropped(void**) {
    expect("fe80::1%eth0", 24, 128, "fe80::1");
    expect("fe80::1:2:3:4%eth0", 24, 64, "fe80::");
    expect("fe80::1%25eth0", 24, 48, "fe80::");
    // an IPv4 address has no zone
    expect("203.0.113.7%eth0", 24, 48, "");
    expect("%eth0", 24, 48, "");
}

void what_is_not_an_address_gives_an_empty_ip(void**) {
    const char* bad[] = {
        "", "unix:", "localhost", "not-an-ip", "203.0.113", "203.0.113.7.1", "256.1.1.1",
        " 203.0.113.7", "203.0.113.7 ", "[::1]", "::1::2", "2001:db8::g", "1.2.3.4:80",
        "2001:db8:abcd:1234:5678:9abc:def0:1234:1", "0x7f.0.0.1",
    };
    for (const char* b : bad) {
        expect(b, 24, 48, "");
        expect(b, 32, 128, "");  // not even with nothing masked
    }
    expect(std::string_view("203.0.113.7\0junk", 16), 24, 48, "");
    expect(std::string(200, '1'), 24, 48, "");
    expect(std::string(60, ':'), 24, 48, "");
}

void bit_counts_out_of_range_give_an_empty_ip(void**) {
    expect("203.0.113.7", 33, 48, "");
    expect("2001:db8::1", 24, 129, "");
    expect("203.0.113.7", 24, 129, "");
}

// Every count: all-ones keeps exactly `bits` leading one bits.
void every_count_keeps_exactly_its_leading_bits(void**) {
    for (unsigned bits = 0; bits <= 32; bits++) {
        std::string got = masked("255.255.255.255", bits, 48);
        in_addr a;
        assert_int_equal(inet_pton(AF_INET, got.c_str(), &a), 1);
        std::uint32_t want = bits == 0 ? 0 : 0xffffffffu << (32 - bits);
        assert_int_equal(ntohl(a.s_addr), want);
        // mapped: the same
        assert_string_equal(masked("::ffff:255.255.255.255", bits, 0).c_str(), got.c_str());
    }
    for (unsigned bits = 0; bits <= 128; bits++) {
        std::string got = masked("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 24, bits);
        in6_addr a;
        assert_int_equal(inet_pton(AF_INET6, got.c_str(), &a), 1);
        for (unsigned i = 0; i < 128; i++) {
            bool one = (a.s6_addr[i / 8] >> (7 - i % 8)) & 1;
            if (one != (i < bits)) fail_msg("%u bits: bit %u of %s", bits, i, got.c_str());
        }
    }
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ipv4_at_0_8_24_32_bits),
        cmocka_unit_test(ipv4_is_not_touched_by_v6bits),
        cmocka_unit_test(ipv6_at_0_48_64_128_bits),
        cmocka_unit_test(ipv6_is_not_touched_by_v4bits),
        cmocka_unit_test(ipv6_is_written_in_canonical_form),
        cmocka_unit_test(ipv4_mapped_ipv6_is_masked_as_ipv4),
        cmocka_unit_test(other_ipv6_with_ipv4_inside_is_ipv6),
        cmocka_unit_test(zone_ids_are_dropped),
        cmocka_unit_test(what_is_not_an_address_gives_an_empty_ip),
        cmocka_unit_test(bit_counts_out_of_range_give_an_empty_ip),
        cmocka_unit_test(every_count_keeps_exactly_its_leading_bits),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

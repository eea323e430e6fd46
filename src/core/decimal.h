// Unsigned decimal without printf or allocation, for the click path: the
// event encoder, the cookie and the journal each write several numbers per
// event, and snprintf's parsing and locale work cost more than the digits.
#pragma once
#include <cstddef>
#include <cstdint>

namespace referral {

constexpr std::size_t kMaxDecimalLen = 20;  // UINT64_MAX
constexpr std::size_t kMaxSignedDecimalLen = kMaxDecimalLen + 1;  // and a '-'

// Writes `u` so that it ends just before `end`, two digits per step (one
// division per pair), and returns where it starts.
inline char* decimal_before(std::uint64_t u, char* end) noexcept {
    static constexpr char kPairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    char* p = end;
    while (u >= 100) {
        const std::size_t i = static_cast<std::size_t>(u % 100) * 2;
        u /= 100;
        *--p = kPairs[i + 1];
        *--p = kPairs[i];
    }
    if (u >= 10) {
        *--p = kPairs[u * 2 + 1];
        *--p = kPairs[u * 2];
    } else {
        *--p = static_cast<char>('0' + u);
    }
    return p;
}

// How many digits write_decimal() gives for `u`.
inline std::size_t decimal_len(std::uint64_t u) noexcept {
    std::size_t n = 1;
    while (u >= 100) {
        u /= 100;
        n += 2;
    }
    return u >= 10 ? n + 1 : n;
}

// Writes `u` at `out` (room for kMaxDecimalLen bytes) and returns its length.
inline std::size_t write_decimal(std::uint64_t u, char* out) noexcept {
    const std::size_t n = decimal_len(u);
    decimal_before(u, out + n);
    return n;
}

}  // namespace referral

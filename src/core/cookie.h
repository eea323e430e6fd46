// The signed attribution cookie.
//
// Value (version 1):  1.<code>.<visitor>.<first_ts>.<mac>
//   code      a valid referral code (never contains '.')
//   visitor   32 lowercase hex characters
//   first_ts  attribution time, Unix milliseconds, decimal
//   mac       first 16 bytes of HMAC-SHA256(key, everything before ".<mac>"),
//             base64url without padding (22 characters)
// At most 136 bytes, well under the 200 the SPEC allows; every character is
// legal in a cookie value without quoting.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace referral {

constexpr std::size_t kCookieMaxLen = 200;
constexpr std::size_t kMinKeyLen = 32;

class HmacSha256;

struct Key {
    const unsigned char* data;
    std::size_t len;
    // Optional key schedule prepared once (see hmac.h); when null the MAC
    // is computed from data/len on each call.
    const HmacSha256* prepared = nullptr;
};

struct CookieClaims {
    std::string_view code;     // points into the verified value
    std::string_view visitor;  // points into the verified value
    std::int64_t first_ts_ms;
};

enum class CookieStatus {
    valid,
    malformed,    // wrong shape, length or characters
    bad_version,  // a version this build does not know
    bad_mac,      // no key verifies it (altered, or signed by a retired key)
    expired,      // older than the window, or dated in the future
};

const char* to_string(CookieStatus s) noexcept;

// Writes the signed value to out (capacity `cap`, at least kCookieMaxLen is
// always enough) and returns its length, or 0 when the inputs are invalid or
// the MAC cannot be computed.
std::size_t sign_cookie(std::string_view code, std::string_view visitor,
                        std::int64_t first_ts_ms, const Key& key, char* out,
                        std::size_t cap) noexcept;

// Checks shape first (length before anything is decoded), then the MAC
// against every key in constant time, then the window. On `valid`, the
// claims point into `value`.
CookieStatus verify_cookie(std::string_view value, const Key* keys,
                           std::size_t nkeys, std::int64_t now_ms,
                           std::int64_t window_ms, CookieClaims* out) noexcept;

}  // namespace referral

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

// Calls f(value) for each cookie called `name` in one Cookie header value
// ("a=1; b=2"), in order, until f returns true; returns whether it did. A
// browser sends several cookies of one name when they differ in Domain or
// Path, so a caller looking for a valid one should look at all of them.
template <typename F>
bool for_each_cookie(std::string_view header, std::string_view name, F&& f) {
    while (!header.empty()) {
        std::size_t semi = header.find(';');
        std::string_view pair = header.substr(0, semi);
        header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
        while (!pair.empty() && (pair.front() == ' ' || pair.front() == '\t')) pair.remove_prefix(1);
        std::size_t eq = pair.find('=');
        if (eq == std::string_view::npos || pair.substr(0, eq) != name) continue;
        std::string_view value = pair.substr(eq + 1);
        while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
        if (f(value)) return true;
    }
    return false;
}

}  // namespace referral

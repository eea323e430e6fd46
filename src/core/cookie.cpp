#include "core/cookie.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

#include "core/code.h"
#include "core/decimal.h"
#include "core/hmac.h"
#include "core/random.h"

namespace referral {
namespace {

constexpr std::size_t kMacBytes = 16;
constexpr std::size_t kMacChars = 22;  // base64url(16 bytes), no padding
constexpr std::size_t kMaxTsDigits = 15;
constexpr std::int64_t kMaxTs = 999999999999999;  // kMaxTsDigits nines
// A cookie dated this far in the future was not made by us (clock skew
// between workers is far below it).
constexpr std::int64_t kFutureSkewMs = 5 * 60 * 1000;

void base64url(const unsigned char* in, std::size_t n, char* out) noexcept {
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
        out[o++] = tbl[v & 63];
    }
    if (n - i == 1) {
        unsigned v = in[i] << 16;
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (in[i] << 16) | (in[i + 1] << 8);
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
    }
}

// Keys shorter than the SPEC's minimum (in particular empty ones) are never
// used: a cookie "signed" with an empty key is trivially forgeable.
bool usable(const Key& key) noexcept {
    return key.data != nullptr && key.len >= kMinKeyLen;
}

bool mac(const Key& key, std::string_view msg, char out[kMacChars]) noexcept {
    if (!usable(key)) return false;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (key.prepared != nullptr) {
        if (!key.prepared->mac(msg, digest)) return false;
        base64url(digest, kMacBytes, out);
        OPENSSL_cleanse(digest, sizeof(digest));
        return true;
    }
    if (HMAC(EVP_sha256(), key.data, static_cast<int>(key.len),
             reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
             digest, &len) == nullptr ||
        len < kMacBytes) {
        return false;
    }
    base64url(digest, kMacBytes, out);
    OPENSSL_cleanse(digest, sizeof(digest));
    return true;
}

bool parse_ts(std::string_view s, std::int64_t* out) noexcept {
    if (s.empty() || s.size() > kMaxTsDigits) return false;
    if (s.size() > 1 && s[0] == '0') return false;  // one spelling per value
    std::int64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return true;
}

}  // namespace

const char* to_string(CookieStatus s) noexcept {
    switch (s) {
        case CookieStatus::valid: return "valid";
        case CookieStatus::malformed: return "malformed";
        case CookieStatus::bad_version: return "unknown version";
        case CookieStatus::bad_mac: return "bad signature";
        case CookieStatus::expired: return "expired";
    }
    return "unknown";
}

std::size_t sign_cookie(std::string_view code, std::string_view visitor,
                        std::int64_t first_ts_ms, const Key& key, char* out,
                        std::size_t cap) noexcept {
    // A time of more than kMaxTsDigits digits would give a cookie that
    // verify_cookie refuses as malformed: refuse it here instead.
    if (!is_valid_code(code) || !is_id(visitor) || first_ts_ms < 0 ||
        first_ts_ms > kMaxTs || !usable(key)) {
        return 0;
    }
    char ts[kMaxDecimalLen];
    const std::size_t tslen = write_decimal(static_cast<std::uint64_t>(first_ts_ms), ts);
    std::size_t body = 2 + code.size() + 1 + visitor.size() + 1 + tslen;
    std::size_t total = body + 1 + kMacChars;
    if (total > cap || total > kCookieMaxLen) return 0;
    char* p = out;
    *p++ = '1';
    *p++ = '.';
    std::memcpy(p, code.data(), code.size());
    p += code.size();
    *p++ = '.';
    std::memcpy(p, visitor.data(), visitor.size());
    p += visitor.size();
    *p++ = '.';
    std::memcpy(p, ts, tslen);
    p += tslen;
    *p++ = '.';
    if (!mac(key, std::string_view(out, body), p)) return 0;
    return total;
}

CookieStatus verify_cookie(std::string_view value, const Key* keys,
                           std::size_t nkeys, std::int64_t now_ms,
                           std::int64_t window_ms, CookieClaims* out) noexcept {
    if (value.size() < 4 || value.size() > kCookieMaxLen) {
        return CookieStatus::malformed;
    }
    std::size_t dot = value.find('.');
    if (dot == std::string_view::npos) return CookieStatus::malformed;
    std::string_view version = value.substr(0, dot);
    if (version != "1") {
        // Only something shaped like a version is an unknown version;
        // anything else is garbage.
        if (version.empty() || version.size() > 3) return CookieStatus::malformed;
        for (char c : version) {
            if (c < '0' || c > '9') return CookieStatus::malformed;
        }
        return CookieStatus::bad_version;
    }

    // Split the rest into exactly four fields.
    std::string_view fields[4];
    std::size_t start = dot + 1;
    for (int i = 0; i < 4; i++) {
        std::size_t end = (i < 3) ? value.find('.', start) : value.size();
        if (end == std::string_view::npos) return CookieStatus::malformed;
        fields[i] = value.substr(start, end - start);
        start = end + 1;
    }
    if (fields[3].find('.') != std::string_view::npos) {
        return CookieStatus::malformed;
    }
    std::int64_t ts = 0;
    if (!is_valid_code(fields[0]) || !is_id(fields[1]) ||
        !parse_ts(fields[2], &ts) || fields[3].size() != kMacChars) {
        return CookieStatus::malformed;
    }

    std::string_view body = value.substr(0, value.size() - kMacChars - 1);
    bool verified = false;
    for (std::size_t i = 0; i < nkeys; i++) {
        char expect[kMacChars];
        if (!mac(keys[i], body, expect)) continue;
        // Every key is tried even after a match so timing says nothing
        // about which key signed.
        if (CRYPTO_memcmp(expect, fields[3].data(), kMacChars) == 0) {
            verified = true;
        }
    }
    if (!verified) return CookieStatus::bad_mac;
    // 0 <= ts <= kMaxTs, so neither expression can overflow whatever the
    // caller's clock says (now_ms + kFutureSkewMs could).
    if (now_ms < ts - kFutureSkewMs || now_ms - ts >= window_ms) {
        return CookieStatus::expired;
    }
    if (out != nullptr) {
        out->code = fields[0];
        out->visitor = fields[1];
        out->first_ts_ms = ts;
    }
    return CookieStatus::valid;
}

}  // namespace referral

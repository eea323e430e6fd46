#include "core/random.h"

#include <openssl/rand.h>

#include <stdexcept>

namespace referral {

void hex_lower(const unsigned char* in, std::size_t n, char* out) noexcept {
    static const char digits[] = "0123456789abcdef";
    for (std::size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
}

bool random_id(char out[kIdLen]) noexcept {
    unsigned char raw[kIdLen / 2];
    if (RAND_bytes(raw, sizeof(raw)) != 1) return false;
    hex_lower(raw, sizeof(raw), out);
    return true;
}

bool is_id(std::string_view s) noexcept {
    if (s.size() != kIdLen) return false;
    for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

std::string random_code(std::size_t len) {
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    constexpr unsigned kAlphabet = sizeof(alphabet) - 1;  // 62
    // 248 = 4 * 62: bytes at or above it are rejected so every character is
    // equally likely.
    constexpr unsigned kLimit = 256 - 256 % kAlphabet;
    std::string code;
    code.reserve(len);
    unsigned char buf[64];
    while (code.size() < len) {
        if (RAND_bytes(buf, sizeof(buf)) != 1) {
            throw std::runtime_error("OpenSSL RAND_bytes failed");
        }
        for (unsigned char b : buf) {
            if (b >= kLimit) continue;
            code.push_back(alphabet[b % kAlphabet]);
            if (code.size() == len) break;
        }
    }
    return code;
}

}  // namespace referral

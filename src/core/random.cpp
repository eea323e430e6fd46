#include "core/random.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <cstring>
#include <stdexcept>

namespace referral {
namespace {

// Random bytes are drawn from OpenSSL's CSPRNG 4 KB at a time: a RAND_bytes
// call costs far more than the 16 bytes an id needs. Each process (nginx
// forks its workers) and each thread has its own pool; a fork empties the
// child's, so no two processes ever hand out the same bytes.
struct RandomPool {
    unsigned char buf[4096];
    std::size_t pos = sizeof(buf);
};

thread_local RandomPool pool;
pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

void empty_pool_in_child() { pool.pos = sizeof(pool.buf); }
void register_atfork() { pthread_atfork(nullptr, nullptr, empty_pool_in_child); }

bool draw(unsigned char* out, std::size_t n) noexcept {
    pthread_once(&atfork_once, register_atfork);
    if (n > sizeof(pool.buf)) return RAND_bytes(out, static_cast<int>(n)) == 1;
    if (sizeof(pool.buf) - pool.pos < n) {
        if (RAND_bytes(pool.buf, sizeof(pool.buf)) != 1) return false;
        pool.pos = 0;
    }
    std::memcpy(out, pool.buf + pool.pos, n);
    OPENSSL_cleanse(pool.buf + pool.pos, n);  // handed out once only
    pool.pos += n;
    return true;
}

}  // namespace

void hex_lower(const unsigned char* in, std::size_t n, char* out) noexcept {
    static const char digits[] = "0123456789abcdef";
    for (std::size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
}

bool random_id(char out[kIdLen]) noexcept {
    unsigned char raw[kIdLen / 2];
    if (!draw(raw, sizeof(raw))) return false;
    hex_lower(raw, sizeof(raw), out);
    return true;
}

bool time_ordered_id(std::int64_t unix_ms, char out[kIdLen]) noexcept {
    unsigned char raw[kIdLen / 2];
    std::uint64_t t = static_cast<std::uint64_t>(unix_ms) & 0xffffffffffffULL;
    for (int i = 5; i >= 0; i--) {
        raw[i] = static_cast<unsigned char>(t & 0xff);
        t >>= 8;
    }
    if (!draw(raw + 6, sizeof(raw) - 6)) return false;
    hex_lower(raw, sizeof(raw), out);
    return true;
}

bool is_id(std::string_view s) noexcept {
    if (s.size() != kIdLen) return false;
    // No branch per character: in a random id, digit or letter is a coin
    // toss, and a branch on it mispredicts about once every other byte,
    // which cost more than the rest of the check on every click.
    unsigned bad = 0;
    for (char c : s) {
        const unsigned u = static_cast<unsigned char>(c);
        bad |= static_cast<unsigned>(u - '0' > 9u) & static_cast<unsigned>(u - 'a' > 5u);
    }
    return bad == 0;
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
        if (!draw(buf, sizeof(buf))) {
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

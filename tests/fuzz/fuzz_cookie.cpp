// libFuzzer target: verify_cookie on arbitrary values with two keys. It must
// never read out of bounds; when it says `valid`, the claims obey the rules
// and re-signing them with the key that verified yields the same value.
//
// The first input byte picks the mode:
//   even  the rest is a cookie value as a client would send it;
//   odd   the rest is mutated claims that are signed with key A or B first,
//         so the fuzzer reaches the MAC and window checks and the every-byte
//         tamper check as well.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "core/code.h"
#include "core/cookie.h"
#include "core/random.h"

namespace {

const unsigned char kA[] = "fuzz-key-A-0123456789abcdef0123456789";
const unsigned char kB[] = "fuzz-key-B-abcdefghijklmnopqrstuvwxyz";
const referral::Key kKeys[2] = {{kA, sizeof(kA) - 1}, {kB, sizeof(kB) - 1}};
constexpr std::int64_t kNow = 1700000000000;
constexpr std::int64_t kWindow = 30LL * 24 * 3600 * 1000;

[[noreturn]] void die() { std::abort(); }

// Verifies `v` against both keys; on valid checks the claims and the
// re-signing property. Returns the status.
referral::CookieStatus check(std::string_view v, std::int64_t now, std::int64_t window) {
    // Exact-size heap copy so ASan catches any overread.
    std::unique_ptr<char[]> buf(new char[v.size() ? v.size() : 1]);
    if (!v.empty()) std::memcpy(buf.get(), v.data(), v.size());
    std::string_view value(buf.get(), v.size());

    referral::CookieClaims c{};
    referral::CookieStatus s = referral::verify_cookie(value, kKeys, 2, now, window, &c);
    if (s != referral::CookieStatus::valid) return s;

    if (value.size() > referral::kCookieMaxLen) die();
    if (!referral::is_valid_code(c.code) || !referral::is_id(c.visitor)) die();
    if (c.first_ts_ms < 0 || now - c.first_ts_ms >= window) die();
    if (c.code.data() < value.data() ||
        c.code.data() + c.code.size() > value.data() + value.size()) die();
    if (c.visitor.data() < value.data() ||
        c.visitor.data() + c.visitor.size() > value.data() + value.size()) die();

    // Which key verifies on its own?
    int which = -1;
    for (int k = 0; k < 2; k++) {
        if (referral::verify_cookie(value, &kKeys[k], 1, now, window, nullptr) ==
            referral::CookieStatus::valid) {
            which = k;
            break;
        }
    }
    if (which < 0) die();
    char out[referral::kCookieMaxLen];
    std::size_t n = referral::sign_cookie(c.code, c.visitor, c.first_ts_ms, kKeys[which],
                                          out, sizeof(out));
    if (n == 0 || std::string_view(out, n) != value) die();
    return s;
}

std::int64_t read_i64(const std::uint8_t*& p, const std::uint8_t* end) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8 && p < end; i++) v = (v << 8) | *p++;
    return static_cast<std::int64_t>(v);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        check(std::string_view(), kNow, kWindow);
        return 0;
    }
    const std::uint8_t* p = data + 1;
    const std::uint8_t* end = data + size;
    if ((data[0] & 1) == 0) {
        std::string_view v(reinterpret_cast<const char*>(p), size - 1);
        check(v, kNow, kWindow);
        // Also under an arbitrary clock and window (overflow-prone edges).
        if (size > 17) {
            const std::uint8_t* q = p;
            std::int64_t now = read_i64(q, end);
            std::int64_t window = read_i64(q, end);
            check(v, now, window);
        }
        return 0;
    }

    // Mode "signed": [key bit][ts 8 bytes][visitor 16 bytes][code...]
    int key = (data[0] >> 1) & 1;
    std::int64_t ts = read_i64(p, end);
    if (data[0] & 4) {
        // Around now: from ~100 days ago to 10 minutes ahead, so the window
        // edges and the future-skew edge are both reached.
        ts = kNow + 600000 - static_cast<std::int64_t>(static_cast<std::uint64_t>(ts) & 0x1ffffffffULL);
    }
    unsigned char raw[16] = {0};
    for (int i = 0; i < 16 && p < end; i++) raw[i] = *p++;
    char visitor[referral::kIdLen];
    referral::hex_lower(raw, 16, visitor);
    std::string code(reinterpret_cast<const char*>(p), static_cast<std::size_t>(end - p));

    char out[referral::kCookieMaxLen];
    std::size_t n = referral::sign_cookie(code, std::string_view(visitor, sizeof(visitor)),
                                          ts, kKeys[key], out, sizeof(out));
    bool should_sign = referral::is_valid_code(code) && ts >= 0 && ts <= 999999999999999;
    if ((n != 0) != should_sign) die();
    if (n == 0) return 0;
    if (n > referral::kCookieMaxLen) die();

    std::string value(out, n);
    referral::CookieStatus s = check(value, kNow, kWindow);
    bool in_window = ts <= kNow + 5 * 60 * 1000 && kNow - ts < kWindow;
    if ((s == referral::CookieStatus::valid) != in_window) die();
    if (!in_window && s != referral::CookieStatus::expired) die();
    if (in_window) {
        // With a window reaching back to 1970 and a clock at the cookie's
        // own time, every freshly signed cookie is valid, with either key
        // order (rotation).
        referral::CookieClaims c{};
        referral::Key rev[2] = {kKeys[1], kKeys[0]};
        if (referral::verify_cookie(value, rev, 2, kNow, kWindow, &c) !=
            referral::CookieStatus::valid) die();
        if (c.code != code || c.first_ts_ms != ts) die();
        // Only the other key: bad signature.
        if (referral::verify_cookie(value, &kKeys[1 - key], 1, kNow, kWindow, &c) !=
            referral::CookieStatus::bad_mac) die();
        // Any single byte changed: never valid.
        std::size_t pos = static_cast<std::size_t>(ts & 0x7fffffff) % value.size();
        for (unsigned char r : {'0', 'A', '.', '_', 'f', '\0'}) {
            if (static_cast<unsigned char>(value[pos]) == r) continue;
            std::string t = value;
            t[pos] = static_cast<char>(r);
            if (check(t, kNow, kWindow) == referral::CookieStatus::valid) die();
        }
    }
    return 0;
}

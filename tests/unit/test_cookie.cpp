// Unit tests for the signed attribution cookie (core/cookie.h).
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

// cmocka 1.1 declares its functions without extern "C".
extern "C" {
#include <cmocka.h>
}

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>
#include <string>
#include <vector>
#include <string_view>

#include "core/code.h"
#include "core/cookie.h"
#include "core/hmac.h"

using referral::CookieClaims;
using referral::CookieStatus;
using referral::Key;
using referral::sign_cookie;
using referral::verify_cookie;

namespace {

const unsigned char kKeyA[] = "0123456789abcdef0123456789abcdef-key-A";
const unsigned char kKeyB[] = "fedcba9876543210fedcba9876543210-key-B";
const Key A{kKeyA, sizeof(kKeyA) - 1};
const Key B{kKeyB, sizeof(kKeyB) - 1};

const char* kVisitor = "0123456789abcdef0123456789abcdef";
constexpr std::int64_t kNow = 1700000000000;         // Nov 2023, ms
constexpr std::int64_t kDay = 24LL * 3600 * 1000;
constexpr std::int64_t kWindow = 30 * kDay;

std::string sign(std::string_view code, std::string_view visitor,
                 std::int64_t ts, const Key& key) {
    char buf[referral::kCookieMaxLen];
    std::size_t n = sign_cookie(code, visitor, ts, key, buf, sizeof(buf));
    return std::string(buf, n);
}

CookieStatus verify(std::string_view v, std::initializer_list<Key> keys,
                    CookieClaims* out = nullptr, std::int64_t now = kNow,
                    std::int64_t window = kWindow) {
    return verify_cookie(v, keys.begin(), keys.size(), now, window, out);
}

// An independent implementation of the documented format, used to forge
// cookies with keys that sign_cookie refuses.
std::string forge(std::string_view body, const unsigned char* key, std::size_t keylen) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    static const unsigned char dummy = 0;
    HMAC(EVP_sha256(), keylen ? key : &dummy, static_cast<int>(keylen),
         reinterpret_cast<const unsigned char*>(body.data()), body.size(), d, &dl);
    static const char t[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string mac;
    std::uint32_t acc = 0;
    int bits = 0;
    for (int i = 0; i < 16; i++) {
        acc = (acc << 8) | d[i];
        bits += 8;
        while (bits >= 6) {
            mac.push_back(t[(acc >> (bits - 6)) & 63]);
            bits -= 6;
        }
    }
    if (bits > 0) mac.push_back(t[(acc << (6 - bits)) & 63]);
    return std::string(body) + "." + mac;
}

bool cookie_safe(unsigned char c) {
    // RFC 6265 cookie-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
    return c == 0x21 || (c >= 0x23 && c <= 0x2b) || (c >= 0x2d && c <= 0x3a) ||
           (c >= 0x3c && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
}

void test_round_trip(void**) {
    const char* codes[] = {"abcd", "alice-2024_X", "Z_-9",
                           "0123456789012345678901234567890123456789012345678901234567890123"};
    for (const char* code : codes) {
        for (std::int64_t ts : {std::int64_t{0}, kNow - kWindow + 1, kNow - kDay, kNow}) {
            // ts 0 is only valid for a window that reaches back to 1970.
            std::int64_t window = ts == 0 ? kNow + 1 : kWindow;
            std::string v = sign(code, kVisitor, ts, A);
            assert_true(v.size() > 0);
            CookieClaims c{};
            assert_int_equal(verify(v, {A}, &c, kNow, window), CookieStatus::valid);
            assert_true(c.code == code);
            assert_true(c.visitor == kVisitor);
            assert_int_equal(c.first_ts_ms, ts);
            // The claims point into the verified value.
            assert_true(c.code.data() >= v.data() && c.code.data() < v.data() + v.size());
            assert_true(c.visitor.data() >= v.data() &&
                        c.visitor.data() + c.visitor.size() <= v.data() + v.size());
        }
    }
    // Signing is deterministic; different inputs give different values.
    assert_true(sign("abcd", kVisitor, kNow, A) == sign("abcd", kVisitor, kNow, A));
    assert_true(sign("abcd", kVisitor, kNow, A) != sign("abce", kVisitor, kNow, A));
    assert_true(sign("abcd", kVisitor, kNow, A) != sign("abcd", kVisitor, kNow + 1, A));
    assert_true(sign("abcd", kVisitor, kNow, A) != sign("abcd", kVisitor, kNow, B));
    // Null `out` is allowed.
    assert_int_equal(verify(sign("abcd", kVisitor, kNow, A), {A}, nullptr), CookieStatus::valid);
}

void test_format(void**) {
    std::string v = sign("abcd", kVisitor, kNow, A);
    std::string prefix = std::string("1.abcd.") + kVisitor + ".1700000000000.";
    assert_int_equal(v.size(), prefix.size() + 22);
    assert_memory_equal(v.data(), prefix.data(), prefix.size());
}

void test_every_byte_altered(void**) {
    const std::string v = sign("ref-Code_42", kVisitor, kNow - kDay, A);
    assert_int_equal(verify(v, {A}), CookieStatus::valid);
    const unsigned char repl[] = {'0', '1', 'a', 'A', 'z', 'Z', '-', '_', '.',
                                  'f', 'g', '9', ' ', '\0', 0x80, 0xff, '"'};
    std::size_t tried = 0;
    for (std::size_t i = 0; i < v.size(); i++) {
        for (unsigned char r : repl) {
            if (static_cast<unsigned char>(v[i]) == r) continue;
            std::string t = v;
            t[i] = static_cast<char>(r);
            CookieClaims c{};
            CookieStatus s = verify(t, {A, B}, &c);
            if (s == CookieStatus::valid) {
                fail_msg("byte %zu changed to 0x%02x still verifies: %s", i, r, t.c_str());
            }
            tried++;
        }
        // Flip each bit too.
        for (int bit = 0; bit < 8; bit++) {
            std::string t = v;
            t[i] = static_cast<char>(t[i] ^ (1 << bit));
            if (verify(t, {A, B}) == CookieStatus::valid) {
                fail_msg("byte %zu bit %d flipped still verifies", i, bit);
            }
            tried++;
        }
    }
    assert_true(tried > v.size() * 20);
    // A change inside the MAC is a signature failure, not a shape one.
    std::string t = v;
    t[v.size() - 5] = t[v.size() - 5] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(t, {A}), CookieStatus::bad_mac);
    // So is a change in the signed body that keeps the shape.
    t = v;
    t[3] = t[3] == 'x' ? 'y' : 'x';
    assert_int_equal(verify(t, {A}), CookieStatus::bad_mac);
}

void test_truncated_and_extended(void**) {
    const std::string v = sign("abcdef", kVisitor, kNow, A);
    for (std::size_t n = 0; n < v.size(); n++) {
        CookieStatus s = verify(v.substr(0, n), {A});
        if (s == CookieStatus::valid) fail_msg("prefix of length %zu verifies", n);
    }
    for (std::size_t n = 1; n < v.size(); n++) {
        if (verify(v.substr(n), {A}) == CookieStatus::valid) {
            fail_msg("suffix from %zu verifies", n);
        }
    }
    const char* tails[] = {"A", "=", "==", ".", ".x", " ", "\r\n", ";"};
    for (const char* tail : tails) {
        assert_int_not_equal(verify(v + tail, {A}), CookieStatus::valid);
        assert_int_not_equal(verify(tail + v, {A}), CookieStatus::valid);
    }
    assert_int_equal(verify(std::string_view(v.data(), v.size() + 0) , {A}), CookieStatus::valid);
    std::string with_nul = v;
    with_nul.push_back('\0');
    assert_int_not_equal(verify(with_nul, {A}), CookieStatus::valid);
    // Over the 200-byte limit: malformed before anything else.
    assert_int_equal(verify(v + std::string(201, 'A'), {A}), CookieStatus::malformed);
    assert_int_equal(verify(std::string(201, '1'), {A}), CookieStatus::malformed);
    assert_int_equal(verify(std::string(100000, '.'), {A}), CookieStatus::malformed);
    assert_int_equal(verify("", {A}), CookieStatus::malformed);
    // Missing or extra fields.
    std::string prefix = std::string("1.abcd.") + kVisitor + ".";
    assert_int_equal(verify(prefix + "1700000000000", {A}), CookieStatus::malformed);
    assert_int_equal(verify(prefix + "17.00000000000.AAAAAAAAAAAAAAAAAAAAAA", {A}),
                     CookieStatus::malformed);
    assert_int_equal(verify(prefix + "1700000000000.AAAAAAAAAAAAAAAAAAAAA", {A}),
                     CookieStatus::malformed);  // 21-char mac
    assert_int_equal(verify(prefix + "1700000000000.AAAAAAAAAAAAAAAAAAAAAAA", {A}),
                     CookieStatus::malformed);  // 23-char mac
    assert_int_equal(verify(prefix + "01700000000000.AAAAAAAAAAAAAAAAAAAAAA", {A}),
                     CookieStatus::malformed);  // leading zero
    assert_int_equal(verify(prefix + "-1.AAAAAAAAAAAAAAAAAAAAAA", {A}),
                     CookieStatus::malformed);
    assert_int_equal(verify(prefix + "1234567890123456.AAAAAAAAAAAAAAAAAAAAAA", {A}),
                     CookieStatus::malformed);  // 16 digits
    assert_int_equal(verify(std::string("1.abc.") + kVisitor + ".1.AAAAAAAAAAAAAAAAAAAAAA", {A}),
                     CookieStatus::malformed);  // 3-char code
    assert_int_equal(verify(std::string("1.abcd.") + "0123456789ABCDEF0123456789abcdef" +
                                ".1.AAAAAAAAAAAAAAAAAAAAAA", {A}),
                     CookieStatus::malformed);  // upper-case visitor
}

void test_bad_version(void**) {
    std::string v = sign("abcd", kVisitor, kNow, A);
    std::string v2 = v;
    v2[0] = '2';
    assert_int_equal(verify(v2, {A}), CookieStatus::bad_version);
    assert_int_equal(verify("2." + v.substr(2), {A}), CookieStatus::bad_version);
    assert_int_equal(verify("0." + v.substr(2), {A}), CookieStatus::bad_version);
    assert_int_equal(verify("10." + v.substr(2), {A}), CookieStatus::bad_version);
    assert_int_equal(verify("2.anything-at-all", {A}), CookieStatus::bad_version);
    // Not a version at all: malformed.
    assert_int_equal(verify("hello", {A}), CookieStatus::malformed);
    assert_int_equal(verify("x." + v.substr(2), {A}), CookieStatus::malformed);
    assert_int_equal(verify("." + v.substr(2), {A}), CookieStatus::malformed);
    assert_int_equal(verify("1234." + v.substr(2), {A}), CookieStatus::malformed);
    assert_int_equal(verify("v1." + v.substr(2), {A}), CookieStatus::malformed);
    assert_int_not_equal(verify("1" + v, {A}), CookieStatus::valid);
}

void test_expired(void**) {
    CookieClaims c{};
    // Exactly at the window edge: expired (now - first_ts >= window).
    std::string edge = sign("abcd", kVisitor, kNow - kWindow, A);
    assert_int_equal(verify(edge, {A}, &c), CookieStatus::expired);
    std::string inside = sign("abcd", kVisitor, kNow - kWindow + 1, A);
    assert_int_equal(verify(inside, {A}, &c), CookieStatus::valid);
    std::string old = sign("abcd", kVisitor, kNow - 365 * kDay, A);
    assert_int_equal(verify(old, {A}), CookieStatus::expired);
    std::string ancient = sign("abcd", kVisitor, 0, A);
    assert_int_equal(verify(ancient, {A}), CookieStatus::expired);
    // The same cookie, later in time.
    assert_int_equal(verify(inside, {A}, &c, kNow + 1), CookieStatus::expired);
    // Window 0 or negative: nothing is ever within it.
    std::string fresh = sign("abcd", kVisitor, kNow, A);
    assert_int_equal(verify(fresh, {A}, &c, kNow, 0), CookieStatus::expired);
    assert_int_equal(verify(fresh, {A}, &c, kNow, -1), CookieStatus::expired);
    assert_int_equal(verify(fresh, {A}, &c, kNow, 1), CookieStatus::valid);
}

void test_future(void**) {
    CookieClaims c{};
    // A little clock skew between workers is tolerated ...
    std::string skew = sign("abcd", kVisitor, kNow + 1000, A);
    assert_int_equal(verify(skew, {A}, &c), CookieStatus::valid);
    // ... a cookie dated far in the future is not.
    std::string hour = sign("abcd", kVisitor, kNow + 3600 * 1000, A);
    assert_int_equal(verify(hour, {A}), CookieStatus::expired);
    std::string far = sign("abcd", kVisitor, kNow + 365 * kDay, A);
    assert_int_equal(verify(far, {A}), CookieStatus::expired);
    std::string max = sign("abcd", kVisitor, 999999999999999, A);
    assert_true(max.size() > 0);
    assert_int_equal(verify(max, {A}), CookieStatus::expired);
    // Extreme clocks must not overflow (UBSan would trap) nor validate.
    assert_int_equal(verify(max, {A}, &c, INT64_MAX, kWindow), CookieStatus::expired);
    assert_int_equal(verify(skew, {A}, &c, INT64_MIN, kWindow), CookieStatus::expired);
    assert_int_equal(verify(skew, {A}, &c, INT64_MIN, INT64_MAX), CookieStatus::expired);
    assert_int_equal(verify(skew, {A}, &c, INT64_MAX, INT64_MAX), CookieStatus::valid);
}

void test_key_rotation(void**) {
    std::string v = sign("rotate", kVisitor, kNow, A);
    CookieClaims c{};
    assert_int_equal(verify(v, {B, A}, &c), CookieStatus::valid);
    assert_true(c.code == "rotate");
    assert_int_equal(verify(v, {A, B}, &c), CookieStatus::valid);
    assert_int_equal(verify(v, {B}, &c), CookieStatus::bad_mac);
    assert_int_equal(verify(v, {B, B}, &c), CookieStatus::bad_mac);
    assert_int_equal(verify_cookie(v, nullptr, 0, kNow, kWindow, &c), CookieStatus::bad_mac);
    // A key that merely shares a prefix with A does not verify.
    const Key a_prefix{kKeyA, sizeof(kKeyA) - 2};
    assert_int_equal(verify(v, {a_prefix}), CookieStatus::bad_mac);
    // The test's own implementation of the format agrees with sign_cookie.
    std::string body = std::string("1.rotate.") + kVisitor + ".1700000000000";
    assert_true(forge(body, A.data, A.len) == v);
    // An empty key, or one shorter than kMinKeyLen, never verifies anything,
    // even a cookie an attacker signed with exactly that key.
    const Key empty{kKeyA, 0};
    assert_int_equal(verify(v, {empty}), CookieStatus::bad_mac);
    assert_int_equal(verify(forge(body, kKeyA, 0), {empty}), CookieStatus::bad_mac);
    assert_int_equal(verify(forge(body, kKeyA, 0), {empty, A}), CookieStatus::bad_mac);
    const Key short_key{kKeyA, referral::kMinKeyLen - 1};
    assert_int_equal(verify(forge(body, kKeyA, referral::kMinKeyLen - 1), {short_key}),
                     CookieStatus::bad_mac);
    const Key min_key{kKeyA, referral::kMinKeyLen};
    assert_int_equal(verify(forge(body, kKeyA, referral::kMinKeyLen), {min_key}),
                     CookieStatus::valid);
    // A bad_mac result leaves `out` untouched.
    CookieClaims untouched{"x", "y", 7};
    assert_int_equal(verify(v, {B}, &untouched), CookieStatus::bad_mac);
    assert_true(untouched.code == "x");
    assert_int_equal(untouched.first_ts_ms, 7);
}

void test_length_and_charset(void**) {
    std::string code64(64, 'Z');
    std::string v = sign(code64, kVisitor, 999999999999999, A);
    assert_true(v.size() > 0);
    assert_true(v.size() <= 200);
    assert_true(v.size() <= referral::kCookieMaxLen);
    for (int i = 0; i < 500; i++) {
        // Every character class that can appear in a code.
        std::string code = "aZ9_-" + std::to_string(i);
        std::string s = sign(code, kVisitor, kNow - i, i % 2 ? A : B);
        assert_true(s.size() > 0 && s.size() <= 200);
        for (unsigned char ch : s) {
            if (!cookie_safe(ch)) fail_msg("0x%02x is not a cookie-octet", ch);
            // Also nothing that a cookie header or attribute parser would split on.
            assert_true(ch != ';' && ch != ',' && ch != ' ' && ch != '"' && ch != '=');
        }
    }
}

void test_sign_refuses(void**) {
    char buf[256];
    std::memset(buf, 0, sizeof(buf));
    auto s = [&](std::string_view code, std::string_view visitor, std::int64_t ts,
                 const Key& k, std::size_t cap = 256) {
        return sign_cookie(code, visitor, ts, k, buf, cap);
    };
    assert_int_equal(s("abc", kVisitor, kNow, A), 0);
    assert_int_equal(s(std::string(65, 'a'), kVisitor, kNow, A), 0);
    assert_int_equal(s("ab.cd", kVisitor, kNow, A), 0);
    assert_int_equal(s("ab cd", kVisitor, kNow, A), 0);
    assert_int_equal(s("ab\ncd", kVisitor, kNow, A), 0);
    assert_int_equal(s(std::string_view("ab\0cd", 5), kVisitor, kNow, A), 0);
    assert_int_equal(s("", kVisitor, kNow, A), 0);
    assert_int_equal(s("abcd", "", kNow, A), 0);
    assert_int_equal(s("abcd", "0123456789abcdef0123456789abcde", kNow, A), 0);
    assert_int_equal(s("abcd", "0123456789abcdef0123456789abcdef0", kNow, A), 0);
    assert_int_equal(s("abcd", "0123456789ABCDEF0123456789abcdef", kNow, A), 0);
    assert_int_equal(s("abcd", "0123456789abcdef.123456789abcdef", kNow, A), 0);
    assert_int_equal(s("abcd", kVisitor, -1, A), 0);
    assert_int_equal(s("abcd", kVisitor, INT64_MIN, A), 0);
    // A time that verify could never parse back (16+ digits) is refused too.
    assert_int_equal(s("abcd", kVisitor, 1000000000000000, A), 0);
    assert_int_equal(s("abcd", kVisitor, INT64_MAX, A), 0);
    assert_int_equal(s("abcd", kVisitor, kNow, Key{kKeyA, 0}), 0);
    assert_int_equal(s("abcd", kVisitor, kNow, Key{kKeyA, referral::kMinKeyLen - 1}), 0);
    assert_true(s("abcd", kVisitor, kNow, Key{kKeyA, referral::kMinKeyLen}) > 0);
    // Too small a buffer: refused, nothing written past cap.
    std::string ok = sign("abcd", kVisitor, kNow, A);
    std::memset(buf, '#', sizeof(buf));
    assert_int_equal(s("abcd", kVisitor, kNow, A, ok.size() - 1), 0);
    assert_int_equal(buf[ok.size() - 1], '#');
    assert_int_equal(s("abcd", kVisitor, kNow, A, ok.size()), ok.size());
    assert_memory_equal(buf, ok.data(), ok.size());
    assert_int_equal(buf[ok.size()], '#');
}

void test_to_string(void**) {
    assert_string_equal(referral::to_string(CookieStatus::valid), "valid");
    assert_string_equal(referral::to_string(CookieStatus::malformed), "malformed");
    assert_string_equal(referral::to_string(CookieStatus::expired), "expired");
    assert_true(std::strlen(referral::to_string(CookieStatus::bad_version)) > 0);
    assert_true(std::strlen(referral::to_string(CookieStatus::bad_mac)) > 0);
    assert_string_not_equal(referral::to_string(CookieStatus::bad_mac),
                            referral::to_string(CookieStatus::bad_version));
}

}  // namespace

// The prepared key schedule (what the module uses) must give exactly the
// MAC of the one-shot path, for short and for long (hashed) keys.
void test_prepared_key_matches_one_shot(void**) {
    std::string long_key(100, 'z');
    const Key raw_long{reinterpret_cast<const unsigned char*>(long_key.data()), long_key.size()};
    for (const Key& raw : {A, B, raw_long}) {
        referral::HmacSha256 prepared(raw.data, raw.len);
        Key fast{raw.data, raw.len, &prepared};
        std::string slow_cookie = sign("prep_code", kVisitor, kNow, raw);
        std::string fast_cookie = sign("prep_code", kVisitor, kNow, fast);
        assert_false(slow_cookie.empty());
        assert_string_equal(slow_cookie.c_str(), fast_cookie.c_str());
        assert_int_equal(verify(slow_cookie, {fast}), CookieStatus::valid);
        assert_int_equal(verify(fast_cookie, {raw}), CookieStatus::valid);
    }
    referral::HmacSha256 prepared_b(B.data, B.len);
    Key fast_b{B.data, B.len, &prepared_b};
    assert_int_equal(verify(sign("prep_code", kVisitor, kNow, A), {fast_b}), CookieStatus::bad_mac);
}

void test_for_each_cookie(void**) {
    std::vector<std::string> seen;
    auto collect = [&](std::string_view v) {
        seen.emplace_back(v);
        return false;
    };
    assert_false(referral::for_each_cookie("a=1; referral=x; b=2;referral=y ;referrals=z; referral",
                                           "referral", collect));
    assert_int_equal(seen.size(), 2);
    assert_string_equal(seen[0].c_str(), "x");
    assert_string_equal(seen[1].c_str(), "y");
    // Stops at the first the caller accepts.
    seen.clear();
    assert_true(referral::for_each_cookie("referral=1; referral=2", "referral", [&](std::string_view v) {
        seen.emplace_back(v);
        return v == "1";
    }));
    assert_int_equal(seen.size(), 1);
    // Names are case-sensitive and must match whole.
    seen.clear();
    referral::for_each_cookie("Referral=1; xreferral=2; referral_=3", "referral", collect);
    assert_int_equal(seen.size(), 0);
    // An empty value is still a value (and will fail verification).
    referral::for_each_cookie("referral=", "referral", collect);
    assert_int_equal(seen.size(), 1);
    assert_string_equal(seen[0].c_str(), "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_every_byte_altered),
        cmocka_unit_test(test_truncated_and_extended),
        cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_future),
        cmocka_unit_test(test_key_rotation),
        cmocka_unit_test(test_length_and_charset),
        cmocka_unit_test(test_sign_refuses),
        cmocka_unit_test(test_to_string),
        cmocka_unit_test(test_prepared_key_matches_one_shot),
        cmocka_unit_test(test_for_each_cookie),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

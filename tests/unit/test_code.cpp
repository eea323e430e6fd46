// Unit tests for the referral code rule (core/code.h) and the identifiers
// drawn from the CSPRNG (core/random.h).
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

// cmocka 1.1 declares its functions without extern "C".
extern "C" {
#include <cmocka.h>
}

#include <cstring>
#include <set>
#include <string>
#include <string_view>

#include "core/code.h"
#include "core/random.h"

using referral::is_valid_code;

namespace {

bool allowed(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// ---- code: lengths -------------------------------------------------------

void test_code_lengths(void**) {
    assert_false(is_valid_code(""));
    assert_false(is_valid_code("a"));
    assert_false(is_valid_code("ab"));
    assert_false(is_valid_code("abc"));               // 3
    assert_true(is_valid_code("abcd"));               // 4
    assert_true(is_valid_code(std::string(5, 'x')));
    assert_true(is_valid_code(std::string(63, 'x')));
    assert_true(is_valid_code(std::string(64, 'x')));  // 64
    assert_false(is_valid_code(std::string(65, 'x')));  // 65
    assert_false(is_valid_code(std::string(1000, 'x')));
    assert_int_equal(referral::kCodeMinLen, 4);
    assert_int_equal(referral::kCodeMaxLen, 64);
}

// ---- code: every allowed class ------------------------------------------

void test_code_allowed_classes(void**) {
    assert_true(is_valid_code("abcdefghijklmnopqrstuvwxyz"));
    assert_true(is_valid_code("ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
    assert_true(is_valid_code("0123456789"));
    assert_true(is_valid_code("____"));
    assert_true(is_valid_code("----"));
    assert_true(is_valid_code("aZ0_-"));
    assert_true(is_valid_code("alice-2024_X"));
    // Every allowed character, one at a time, inside an otherwise valid code.
    for (int c = 0; c < 256; c++) {
        std::string code = "ab";
        code.push_back(static_cast<char>(c));
        code += "cd";
        assert_int_equal(is_valid_code(code), allowed(static_cast<unsigned char>(c)));
    }
}

// ---- code: bad characters ------------------------------------------------

void test_code_bad_characters(void**) {
    const char* bad[] = {
        "abc\r",     "abc\ndef",   "ab\r\ncd",  "abc\"d",    "ab'cd",
        "ab cd",     " abcd",      "abcd ",     "ab%20cd",   "abc%",
        "ab.cd",     "....",       "ab/cd",     "ab+cd",     "ab=cd",
        "ab;cd",     "ab,cd",      "ab\tcd",    "ab\\cd",    "ab<cd>",
        "ab@cd",     "ab:cd",      "ab~cd",     "ab!cd",     "ab#cd",
        "ab&cd",     "ab?cd",      "ab*cd",     "ab(cd)",    "ab[cd]",
        "ab{cd}",    "ab|cd",      "ab`cd",     "ab^cd",     "ab$cd",
    };
    for (const char* s : bad) {
        if (is_valid_code(s)) fail_msg("accepted %s", s);
    }
    // CR, LF, quotes, space, '%', '.' at the start, middle and end.
    const char specials[] = {'\r', '\n', '"', '\'', ' ', '%', '.', '\x7f', '\x1b'};
    for (char c : specials) {
        for (std::size_t pos = 0; pos <= 4; pos++) {
            std::string code = "abcd";
            code.insert(pos, 1, c);
            assert_false(is_valid_code(code));
        }
    }
}

void test_code_non_ascii(void**) {
    assert_false(is_valid_code("caf\xc3\xa9"));        // UTF-8 é
    assert_false(is_valid_code("\xe2\x80\x8b" "abcd"));  // zero-width space
    assert_false(is_valid_code("abcd\xff"));
    assert_false(is_valid_code("\x80\x81\x82\x83"));
    // Fullwidth 'A' (EF BC A1) would look like a letter to a careless check.
    assert_false(is_valid_code("ab\xef\xbc\xa1" "cd"));
    for (int c = 0x80; c < 0x100; c++) {
        std::string code(4, static_cast<char>(c));
        assert_false(is_valid_code(code));
    }
}

void test_code_nul_inside(void**) {
    assert_false(is_valid_code(std::string_view("ab\0cd", 5)));
    assert_false(is_valid_code(std::string_view("abcd\0", 5)));
    assert_false(is_valid_code(std::string_view("\0abcd", 5)));
    assert_false(is_valid_code(std::string_view("\0\0\0\0", 4)));
    // A NUL must not act as a terminator that hides a too-long tail either.
    std::string s = "abcd";
    s.push_back('\0');
    s += std::string(70, 'x');
    assert_false(is_valid_code(s));
}

// ---- random --------------------------------------------------------------

bool all_lower_hex(std::string_view s) {
    for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

void test_random_id(void**) {
    assert_int_equal(referral::kIdLen, 32);
    char a[referral::kIdLen + 1];
    char b[referral::kIdLen + 1];
    std::memset(a, '#', sizeof(a));
    std::memset(b, '#', sizeof(b));
    assert_true(referral::random_id(a));
    assert_true(referral::random_id(b));
    // Exactly 32 bytes written, nothing past them.
    assert_int_equal(a[referral::kIdLen], '#');
    assert_int_equal(b[referral::kIdLen], '#');
    std::string_view va(a, referral::kIdLen), vb(b, referral::kIdLen);
    assert_true(all_lower_hex(va));
    assert_true(all_lower_hex(vb));
    assert_true(referral::is_id(va));
    assert_true(referral::is_id(vb));
    assert_true(va != vb);

    std::set<std::string> seen;
    for (int i = 0; i < 1000; i++) {
        char id[referral::kIdLen];
        assert_true(referral::random_id(id));
        std::string s(id, referral::kIdLen);
        assert_true(all_lower_hex(s));
        assert_true(seen.insert(s).second);
    }
}

void test_is_id(void**) {
    assert_true(referral::is_id("0123456789abcdef0123456789abcdef"));
    assert_true(referral::is_id(std::string(32, '0')));
    assert_true(referral::is_id(std::string(32, 'f')));
    assert_false(referral::is_id(""));
    assert_false(referral::is_id(std::string(31, 'a')));
    assert_false(referral::is_id(std::string(33, 'a')));
    assert_false(referral::is_id("0123456789ABCDEF0123456789abcdef"));  // upper
    assert_false(referral::is_id("0123456789abcdeg0123456789abcdef"));  // 'g'
    assert_false(referral::is_id("0123456789abcde 0123456789abcdef"));
    assert_false(referral::is_id(std::string_view("0123456789abcde\0" "0123456789abcdef", 32)));
    assert_false(referral::is_id("0123456789abcdef0123456789abcde\xff"));
    // Each position with every byte: an id exactly when it is 0-9 or a-f.
    for (std::size_t pos = 0; pos < 32; pos++) {
        for (int c = 0; c < 256; c++) {
            std::string s(32, 'a');
            s[pos] = static_cast<char>(c);
            const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
            assert_int_equal(referral::is_id(s), hex);
        }
    }
}

void test_hex_lower(void**) {
    const unsigned char in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[12];
    referral::hex_lower(in, sizeof(in), out);
    assert_memory_equal(out, "00017f80abff", 12);
}

void test_random_code(void**) {
    for (std::size_t len : {0u, 1u, 4u, 40u, 64u, 100u, 1000u}) {
        std::string c = referral::random_code(len);
        assert_int_equal(c.size(), len);
        for (char ch : c) {
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9');
            if (!ok) fail_msg("character 0x%02x outside [A-Za-z0-9]", (unsigned char)ch);
        }
        if (len >= referral::kCodeMinLen && len <= referral::kCodeMaxLen) {
            assert_true(is_valid_code(c));
        }
    }
    std::set<std::string> seen;
    for (int i = 0; i < 1000; i++) {
        std::string c = referral::random_code(40);
        assert_int_equal(c.size(), 40);
        assert_true(is_valid_code(c));
        assert_true(seen.insert(c).second);
    }
    assert_int_equal(seen.size(), 1000);
}

// Rough uniformity: over 62,000 characters each of the 62 symbols should
// appear about 1000 times; a biased mapping (e.g. plain b % 62) or a
// truncated alphabet would fall far outside these generous bounds.
void test_random_code_distribution(void**) {
    std::string all;
    for (int i = 0; i < 62; i++) all += referral::random_code(1000);
    int counts[256] = {0};
    for (unsigned char c : all) counts[c]++;
    const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    int total = 0;
    for (const char* a = alphabet; *a; a++) {
        int n = counts[static_cast<unsigned char>(*a)];
        if (n < 700 || n > 1300) fail_msg("'%c' drawn %d times out of 62000", *a, n);
        total += n;
    }
    assert_int_equal(total, 62000);
}

}  // namespace

void test_time_ordered_id(void**) {
    char a[referral::kIdLen], b[referral::kIdLen];
    const std::int64_t ms = 1764000000123;  // 0x19ab697e87b
    assert_true(referral::time_ordered_id(ms, a));
    std::string_view va(a, sizeof(a));
    assert_true(referral::is_id(va));
    assert_true(va.substr(0, 12) == "019ab697e87b");
    // Later ids sort later, whatever their random part.
    for (int i = 0; i < 200; i++) {
        assert_true(referral::time_ordered_id(ms + 1, b));
        assert_true(std::string_view(a, sizeof(a)) < std::string_view(b, sizeof(b)));
    }
    // Ids of one millisecond still differ.
    std::set<std::string> seen;
    for (int i = 0; i < 1000; i++) {
        assert_true(referral::time_ordered_id(ms, a));
        seen.emplace(a, sizeof(a));
    }
    assert_int_equal(seen.size(), 1000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_lengths),
        cmocka_unit_test(test_code_allowed_classes),
        cmocka_unit_test(test_code_bad_characters),
        cmocka_unit_test(test_code_non_ascii),
        cmocka_unit_test(test_code_nul_inside),
        cmocka_unit_test(test_random_id),
        cmocka_unit_test(test_is_id),
        cmocka_unit_test(test_hex_lower),
        cmocka_unit_test(test_random_code),
        cmocka_unit_test(test_time_ordered_id),
        cmocka_unit_test(test_random_code_distribution),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

// Unit tests for the conversion header grammar (core/conversion.h).
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

// cmocka 1.1 declares its functions without extern "C".
extern "C" {
#include <cmocka.h>
}

#include <string>
#include <string_view>

#include "core/conversion.h"

using referral::Conversion;
using referral::parse_conversion;

namespace {

// Parses `h`, failing the test with the reason when it is refused.
Conversion ok(std::string_view h) {
    Conversion c{};
    const char* err = parse_conversion(h, &c);
    if (err != nullptr) {
        fail_msg("refused \"%.*s\": %s", static_cast<int>(h.size()), h.data(), err);
    }
    return c;
}

// Parses `h`, failing the test when it is accepted; leaves the output alone.
const char* bad(std::string_view h) {
    Conversion c{};
    c.action = "sentinel";
    const char* err = parse_conversion(h, &c);
    if (err == nullptr) {
        fail_msg("accepted \"%.*s\"", static_cast<int>(h.size()), h.data());
    }
    assert_true(err[0] != '\0');
    assert_true(c.action == "sentinel");  // untouched on failure
    return err;
}

bool inside(std::string_view part, std::string_view whole) {
    return part.empty() ||
           (part.data() >= whole.data() &&
            part.data() + part.size() <= whole.data() + whole.size());
}

void test_spec_examples(void**) {
    Conversion c = ok("signup; user=42");
    assert_true(c.action == "signup");
    assert_true(c.user == "42");
    assert_true(c.amount.empty());
    assert_true(c.currency.empty());
    assert_true(c.order.empty());

    const std::string h = "subscribe; user=42; amount=999; currency=usd; order=in_1Nx";
    c = ok(h);
    assert_true(c.action == "subscribe");
    assert_true(c.user == "42");
    assert_true(c.amount == "999");
    assert_true(c.currency == "usd");
    assert_true(c.order == "in_1Nx");
    // Views into the header, not copies.
    for (std::string_view f : {c.action, c.user, c.amount, c.currency, c.order}) {
        assert_true(inside(f, h));
    }
}

void test_field_values(void**) {
    // Key order does not matter.
    Conversion c = ok("subscribe; order=o-1; currency=EUR; amount=-250; user=u@example.com");
    assert_true(c.action == "subscribe");
    assert_true(c.user == "u@example.com");
    assert_true(c.amount == "-250");
    assert_true(c.currency == "EUR");
    assert_true(c.order == "o-1");
    c = ok("a; user=x");
    assert_true(c.action == "a");
    assert_true(c.user == "x");
    c = ok("unsubscribe_2; user=!#$%&'()*+,-./:<>?@[\\]^_`{|}~\"");
    assert_true(c.action == "unsubscribe_2");
    assert_true(c.user == "!#$%&'()*+,-./:<>?@[\\]^_`{|}~\"");
    c = ok("x; user=1; amount=0");
    assert_true(c.amount == "0");
    c = ok("x; user=1; amount=123456789012345678");  // 18 digits
    assert_true(c.amount == "123456789012345678");
    c = ok("x; user=1; amount=-123456789012345678");
    assert_true(c.amount == "-123456789012345678");
    // Boundaries.
    std::string action32(32, 'a');
    std::string user128(128, 'u');
    std::string order128(128, 'o');
    std::string h = action32 + "; user=" + user128 + "; order=" + order128;
    c = ok(h);
    assert_int_equal(c.action.size(), 32);
    assert_int_equal(c.user.size(), 128);
    assert_int_equal(c.order.size(), 128);
    assert_true(c.user == user128);
    assert_true(c.order == order128);
}

void test_whitespace_variants(void**) {
    const char* variants[] = {
        "signup;user=42",
        "signup ;user=42",
        "signup; user=42",
        "signup  ;  user=42  ",
        "  signup; user=42",
        "\tsignup\t;\tuser=42\t",
        " \t signup \t ; \t user=42 \t ",
    };
    for (const char* v : variants) {
        Conversion c = ok(v);
        assert_true(c.action == "signup");
        assert_true(c.user == "42");
    }
    Conversion c = ok("subscribe;user=7;amount=5;currency=usd;order=A");
    assert_true(c.user == "7" && c.amount == "5" && c.currency == "usd" && c.order == "A");
    c = ok("subscribe ;\tuser=7 \t;  amount=5;currency=usd\t; order=A ");
    assert_true(c.user == "7" && c.amount == "5" && c.currency == "usd" && c.order == "A");
    // Whitespace is not allowed around '=' nor inside a value.
    bad("signup; user =42");
    bad("signup; user= 42");
    bad("signup; user=4 2");
    bad("signup; user=4\t2");
    bad("sign up; user=42");
}

void test_bad_action(void**) {
    bad("");
    bad(" ");
    bad("; user=42");
    bad(" ; user=42");
    bad("Signup; user=42");          // upper case
    bad("sign-up; user=42");
    bad("sign.up; user=42");
    bad("sign/up; user=42");
    bad("signup!; user=42");
    bad("sign\rup; user=42");
    bad("sign\nup; user=42");
    bad("sign\xc3\xa9; user=42");
    bad(std::string_view("sign\0up; user=42", 16));
    bad(std::string(33, 'a') + "; user=42");  // 33
    bad("user=42");                 // no action: "user=42" is not an action
    bad("signup user=42");
    bad("signup, user=42");
}

void test_missing_user(void**) {
    bad("signup");
    bad("signup ");
    bad("signup; amount=5");
    bad("subscribe; amount=999; currency=usd; order=in_1");
    bad("signup; user=");
    bad("signup; user");
}

void test_bad_user(void**) {
    bad("signup; user=" + std::string(129, 'u'));  // 129
    bad("signup; user=a b");
    bad("signup; user=a;b");   // ';' splits: "b" is a parameter without '='
    bad("signup; user=a=b");
    bad("signup; user==");
    bad("signup; user=a\x01" "b");
    bad("signup; user=a\x1f" "b");
    bad("signup; user=a\x7f" "b");
    bad("signup; user=a\rb");
    bad("signup; user=a\nb");
    bad("signup; user=a\r\nX-Injected: 1");
    bad(std::string_view("signup; user=a\0b", 16));
    bad(std::string_view("signup; user=ab\0", 16));
    bad("signup; user=\xc3\xa9");
    bad("signup; user=\x80");
    for (int ch = 0; ch < 256; ch++) {
        std::string h = "signup; user=a";
        h.push_back(static_cast<char>(ch));
        h += "b";
        Conversion c{};
        bool accepted = parse_conversion(h, &c) == nullptr;
        bool printable = ch > 0x20 && ch < 0x7f && ch != ';' && ch != '=';
        if (accepted != printable) fail_msg("user byte 0x%02x: accepted=%d", ch, accepted);
    }
}

void test_unknown_and_duplicate_keys(void**) {
    bad("signup; user=42; foo=bar");
    bad("signup; User=42");
    bad("signup; USER=42");
    bad("signup; users=42");
    bad("signup; =42");
    bad("signup; user=42; =x");
    bad("signup; user=42; ref=abcd");
    bad("signup; user=42; user=43");
    bad("signup; user=42; user=42");
    bad("signup; user=42; amount=1; amount=2");
    bad("signup; user=42; currency=usd; currency=eur");
    bad("signup; user=42; order=a; order=b");
    bad("signup; user=42; user");
}

void test_bad_amount(void**) {
    bad("x; user=1; amount=");
    bad("x; user=1; amount=abc");
    bad("x; user=1; amount=12a");
    bad("x; user=1; amount=1.5");
    bad("x; user=1; amount=1,5");
    bad("x; user=1; amount=+5");
    bad("x; user=1; amount=-");
    bad("x; user=1; amount=--5");
    bad("x; user=1; amount=5-");
    bad("x; user=1; amount=0x10");
    bad("x; user=1; amount=1e3");
    bad("x; user=1; amount=1 000");
    bad("x; user=1; amount=1234567890123456789");    // 19 digits
    bad("x; user=1; amount=-1234567890123456789");
    bad("x; user=1; amount=99999999999999999999999999");
}

void test_bad_currency(void**) {
    bad("x; user=1; currency=");
    bad("x; user=1; currency=us");
    bad("x; user=1; currency=usdd");
    bad("x; user=1; currency=us1");
    bad("x; user=1; currency=u-d");
    bad("x; user=1; currency=123");
    bad("x; user=1; currency=\xc3\xa9u");
    Conversion c = ok("x; user=1; currency=UsD");
    assert_true(c.currency == "UsD");
}

void test_empty_parameter(void**) {
    bad("signup; user=42;");
    bad("signup; user=42; ");
    bad("signup;; user=42");
    bad("signup; ; user=42");
    bad("signup;");
    bad("signup; user=42;;");
    bad("signup; user=42; \t ");
}

void test_bad_order(void**) {
    bad("x; user=1; order=" + std::string(129, 'o'));  // too long
    bad("x; user=1; order=");
    bad("x; user=1; order=a b");
    bad("x; user=1; order=a=b");
    bad("x; user=1; order=a\nb");
}

void test_customer(void**) {
    // SPEC: the user's id at the payment provider, 1 to 64 of [A-Za-z0-9_]
    Conversion c = ok("subscribe; user=42; customer=cus_NffrFeUfNV2Hib");
    assert_true(c.customer == "cus_NffrFeUfNV2Hib");
    assert_true(ok("subscribe; user=42").customer.empty());
    assert_true(ok("x; user=1; customer=" + std::string(64, 'C')).customer.size() == 64);
    bad("x; user=1; customer=" + std::string(65, 'C'));
    bad("x; user=1; customer=");
    bad("x; user=1; customer=cus-1");
    bad("x; user=1; customer=cus.1");
    bad("x; user=1; customer=cus 1");
    bad("x; user=1; customer=a; customer=b");
}

// The field rules on their own, as the worker and referralctl use them.
void test_field_rules(void**) {
    assert_true(referral::is_action("refund"));
    assert_true(referral::is_action(std::string(32, 'a')));
    assert_false(referral::is_action(std::string(33, 'a')));
    assert_false(referral::is_action(""));
    assert_false(referral::is_action("Signup"));
    assert_false(referral::is_action("sign-up"));
    assert_true(referral::is_user("u@example.com"));
    assert_true(referral::is_user(std::string(128, 'u')));
    assert_false(referral::is_user(std::string(129, 'u')));
    assert_false(referral::is_user("a;b"));
    assert_false(referral::is_user("a=b"));
    assert_false(referral::is_user("a\x7f"));
    assert_true(referral::is_order("in_1Nx"));
    assert_false(referral::is_order(""));
    assert_false(referral::is_order("a b"));
    assert_true(referral::is_token("x", 1));
    assert_false(referral::is_token("xy", 1));
    assert_true(referral::is_amount("-999999999999999999"));
    assert_false(referral::is_amount("1234567890123456789"));
    assert_false(referral::is_amount("-"));
    assert_false(referral::is_amount(""));
    assert_true(referral::is_currency("usd"));
    assert_true(referral::is_currency("EUR"));
    assert_false(referral::is_currency("us"));
    assert_false(referral::is_currency("u1d"));
    assert_true(referral::is_customer("cus_1"));
    assert_false(referral::is_customer("cus-1"));
    assert_false(referral::is_customer(""));
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_examples),
        cmocka_unit_test(test_field_values),
        cmocka_unit_test(test_whitespace_variants),
        cmocka_unit_test(test_bad_action),
        cmocka_unit_test(test_missing_user),
        cmocka_unit_test(test_bad_user),
        cmocka_unit_test(test_unknown_and_duplicate_keys),
        cmocka_unit_test(test_bad_amount),
        cmocka_unit_test(test_bad_currency),
        cmocka_unit_test(test_empty_parameter),
        cmocka_unit_test(test_bad_order),
        cmocka_unit_test(test_customer),
        cmocka_unit_test(test_field_rules),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

// Unit tests for the attribution rule (core/attribution.h): every branch of
// decide(), and the cookie scan over real signed cookies.
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>
#include <string>
#include <string_view>

extern "C" {
#include <cmocka.h>
}

#include "core/attribution.h"
#include "core/cookie.h"

using referral::AttributionMode;
using referral::AttributionStatus;
using referral::CodeSeen;
using referral::CookieSeen;
using referral::Decision;
using referral::Source;
using referral::decide;

namespace {

constexpr AttributionMode kModes[] = {AttributionMode::first, AttributionMode::last};

void expect(const Decision& d, AttributionStatus status, bool click, bool set_cookie, Source code,
            Source visitor, Source first_ts) {
    assert_int_equal(static_cast<int>(d.status), static_cast<int>(status));
    assert_int_equal(d.click, click);
    assert_int_equal(d.set_cookie, set_cookie);
    assert_int_equal(static_cast<int>(d.code), static_cast<int>(code));
    assert_int_equal(static_cast<int>(d.visitor), static_cast<int>(visitor));
    assert_int_equal(static_cast<int>(d.first_ts), static_cast<int>(first_ts));
}

// ---- decide() --------------------------------------------------------------

void test_skip_wins_over_everything(void**) {
    for (AttributionMode m : kModes) {
        for (CodeSeen c : {CodeSeen::absent, CodeSeen::valid, CodeSeen::invalid}) {
            for (CookieSeen k : {CookieSeen::absent, CookieSeen::valid, CookieSeen::rejected}) {
                expect(decide(true, c, k, m), AttributionStatus::skipped, false, false,
                       Source::nothing, Source::nothing, Source::nothing);
            }
        }
    }
}

void test_fresh_without_a_valid_cookie(void**) {
    for (AttributionMode m : kModes) {
        for (CookieSeen k : {CookieSeen::absent, CookieSeen::rejected}) {
            expect(decide(false, CodeSeen::valid, k, m), AttributionStatus::fresh, true, true,
                   Source::request, Source::request, Source::request);
        }
    }
}

void test_first_keeps_the_cookie(void**) {
    expect(decide(false, CodeSeen::valid, CookieSeen::valid, AttributionMode::first),
           AttributionStatus::kept, true, false, Source::cookie, Source::cookie, Source::cookie);
}

void test_last_replaces_code_and_time_keeps_visitor(void**) {
    expect(decide(false, CodeSeen::valid, CookieSeen::valid, AttributionMode::last),
           AttributionStatus::replaced, true, true, Source::request, Source::cookie,
           Source::request);
}

void test_cookie_alone(void**) {
    for (AttributionMode m : kModes) {
        // a malformed code next to a valid cookie: the cookie still holds
        for (CodeSeen c : {CodeSeen::absent, CodeSeen::invalid}) {
            expect(decide(false, c, CookieSeen::valid, m), AttributionStatus::cookie, false, false,
                   Source::cookie, Source::cookie, Source::cookie);
        }
    }
}

void test_invalid_and_nothing(void**) {
    for (AttributionMode m : kModes) {
        expect(decide(false, CodeSeen::invalid, CookieSeen::absent, m), AttributionStatus::invalid,
               false, false, Source::nothing, Source::nothing, Source::nothing);
        expect(decide(false, CodeSeen::absent, CookieSeen::rejected, m), AttributionStatus::invalid,
               false, false, Source::nothing, Source::nothing, Source::nothing);
        expect(decide(false, CodeSeen::invalid, CookieSeen::rejected, m),
               AttributionStatus::invalid, false, false, Source::nothing, Source::nothing,
               Source::nothing);
        expect(decide(false, CodeSeen::absent, CookieSeen::absent, m), AttributionStatus::none,
               false, false, Source::nothing, Source::nothing, Source::nothing);
    }
}

void test_status_names(void**) {
    assert_string_equal(referral::to_string(AttributionStatus::none), "");
    assert_string_equal(referral::to_string(AttributionStatus::fresh), "new");
    assert_string_equal(referral::to_string(AttributionStatus::kept), "kept");
    assert_string_equal(referral::to_string(AttributionStatus::replaced), "replaced");
    assert_string_equal(referral::to_string(AttributionStatus::cookie), "cookie");
    assert_string_equal(referral::to_string(AttributionStatus::invalid), "invalid");
    assert_string_equal(referral::to_string(AttributionStatus::skipped), "skipped");
}

// ---- CookieScan --------------------------------------------------------------

const unsigned char kKey[] = "0123456789abcdef0123456789abcdef-scan";
const referral::Key key{kKey, sizeof(kKey) - 1};
constexpr std::int64_t kNow = 1'700'000'000'000;
constexpr std::int64_t kWindow = 30LL * 24 * 3600 * 1000;
const std::string kVisitor(32, 'a');

std::string cookie(std::string_view code, std::int64_t ts = kNow - 1000) {
    char buf[referral::kCookieMaxLen];
    size_t n = referral::sign_cookie(code, kVisitor, ts, key, buf, sizeof(buf));
    assert_true(n > 0);
    return std::string(buf, n);
}

std::string altered(std::string v) {
    v.back() = v.back() == 'A' ? 'B' : 'A';
    return v;
}

void test_scan_nothing(void**) {
    referral::CookieScan scan(&key, 1, kNow, kWindow);
    assert_int_equal(static_cast<int>(scan.result()), static_cast<int>(CookieSeen::absent));
}

void test_scan_first_valid_wins(void**) {
    referral::CookieScan scan(&key, 1, kNow, kWindow);
    const std::string one = altered(cookie("one_code")), two = cookie("two_code"),
                      three = cookie("three_code");  // the claims point into them
    assert_false(scan.offer(one));
    assert_true(scan.offer(two));
    assert_true(scan.offer(three));  // over: not looked at
    assert_int_equal(static_cast<int>(scan.result()), static_cast<int>(CookieSeen::valid));
    assert_true(scan.claims().code == "two_code");
    assert_true(scan.claims().visitor == kVisitor);
}

void test_scan_rejections_remember_why(void**) {
    referral::CookieScan scan(&key, 1, kNow, kWindow);
    assert_false(scan.offer("garbage"));
    assert_int_equal(static_cast<int>(scan.why_rejected()),
                     static_cast<int>(referral::CookieStatus::malformed));
    assert_false(scan.offer(cookie("old_code", kNow - kWindow - 1)));
    assert_int_equal(static_cast<int>(scan.why_rejected()),
                     static_cast<int>(referral::CookieStatus::expired));
    assert_int_equal(static_cast<int>(scan.result()), static_cast<int>(CookieSeen::rejected));
}

void test_scan_gives_up_after_the_limit(void**) {
    referral::CookieScan scan(&key, 1, kNow, kWindow);
    for (int i = 0; i < referral::CookieScan::kMaxCandidates; i++) {
        assert_false(scan.offer(altered(cookie("many_code"))));
    }
    // the next one, valid or not, is never verified
    assert_true(scan.offer(cookie("late_code")));
    assert_int_equal(static_cast<int>(scan.result()), static_cast<int>(CookieSeen::rejected));
}

void test_scan_valid_at_the_limit(void**) {
    referral::CookieScan scan(&key, 1, kNow, kWindow);
    for (int i = 1; i < referral::CookieScan::kMaxCandidates; i++) {
        assert_false(scan.offer("x"));
    }
    assert_true(scan.offer(cookie("last_code")));
    assert_int_equal(static_cast<int>(scan.result()), static_cast<int>(CookieSeen::valid));
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_skip_wins_over_everything),
        cmocka_unit_test(test_fresh_without_a_valid_cookie),
        cmocka_unit_test(test_first_keeps_the_cookie),
        cmocka_unit_test(test_last_replaces_code_and_time_keeps_visitor),
        cmocka_unit_test(test_cookie_alone),
        cmocka_unit_test(test_invalid_and_nothing),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_scan_nothing),
        cmocka_unit_test(test_scan_first_valid_wins),
        cmocka_unit_test(test_scan_rejections_remember_why),
        cmocka_unit_test(test_scan_gives_up_after_the_limit),
        cmocka_unit_test(test_scan_valid_at_the_limit),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

// Unit tests for how the worker reads a stream entry (schema version 1):
// what is accepted, and the reason given for what goes to the dead stream.
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <ctime>

extern "C" {
#include <cmocka.h>
}

#include <string>
#include <vector>

#include "worker/processor.h"
#include "worker/util.h"

using namespace referral::worker;

namespace {

const std::string kId = "0123456789abcdef0123456789abcdef";
const std::string kVisitor = "fedcba9876543210fedcba9876543210";

std::vector<std::pair<std::string, std::string>> click() {
    return {{"v", "1"}, {"id", kId}, {"type", "click"}, {"ts", "1764000000000"}, {"code", "alice-code"},
            {"visitor", kVisitor}, {"first_ts", "1764000000000"}, {"ip", "203.0.113.7"}, {"ua", "curl/8"},
            {"url", "/?ref=alice-code"}, {"referer", ""}, {"host", "example.com"}};
}

std::vector<std::pair<std::string, std::string>> conversion() {
    auto f = click();
    f[2].second = "conversion";
    f.push_back({"action", "subscribe"});
    f.push_back({"user", "42"});
    f.push_back({"amount", "999"});
    f.push_back({"currency", "usd"});
    f.push_back({"order", "in_1Nx"});
    return f;
}

std::string parse(const std::vector<std::pair<std::string, std::string>>& kv, Event* ev) {
    std::vector<Field> fields;
    for (const auto& p : kv) fields.push_back({p.first, p.second});
    return parse_event(fields, ev);
}

std::vector<std::pair<std::string, std::string>> with(std::vector<std::pair<std::string, std::string>> kv,
                                                      const std::string& key, const std::string& value) {
    for (auto& p : kv) {
        if (p.first == key) {
            p.second = value;
            return kv;
        }
    }
    kv.push_back({key, value});
    return kv;
}

std::vector<std::pair<std::string, std::string>> without(std::vector<std::pair<std::string, std::string>> kv,
                                                         const std::string& key) {
    for (auto it = kv.begin(); it != kv.end(); ++it) {
        if (it->first == key) {
            kv.erase(it);
            break;
        }
    }
    return kv;
}

bool starts(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

void test_click_is_accepted(void**) {
    Event ev;
    auto kv = click();
    assert_string_equal(parse(kv, &ev).c_str(), "");
    assert_true(ev.type == "click");
    assert_true(ev.code == "alice-code");
    assert_int_equal(ev.ts, 1764000000000LL);
    assert_int_equal(ev.first_ts, 1764000000000LL);
    assert_string_equal(ev.host.c_str(), "example.com");
    assert_string_equal(ev.created_at.c_str(), "2025-11-24 16:00:00.000000");
}

void test_conversion_is_accepted(void**) {
    Event ev;
    auto kv = conversion();
    assert_string_equal(parse(kv, &ev).c_str(), "");
    assert_true(ev.action == "subscribe");
    assert_true(ev.user == "42");
    assert_true(ev.amount && *ev.amount == 999);
    assert_true(ev.currency == "usd");
    assert_true(ev.order == "in_1Nx");
    // a conversion without attribution: empty code, visitor and first_ts
    kv = with(with(with(conversion(), "code", ""), "visitor", ""), "first_ts", "");
    assert_string_equal(parse(kv, &ev).c_str(), "");
    assert_true(ev.code.empty());
    assert_int_equal(ev.first_ts, 0);
    // the optional conversion fields may be empty
    kv = with(with(with(conversion(), "amount", ""), "currency", ""), "order", "");
    assert_string_equal(parse(kv, &ev).c_str(), "");
    assert_false(ev.amount.has_value());
}

void test_missing_fields(void**) {
    Event ev;
    for (const char* f : {"v", "id", "type", "ts", "code"}) {
        std::string r = parse(without(click(), f), &ev);
        assert_string_equal(r.c_str(), (std::string("missing field ") + f).c_str());
    }
    assert_string_equal(parse(without(conversion(), "user"), &ev).c_str(), "missing field user");
    assert_string_equal(parse(without(conversion(), "action"), &ev).c_str(), "missing field action");
    assert_string_equal(parse({}, &ev).c_str(), "missing field v");
}

void test_bad_values(void**) {
    Event ev;
    assert_true(starts(parse(with(click(), "v", "2"), &ev), "unsupported schema version"));
    assert_true(starts(parse(with(click(), "type", "view"), &ev), "unknown type"));
    assert_true(starts(parse(with(click(), "id", "XYZ"), &ev), "bad id"));
    assert_true(starts(parse(with(click(), "id", kId + "0"), &ev), "bad id"));
    assert_true(starts(parse(with(click(), "id", "0123456789ABCDEF0123456789ABCDEF"), &ev), "bad id"));
    assert_true(starts(parse(with(click(), "ts", "soon"), &ev), "bad ts"));
    assert_true(starts(parse(with(click(), "ts", "-5"), &ev), "bad ts"));
    assert_true(starts(parse(with(click(), "ts", "99999999999999999999"), &ev), "bad ts"));
    assert_true(starts(parse(with(click(), "code", ""), &ev), "bad code"));
    assert_true(starts(parse(with(click(), "code", "a.b"), &ev), "bad code"));
    assert_true(starts(parse(with(click(), "visitor", "xyz"), &ev), "bad visitor"));
    assert_true(starts(parse(with(click(), "first_ts", "1.5"), &ev), "bad first_ts"));
    assert_true(starts(parse(with(click(), "first_ts", "-1"), &ev), "bad first_ts"));
}

void test_event_times_are_bounded(void**) {
    Event ev;
    // up to the last millisecond of year 9999
    assert_string_equal(parse(with(with(click(), "ts", "253402300799999"), "first_ts", "1"), &ev).c_str(), "");
    assert_string_equal(format_db_time(253402300799999LL).c_str(), "9999-12-31 23:59:59.999000");
    assert_true(starts(parse(with(click(), "ts", "253402300800000"), &ev), "bad ts"));
    assert_true(starts(parse(with(click(), "ts", "9223372036854775807"), &ev), "bad ts"));
    // first_ts after ts: 5 minutes of clock skew allowed, no more
    assert_string_equal(parse(with(click(), "first_ts", "1764000300000"), &ev).c_str(), "");
    assert_true(starts(parse(with(click(), "first_ts", "1764000300001"), &ev), "bad first_ts"));
    assert_true(starts(parse(with(click(), "first_ts", "9223372036854775807"), &ev), "bad first_ts"));
}

void test_bad_values_more(void**) {
    Event ev;
    assert_true(starts(parse(with(conversion(), "amount", "12.50"), &ev), "bad amount"));
    assert_true(starts(parse(with(conversion(), "currency", "dollars"), &ev), "bad currency"));
    assert_true(starts(parse(with(conversion(), "user", "a b"), &ev), "bad user"));
    assert_true(starts(parse(with(conversion(), "user", std::string(129, 'u')), &ev), "bad user"));
    assert_true(starts(parse(with(conversion(), "action", "Sign-Up"), &ev), "bad action"));
    auto dup = click();
    dup.push_back({"id", kId});
    assert_string_equal(parse(dup, &ev).c_str(), "duplicate field id");
}

void test_texts_are_bounded_and_clean(void**) {
    Event ev;
    assert_string_equal(parse(with(click(), "ua", std::string(5000, 'a')), &ev).c_str(), "");
    assert_int_equal(ev.ua.size(), 512);
    assert_string_equal(parse(with(click(), "url", std::string(5000, '/')), &ev).c_str(), "");
    assert_int_equal(ev.url.size(), 2048);
    std::string nasty("a\0b\x01\xff\xc3\xa9", 7);
    assert_string_equal(parse(with(click(), "ua", nasty), &ev).c_str(), "");
    assert_string_equal(ev.ua.c_str(), "a?b??\xc3\xa9");
    // a multi-byte character cut at the limit is not left half
    std::string cut = clean_text(std::string(511, 'x') + "\xc3\xa9", 512);
    assert_int_equal(cut.size(), 512);
    assert_int_equal(cut.back(), '?');
}

void test_unknown_fields_are_ignored(void**) {
    Event ev;
    assert_string_equal(parse(with(click(), "country", "NL"), &ev).c_str(), "");
}

void test_time_format(void**) {
    assert_string_equal(format_db_time(0).c_str(), "1970-01-01 00:00:00.000000");
    assert_string_equal(format_db_time(951782400123LL).c_str(), "2000-02-29 00:00:00.123000");
    assert_string_equal(format_db_time(1764000000000LL).c_str(), "2025-11-24 16:00:00.000000");
    // past year 9999 (a hold added to the last event time)
    assert_string_equal(format_db_time(253402300800000LL).c_str(), "10000-01-01 00:00:00.000000");
    // against the C library's calendar, over the whole range
    std::uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const std::int64_t ms = static_cast<std::int64_t>(x % 253402300800000ULL);
        const std::time_t secs = static_cast<std::time_t>(ms / 1000);
        std::tm tm{};
        gmtime_r(&secs, &tm);
        char want[40];
        std::size_t n = std::strftime(want, sizeof(want), "%Y-%m-%d %H:%M:%S", &tm);
        std::snprintf(want + n, sizeof(want) - n, ".%03d000", static_cast<int>(ms % 1000));
        assert_string_equal(format_db_time(ms).c_str(), want);
    }
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_click_is_accepted),
        cmocka_unit_test(test_conversion_is_accepted),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_values_more),
        cmocka_unit_test(test_event_times_are_bounded),
        cmocka_unit_test(test_texts_are_bounded_and_clean),
        cmocka_unit_test(test_unknown_fields_are_ignored),
        cmocka_unit_test(test_time_format),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

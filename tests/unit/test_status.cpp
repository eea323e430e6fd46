// Unit tests for referral_status's formats (core/status.h): which one an
// Accept header asks for, the JSON keys, and Prometheus text 0.0.4.
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

#include <cstring>
#include <map>
#include <sstream>
#include <string>

// cmocka 1.1 declares its functions without extern "C"; after the C++
// headers, as its fail() macro would clash with std::ios::fail().
extern "C" {
#include <cmocka.h>
}

#include "core/status.h"

using referral::RedisState;
using referral::StatusTotals;
using referral::wants_prometheus;

namespace {

constexpr const char* kScraper =
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

void test_format_argument_wins(void**) {
    assert_true(wants_prometheus("prometheus", ""));
    assert_true(wants_prometheus("prometheus", "application/json"));
    assert_false(wants_prometheus("json", kScraper));
    // any other value is ignored: the header decides
    assert_false(wants_prometheus("xml", ""));
    assert_true(wants_prometheus("xml", "text/plain"));
}

void test_accept_prefers(void**) {
    assert_true(wants_prometheus("", kScraper));
    assert_true(wants_prometheus("", "text/plain"));
    assert_true(wants_prometheus("", "application/openmetrics-text"));
    assert_true(wants_prometheus("", "TEXT/PLAIN"));  // media types are case-insensitive
    assert_true(wants_prometheus("", "application/json;q=0.5, text/plain"));
    assert_true(wants_prometheus("", "text/*, application/json;q=0.9"));
    assert_true(wants_prometheus("", "application/json;q=0, */*"));
}

void test_accept_keeps_json(void**) {
    assert_false(wants_prometheus("", ""));
    assert_false(wants_prometheus("", "*/*"));                        // curl: a tie
    assert_false(wants_prometheus("", "application/json"));
    assert_false(wants_prometheus("", "application/json, text/plain;q=0.9"));
    assert_false(wants_prometheus("", "text/plain;q=0.5, application/*"));
    assert_false(wants_prometheus("", "text/html,application/xhtml+xml,*/*;q=0.8"));
    assert_false(wants_prometheus("", "text/plain;q=0"));             // refused outright
    assert_false(wants_prometheus("", "text/plainx, application/openmetrics"));
    // the most specific range decides, not the highest weight
    assert_false(wants_prometheus("", "text/plain;q=0.1, text/*;q=1, application/json;q=0.5"));
}

void test_accept_odd_weights(void**) {
    // a malformed weight counts as 1, as if absent
    assert_true(wants_prometheus("", "application/json;q=0.5, text/plain;q=abc"));
    assert_true(wants_prometheus("", "application/json;q=0.5, text/plain;q=0.75000"));
    assert_true(wants_prometheus("", "application/json;q=0.1 , text/plain ; q=0.2"));
    assert_false(wants_prometheus("", "application/json;q=0.2, text/plain;q=0.1"));
    assert_false(wants_prometheus("", ",,;,"));
}

void test_overall_state(void**) {
    StatusTotals t;
    assert_int_equal(static_cast<int>(referral::overall(t)), static_cast<int>(RedisState::idle));
    t.redis[static_cast<int>(RedisState::idle)] = 3;
    assert_string_equal(referral::to_string(referral::overall(t)), "idle");
    t.redis[static_cast<int>(RedisState::connected)] = 1;
    assert_string_equal(referral::to_string(referral::overall(t)), "connected");
    t.redis[static_cast<int>(RedisState::connecting)] = 1;
    assert_string_equal(referral::to_string(referral::overall(t)), "connecting");
    t.redis[static_cast<int>(RedisState::disconnected)] = 1;
    assert_string_equal(referral::to_string(referral::overall(t)), "disconnected");
}

StatusTotals sample() {
    StatusTotals t;
    t.sent = 10;
    t.buffered = 2;
    t.spooled = 5;
    t.replayed = 3;
    t.dropped = 1;
    t.clicks = 11;
    t.conversions = 4;
    t.malformed_conversions = 6;
    t.invalid_codes = 7;
    t.rejected_cookies = 8;
    t.skipped = 9;
    t.workers = 2;
    t.redis[static_cast<int>(RedisState::connected)] = 2;
    return t;
}

void test_json(void**) {
    char out[referral::kStatusMaxLen];
    size_t n = referral::render_json(sample(), out, sizeof(out));
    assert_true(n > 0);
    assert_string_equal(std::string(out, n).c_str(),
                        "{\"sent\":10,\"buffered\":2,\"spooled\":5,\"replayed\":3,\"dropped\":1,"
                        "\"clicks\":11,\"conversions\":4,\"malformed_conversions\":6,"
                        "\"invalid_codes\":7,\"rejected_cookies\":8,\"skipped\":9,"
                        "\"redis\":\"connected\"}\n");
}

void test_prometheus(void**) {
    char out[referral::kStatusMaxLen];
    size_t n = referral::render_prometheus(sample(), out, sizeof(out));
    assert_true(n > 0);
    std::istringstream in(std::string(out, n));
    std::map<std::string, std::string> types, values;
    std::string line, current;
    while (std::getline(in, line)) {
        if (line.rfind("# HELP ", 0) == 0) continue;
        if (line.rfind("# TYPE ", 0) == 0) {
            std::string rest = line.substr(7);
            current = rest.substr(0, rest.find(' '));
            types[current] = rest.substr(rest.find(' ') + 1);
            continue;
        }
        std::string name = line.substr(0, line.find(' '));
        assert_int_equal(name.rfind(current, 0), 0);  // a sample follows its TYPE
        values[name] = line.substr(line.find(' ') + 1);
    }
    for (const auto& [name, type] : types) {
        assert_int_equal(name.rfind("nginx_referral_", 0), 0);
        bool total = name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0;
        assert_true(total == (type == "counter"));
    }
    assert_string_equal(values["nginx_referral_sent_total"].c_str(), "10");
    assert_string_equal(values["nginx_referral_buffered"].c_str(), "2");
    assert_string_equal(types["nginx_referral_buffered"].c_str(), "gauge");
    assert_string_equal(values["nginx_referral_skipped_total"].c_str(), "9");
    assert_string_equal(values["nginx_referral_spool_backlog"].c_str(), "2");
    assert_string_equal(values["nginx_referral_workers"].c_str(), "2");
    assert_string_equal(values["nginx_referral_redis_workers{state=\"connected\"}"].c_str(), "2");
    assert_string_equal(values["nginx_referral_redis_workers{state=\"idle\"}"].c_str(), "0");
    assert_string_equal(values["nginx_referral_redis_up"].c_str(), "1");
    assert_int_equal(out[n - 1], '\n');
}

void test_prometheus_backlog_never_negative(void**) {
    StatusTotals t = sample();
    t.replayed = t.spooled + 1;  // a replay counted by a worker that outlived the count
    t.redis[static_cast<int>(RedisState::disconnected)] = 1;
    char out[referral::kStatusMaxLen];
    std::string s(out, referral::render_prometheus(t, out, sizeof(out)));
    assert_true(s.find("nginx_referral_spool_backlog 0\n") != std::string::npos);
    assert_true(s.find("nginx_referral_redis_up 0\n") != std::string::npos);
}

void test_too_small_buffer(void**) {
    char out[64];
    assert_int_equal(referral::render_json(sample(), out, sizeof(out)), 0);
    assert_int_equal(referral::render_prometheus(sample(), out, sizeof(out)), 0);
    // the largest values still fit the documented size
    StatusTotals big = sample();
    for (auto* f : {&big.sent, &big.buffered, &big.spooled, &big.dropped, &big.clicks}) *f = UINT64_MAX;
    char full[referral::kStatusMaxLen];
    assert_true(referral::render_prometheus(big, full, sizeof(full)) > 0);
    assert_true(referral::render_json(big, full, sizeof(full)) > 0);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_argument_wins),
        cmocka_unit_test(test_accept_prefers),
        cmocka_unit_test(test_accept_keeps_json),
        cmocka_unit_test(test_accept_odd_weights),
        cmocka_unit_test(test_overall_state),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_prometheus),
        cmocka_unit_test(test_prometheus_backlog_never_negative),
        cmocka_unit_test(test_too_small_buffer),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

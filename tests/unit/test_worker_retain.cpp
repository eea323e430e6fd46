// Unit tests for `retain`: where XTRIM MINID may cut the stream without
// removing an entry a consumer group still needs (src/worker/retain.*).
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

extern "C" {
#include <cmocka.h>
}

#include <string>

#include "worker/retain.h"

using namespace referral::worker;

namespace {

std::string point(const std::vector<GroupFloor>& g, std::int64_t cutoff) {
    auto p = trim_point(g, cutoff);
    return p ? to_string(*p) : "none";
}

void test_parse_ids(void**) {
    assert_true(parse_stream_id("1700000000000-3").has_value());
    assert_int_equal(parse_stream_id("1700000000000-3")->seq, 3);
    assert_int_equal(parse_stream_id("5")->ms, 5);
    assert_false(parse_stream_id("").has_value());
    assert_false(parse_stream_id("12-x").has_value());
    assert_false(parse_stream_id("99999999999999999999999-0").has_value());
    assert_true(*parse_stream_id("5-9") < *parse_stream_id("6-0"));
    assert_true(*parse_stream_id("5-1") < *parse_stream_id("5-2"));
}

void test_trim_point(void**) {
    // Everything acknowledged, last delivered after the cutoff: the cutoff.
    assert_string_equal(point({{"", "9000-0"}}, 5000).c_str(), "5000-0");
    // A group that read less: its last delivered id is kept.
    assert_string_equal(point({{"", "9000-0"}, {"", "3000-7"}}, 5000).c_str(), "3000-7");
    // A pending entry (a slow consumer): it stays, and all after it.
    assert_string_equal(point({{"2000-1", "9000-0"}, {"", "9000-0"}}, 5000).c_str(), "2000-1");
    // A group that read nothing: nothing may go.
    assert_string_equal(point({{"", "0-0"}}, 5000).c_str(), "none");
    // No group at all, or an unreadable id: nothing is trimmed.
    assert_string_equal(point({}, 5000).c_str(), "none");
    assert_string_equal(point({{"", "garbage"}}, 5000).c_str(), "none");
    assert_string_equal(point({{"", "9000-0"}}, 0).c_str(), "none");
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ids),
        cmocka_unit_test(test_trim_point),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

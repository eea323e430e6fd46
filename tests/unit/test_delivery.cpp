// Unit tests for the delivery policy (core/delivery.h): replies, backoff,
// timeouts, the reconnect timer, routing a new event, an exiting worker,
// and a move to the spool that only partly succeeds.
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

extern "C" {
#include <cmocka.h>
}

#include "core/delivery.h"

using namespace referral;

namespace {

// ---- replies -----------------------------------------------------------------

void test_reply_ok_acknowledges(void**) {
    assert_int_equal(static_cast<int>(classify_reply(false, "")), static_cast<int>(Reply::acked));
    assert_int_equal(static_cast<int>(classify_reply(false, "ERR ignored")), static_cast<int>(Reply::acked));
}

void test_reply_server_state_is_retried(void**) {
    for (const char* e : {"LOADING Redis is loading the dataset in memory",
                          "OOM command not allowed when used memory > 'maxmemory'.",
                          "READONLY You can't write against a read only replica.",
                          "NOAUTH Authentication required.", "MASTERDOWN Link with MASTER is down",
                          "WRONGTYPE Operation against a key holding the wrong kind of value",
                          "ERR unknown command 'XADD', with args beginning with: ", "ERR", ""}) {
        assert_int_equal(static_cast<int>(classify_reply(true, e)), static_cast<int>(Reply::retry));
    }
}

void test_reply_plain_err_rejects_the_event(void**) {
    for (const char* e : {"ERR wrong number of arguments for 'xadd' command",
                          "ERR Invalid stream ID specified as stream command argument",
                          "ERR syntax error"}) {
        assert_int_equal(static_cast<int>(classify_reply(true, e)), static_cast<int>(Reply::reject));
    }
}

// ---- backoff -------------------------------------------------------------------

void test_backoff_grows_to_the_cap(void**) {
    Backoff b;
    const std::int64_t expected[] = {500, 750, 1125, 1687, 2530, 3795, 5692, 8538, 10000, 10000};
    for (std::int64_t e : expected) {
        assert_int_equal(b.after_failure(-1, 0), e);  // random 0: no jitter
        assert_int_equal(b.current(), e);
    }
}

void test_backoff_jitter_is_bounded(void**) {
    for (std::uint64_t r : {1ULL, 7ULL, 125ULL, 126ULL, 0xffffffffffffffffULL}) {
        Backoff b;
        std::int64_t d = b.after_failure(-1, r);
        assert_true(d >= 500 && d <= 500 + 125);
        assert_int_equal(d, 500 + static_cast<std::int64_t>(r % 126));
    }
}

void test_backoff_resets_after_a_long_connection(void**) {
    Backoff b;
    for (int i = 0; i < 5; i++) b.after_failure(-1, 0);
    assert_true(b.current() > 500);
    // dropped right after connecting: keeps backing off
    std::int64_t before = b.current();
    assert_true(b.after_failure(100, 0) > before);
    assert_true(b.after_failure(Timing::kBackoffMaxMs, 0) > 500);  // not longer than the cap
    // held past the longest delay: afresh
    assert_int_equal(b.after_failure(Timing::kBackoffMaxMs + 1, 0), 500);
}

// ---- timeouts and the reconnect timer -------------------------------------------

void test_timeouts(void**) {
    const std::int64_t t0 = 1'000'000;
    assert_null(timed_out(Link::connecting, t0 + 3000, t0, -1));
    assert_string_equal(timed_out(Link::connecting, t0 + 3001, t0, -1), "connect timed out");
    // only a connect in progress times out as a connect
    assert_null(timed_out(Link::ready, t0 + 60000, t0, -1));
    assert_null(timed_out(Link::ready, t0 + 5000, 0, t0));
    assert_string_equal(timed_out(Link::ready, t0 + 5001, 0, t0), "no reply within 5 s");
    assert_null(timed_out(Link::idle, t0, 0, -1));
}

void test_reconnect_timer(void**) {
    assert_int_equal(static_cast<int>(on_reconnect_timer(true, false)), static_cast<int>(Reconnect::idle));
    assert_int_equal(static_cast<int>(on_reconnect_timer(false, false)), static_cast<int>(Reconnect::connect));
    assert_int_equal(static_cast<int>(on_reconnect_timer(true, true)), static_cast<int>(Reconnect::connect));
}

// ---- routing a new event ------------------------------------------------------------

int route(bool spool, Link link, bool backlog, bool fits, bool failed = false) {
    return static_cast<int>(route_event(spool, link, backlog, fits, failed));
}

void test_route_without_spool(void**) {
    for (Link l : {Link::idle, Link::connecting, Link::ready, Link::failing}) {
        assert_int_equal(route(false, l, false, true), static_cast<int>(Route::memory));
        assert_int_equal(route(false, l, true, true), static_cast<int>(Route::memory));
        assert_int_equal(route(false, l, false, false), static_cast<int>(Route::drop));
    }
}

void test_route_with_spool(void**) {
    // healthy: memory
    assert_int_equal(route(true, Link::ready, false, true), static_cast<int>(Route::memory));
    assert_int_equal(route(true, Link::idle, false, true), static_cast<int>(Route::memory));
    assert_int_equal(route(true, Link::connecting, false, true), static_cast<int>(Route::memory));
    // Redis failing, older events on disk, or memory full: disk
    assert_int_equal(route(true, Link::failing, false, true), static_cast<int>(Route::spool));
    assert_int_equal(route(true, Link::ready, true, true), static_cast<int>(Route::spool));
    assert_int_equal(route(true, Link::ready, false, false), static_cast<int>(Route::spool));
    // the disk write failed: memory if it fits, else drop
    assert_int_equal(route(true, Link::failing, false, true, true), static_cast<int>(Route::memory));
    assert_int_equal(route(true, Link::ready, false, false, true), static_cast<int>(Route::drop));
}

// ---- exiting ---------------------------------------------------------------------------

int step(bool spool, Link link, bool empty, std::int64_t for_ms) {
    return static_cast<int>(exit_step(spool, link, empty, for_ms));
}

void test_exit_steps(void**) {
    // nothing held, or still delivering: wait (the worker exits when empty)
    assert_int_equal(step(true, Link::failing, true, 0), static_cast<int>(ExitStep::wait));
    assert_int_equal(step(false, Link::ready, false, 60000), static_cast<int>(ExitStep::wait));
    assert_int_equal(step(true, Link::ready, false, 60000), static_cast<int>(ExitStep::wait));
    // not connected, a spool: everything to disk at once
    for (Link l : {Link::idle, Link::connecting, Link::failing}) {
        assert_int_equal(step(true, l, false, 0), static_cast<int>(ExitStep::spool_all));
    }
    // not connected, no spool: a grace period for Redis, then give up
    assert_int_equal(step(false, Link::failing, false, Timing::kExitGraceMs),
                     static_cast<int>(ExitStep::wait));
    assert_int_equal(step(false, Link::connecting, false, Timing::kExitGraceMs + 1),
                     static_cast<int>(ExitStep::drop_all));
}

// ---- moving the outbox to the spool ---------------------------------------------------

std::deque<OutboxEntry> entries(std::vector<std::uint64_t> claims) {
    std::deque<OutboxEntry> d;
    int i = 0;
    for (std::uint64_t c : claims) d.push_back(OutboxEntry{"cmd" + std::to_string(i++), c, 100 + i, 0, 0});
    return d;
}

void test_spool_move_all_written(void**) {
    std::vector<std::string> written;
    SpoolMove m = move_to_spool(entries({0, 0, 7, 7}), [&](const OutboxEntry& e) {
        written.push_back(e.command);
        return true;
    });
    assert_int_equal(m.moved, 4);
    assert_int_equal(m.first_time, 2);  // the replayed two were counted before
    assert_true(m.kept.empty());
    assert_true(m.release_claims);
    assert_true((written == std::vector<std::string>{"cmd0", "cmd1", "cmd2", "cmd3"}));  // in order
}

void test_spool_move_partly_written(void**) {
    int calls = 0;
    // the disk fills up after two records
    SpoolMove m = move_to_spool(entries({0, 3, 0, 3, 0}), [&](const OutboxEntry&) { return ++calls <= 2; });
    assert_int_equal(calls, 5);  // every entry is tried: a later one may be smaller
    assert_int_equal(m.moved, 2);
    assert_int_equal(m.first_time, 1);
    assert_false(m.release_claims);  // claims go back whole
    assert_int_equal(m.kept.size(), 3);
    assert_string_equal(m.kept[0].command.c_str(), "cmd2");
    assert_string_equal(m.kept[1].command.c_str(), "cmd3");
    assert_string_equal(m.kept[2].command.c_str(), "cmd4");
    for (const auto& e : m.kept) assert_int_equal(e.claim, 0);  // on their own now
    assert_int_equal(m.kept[0].queued_ms, 103);                // their time kept
}

void test_spool_move_nothing_written(void**) {
    SpoolMove m = move_to_spool(entries({0, 0}), [](const OutboxEntry&) { return false; });
    assert_int_equal(m.moved, 0);
    assert_int_equal(m.first_time, 0);
    assert_int_equal(m.kept.size(), 2);
    assert_false(m.release_claims);
}

void test_spool_move_empty(void**) {
    SpoolMove m = move_to_spool(std::deque<OutboxEntry>(), [](const OutboxEntry&) { return false; });
    assert_int_equal(m.moved, 0);
    assert_true(m.kept.empty());
    assert_true(m.release_claims);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_ok_acknowledges),
        cmocka_unit_test(test_reply_server_state_is_retried),
        cmocka_unit_test(test_reply_plain_err_rejects_the_event),
        cmocka_unit_test(test_backoff_grows_to_the_cap),
        cmocka_unit_test(test_backoff_jitter_is_bounded),
        cmocka_unit_test(test_backoff_resets_after_a_long_connection),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_reconnect_timer),
        cmocka_unit_test(test_route_without_spool),
        cmocka_unit_test(test_route_with_spool),
        cmocka_unit_test(test_exit_steps),
        cmocka_unit_test(test_spool_move_all_written),
        cmocka_unit_test(test_spool_move_partly_written),
        cmocka_unit_test(test_spool_move_nothing_written),
        cmocka_unit_test(test_spool_move_empty),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

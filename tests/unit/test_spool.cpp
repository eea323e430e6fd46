// Unit tests for the module's spool (core/spool.h) and outbox
// (core/outbox.h): the two places an event waits until Redis has it.
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

extern "C" {
#include <cmocka.h>
}

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/outbox.h"
#include "core/spool.h"

using referral::Outbox;
using referral::Spool;

namespace {

std::string make_dir() {
    char tmpl[] = "/tmp/referral-spool-test-XXXXXX";
    char* d = mkdtemp(tmpl);
    assert_non_null(d);
    return d;
}

std::vector<std::string> names(const std::string& dir) {
    std::vector<std::string> out;
    DIR* d = opendir(dir.c_str());
    while (struct dirent* e = readdir(d)) {
        if (e->d_name[0] != '.') out.emplace_back(e->d_name);
    }
    closedir(d);
    return out;
}

void remove_dir(const std::string& dir) {
    for (const auto& n : names(dir)) unlink((dir + "/" + n).c_str());
    rmdir(dir.c_str());
}

std::string record(int i) { return "*1\r\n$" + std::to_string(std::to_string(i).size()) + "\r\n" + std::to_string(i) + "\r\n"; }

// ---- spool ---------------------------------------------------------------

void spool_round_trip_keeps_order(void**) {
    std::string dir = make_dir();
    {
        Spool s(dir, 1 << 20);
        std::string err;
        for (int i = 0; i < 100; i++) assert_true(s.append(record(i), &err));
        assert_true(s.has_part());
        assert_true(s.seal(&err));
        assert_false(s.has_part());
        assert_int_equal(s.sealed_count(), 1);

        std::vector<std::string> recs;
        std::string claim;
        assert_true(s.claim_next(&recs, &claim, &err));
        assert_int_equal(recs.size(), 100);
        for (int i = 0; i < 100; i++) assert_string_equal(recs[i].c_str(), record(i).c_str());
        // A claimed file is no longer offered to anyone else.
        std::vector<std::string> again;
        std::string claim2;
        assert_false(s.claim_next(&again, &claim2, &err));
        s.release(claim);
    }
    assert_int_equal(names(dir).size(), 0);
    remove_dir(dir);
}

void spool_rotates_files_and_replays_oldest_first(void**) {
    std::string dir = make_dir();
    Spool s(dir, 64);  // tiny limit: a new file every couple of records
    std::string err;
    for (int i = 0; i < 20; i++) {
        assert_true(s.append(record(i), &err));
        usleep(1500);  // distinct millisecond names
    }
    assert_true(s.seal(&err));
    assert_true(s.sealed_count() > 3);
    int next = 0;
    std::vector<std::string> recs;
    std::string claim;
    while (s.claim_next(&recs, &claim, &err)) {
        for (const auto& r : recs) assert_string_equal(r.c_str(), record(next++).c_str());
        s.release(claim);
    }
    assert_int_equal(next, 20);
    remove_dir(dir);
}

void spool_ignores_a_torn_tail(void**) {
    std::string data = "5\nhello3\nabc7\nabc";  // last record cut short
    std::size_t torn = 0;
    auto recs = referral::parse_spool_records(data, &torn);
    assert_int_equal(recs.size(), 2);
    assert_string_equal(recs[0].c_str(), "hello");
    assert_string_equal(recs[1].c_str(), "abc");
    assert_int_equal(torn, 5);
    // Garbage where a length should be stops the parse, nothing invented.
    recs = referral::parse_spool_records("x\nabc", &torn);
    assert_int_equal(recs.size(), 0);
    assert_int_equal(torn, 5);
    recs = referral::parse_spool_records("99999999999\nabc", &torn);
    assert_int_equal(recs.size(), 0);
}

void spool_recovers_files_of_a_dead_process(void**) {
    std::string dir = make_dir();
    // A child writes two records and dies without sealing (a crash).
    pid_t pid = fork();
    if (pid == 0) {
        Spool s(dir, 1 << 20);
        std::string err;
        s.append(record(1), &err);
        s.append(record(2), &err);
        _exit(0);  // no destructor: the part file stays unsealed
    }
    int status = 0;
    waitpid(pid, &status, 0);
    Spool s(dir, 1 << 20);
    std::string err;
    std::vector<std::string> recs;
    std::string claim;
    assert_false(s.claim_next(&recs, &claim, &err));  // only a .part so far
    s.recover_orphans();
    assert_int_equal(s.sealed_count(), 1);
    assert_true(s.claim_next(&recs, &claim, &err));
    assert_int_equal(recs.size(), 2);

    // A claim held by a process that died is offered again.
    std::string dead_claim = claim.substr(0, claim.rfind('.', claim.size() - 7)) + "." +
                             std::to_string(pid) + ".claim";
    assert_int_equal(rename((dir + "/" + claim).c_str(), (dir + "/" + dead_claim).c_str()), 0);
    s.recover_orphans();
    assert_int_equal(s.sealed_count(), 1);
    assert_true(s.claim_next(&recs, &claim, &err));
    assert_int_equal(recs.size(), 2);
    s.release(claim);
    remove_dir(dir);
}

void spool_reports_an_unwritable_directory(void**) {
    Spool s("/nonexistent/referral-spool", 1024);
    std::string err;
    assert_false(s.append(record(1), &err));
    assert_true(err.find("/nonexistent/referral-spool") != std::string::npos);
}

// ---- outbox --------------------------------------------------------------

void outbox_acks_in_order_and_requeues_on_loss(void**) {
    Outbox o(1000);
    o.push("a", 0);
    o.push("bb", 7);
    o.push("ccc", 0);
    assert_int_equal(o.bytes(), 6);
    assert_int_equal(o.unsent(), 3);
    assert_string_equal(o.send_next(10).command.c_str(), "a");
    assert_string_equal(o.send_next(11).command.c_str(), "bb");
    assert_int_equal(o.inflight(), 2);
    assert_int_equal(o.oldest_inflight_ms(), 10);
    referral::OutboxEntry e = o.ack();
    assert_string_equal(e.command.c_str(), "a");
    assert_int_equal(o.bytes(), 5);
    // The connection drops: "bb" was written but not acknowledged.
    o.requeue();
    assert_int_equal(o.inflight(), 0);
    assert_int_equal(o.unsent(), 2);
    assert_int_equal(o.oldest_inflight_ms(), -1);
    assert_string_equal(o.send_next(20).command.c_str(), "bb");
    e = o.ack();
    assert_int_equal(e.claim, 7);
    auto rest = o.take_all();
    assert_int_equal(rest.size(), 1);
    assert_string_equal(rest.front().command.c_str(), "ccc");
    assert_true(o.empty());
    assert_int_equal(o.bytes(), 0);
}

void outbox_limit_is_in_bytes(void**) {
    Outbox o(10);
    assert_true(o.fits(10));
    o.push("12345678", 0);
    assert_true(o.fits(2));
    assert_false(o.fits(3));
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spool_round_trip_keeps_order),
        cmocka_unit_test(spool_rotates_files_and_replays_oldest_first),
        cmocka_unit_test(spool_ignores_a_torn_tail),
        cmocka_unit_test(spool_recovers_files_of_a_dead_process),
        cmocka_unit_test(spool_reports_an_unwritable_directory),
        cmocka_unit_test(outbox_acks_in_order_and_requeues_on_loss),
        cmocka_unit_test(outbox_limit_is_in_bytes),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

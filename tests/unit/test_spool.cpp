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

#include <csignal>
#include <cstdio>
#include <ctime>
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

constexpr std::int64_t kT = 1700000000000;

void make_old(const std::string& path) {
    struct timespec times[2];
    clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec -= 60;
    times[1] = times[0];
    utimensat(AT_FDCWD, path.c_str(), times, 0);
}

std::string only_file(const std::string& dir, const char* prefix) {
    for (const auto& n : names(dir)) {
        if (n.rfind(prefix, 0) == 0) return n;
    }
    return "";
}

void spool_round_trip_keeps_order(void**) {
    std::string dir = make_dir();
    {
        Spool s(dir, 1 << 20);
        std::string err;
        for (int i = 0; i < 100; i++) assert_true(s.append(record(i), kT + i, &err));
        assert_true(s.has_part());
        assert_true(s.seal(&err));
        assert_false(s.has_part());
        assert_int_equal(s.sealed_count(), 1);

        std::vector<std::string> recs;
        std::string claim;
        std::int64_t file_ms = 0;
        assert_true(s.claim_next(&recs, &claim, &file_ms, &err));
        assert_int_equal(file_ms, kT);  // dated by its first record
        assert_int_equal(recs.size(), 100);
        for (int i = 0; i < 100; i++) assert_string_equal(recs[i].c_str(), record(i).c_str());
        // A claimed file is no longer offered to anyone else.
        std::vector<std::string> again;
        std::string claim2;
        assert_false(s.claim_next(&again, &claim2, &file_ms, &err));
        s.release(claim);
    }
    assert_int_equal(names(dir).size(), 0);
    remove_dir(dir);
}

void spool_rotates_files_and_replays_oldest_first(void**) {
    std::string dir = make_dir();
    Spool s(dir, 64);  // tiny limit: a new file every couple of records
    std::string err;
    for (int i = 0; i < 20; i++) assert_true(s.append(record(i), kT + i, &err));
    assert_true(s.seal(&err));
    assert_true(s.sealed_count() > 3);
    int next = 0;
    std::vector<std::string> recs;
    std::string claim;
    std::int64_t file_ms = 0;
    while (s.claim_next(&recs, &claim, &file_ms, &err)) {
        for (const auto& r : recs) assert_string_equal(r.c_str(), record(next++).c_str());
        s.release(claim);
    }
    assert_int_equal(next, 20);
    remove_dir(dir);
}

void spool_orders_files_by_when_events_were_queued(void**) {
    // Events 3 and 4 reach the spool first (buffer full) while 1 and 2 wait
    // in memory; then Redis drops and 1 and 2 follow: replay gives 1 2 3 4.
    std::string dir = make_dir();
    Spool s(dir, 1 << 20);
    std::string err;
    assert_true(s.append(record(3), kT + 3, &err));
    assert_true(s.append(record(4), kT + 4, &err));
    assert_true(s.seal(&err));
    assert_true(s.append(record(1), kT + 1, &err));
    assert_true(s.append(record(2), kT + 2, &err));
    assert_true(s.seal(&err));
    std::vector<std::string> order;
    std::vector<std::string> recs;
    std::string claim;
    std::int64_t file_ms = 0;
    while (s.claim_next(&recs, &claim, &file_ms, &err)) {
        order.insert(order.end(), recs.begin(), recs.end());
        s.release(claim);
    }
    assert_int_equal(order.size(), 4);
    for (int i = 0; i < 4; i++) assert_string_equal(order[i].c_str(), record(i + 1).c_str());
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

void spool_leaves_a_live_writer_alone_and_recovers_it_once_dead(void**) {
    std::string dir = make_dir();
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    if (pid == 0) {
        Spool s(dir, 1 << 20);
        std::string err;
        s.append(record(1), kT, &err);
        s.append(record(2), kT, &err);
        if (write(ready[1], "x", 1) != 1) _exit(1);
        pause();  // killed below: never seals
        _exit(0);
    }
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    std::string part = only_file(dir, "w-");
    assert_false(part.empty());
    make_old(dir + "/" + part);

    Spool s(dir, 1 << 20);
    s.recover_orphans();
    assert_int_equal(s.sealed_count(), 0);  // its writer still holds it

    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    s.recover_orphans();
    assert_int_equal(s.sealed_count(), 1);
    std::string err;
    std::vector<std::string> recs;
    std::string claim;
    std::int64_t file_ms = 0;
    assert_true(s.claim_next(&recs, &claim, &file_ms, &err));
    assert_int_equal(recs.size(), 2);
    s.release(claim);
    close(ready[0]);
    close(ready[1]);
    remove_dir(dir);
}

void spool_returns_a_claim_nobody_holds_even_under_our_own_pid(void**) {
    // After a container restart a worker may get the pid of the one that
    // crashed mid-replay: the claim must still come back.
    std::string dir = make_dir();
    std::string claim = "s-0001700000000000-1-0000000001.spool." + std::to_string(getpid()) + ".claim";
    {
        FILE* f = std::fopen((dir + "/" + claim).c_str(), "w");
        assert_non_null(f);
        std::string rec = record(9);
        std::fprintf(f, "%zu\n%s", rec.size(), rec.c_str());
        std::fclose(f);
    }
    Spool s(dir, 1 << 20);
    s.recover_orphans();
    assert_int_equal(s.sealed_count(), 1);
    std::string err;
    std::vector<std::string> recs;
    std::string got;
    std::int64_t file_ms = 0;
    assert_true(s.claim_next(&recs, &got, &file_ms, &err));
    assert_int_equal(recs.size(), 1);
    assert_int_equal(file_ms, kT);
    // Our own live claim is not "recovered" from under us.
    s.recover_orphans();
    assert_int_equal(s.sealed_count(), 0);
    s.unclaim(got);
    assert_int_equal(s.sealed_count(), 1);
    remove_dir(dir);
}

void spool_reports_an_unwritable_directory(void**) {
    Spool s("/nonexistent/referral-spool", 1024);
    std::string err;
    assert_false(s.append(record(1), kT, &err));
    assert_true(err.find("/nonexistent/referral-spool") != std::string::npos);
}

// ---- outbox --------------------------------------------------------------

void outbox_acks_in_order_and_requeues_on_loss(void**) {
    Outbox o(1000);
    o.push("a", 0, 1);
    o.push("bb", 7, 2);
    o.push("ccc", 0, 3);
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
    o.push("12345678", 0, 1);
    assert_true(o.fits(2));
    assert_false(o.fits(3));
}

}  // namespace

void outbox_with_replicas_keeps_stored_entries_until_a_wait_confirms(void**) {
    Outbox o(1000);
    for (const char* c : {"a", "b", "c", "d"}) o.push(c, 0, 1);
    for (int i = 0; i < 4; i++) o.send_next(10 + i);
    // The primary stored "a" and "b": they stay, and no longer count for
    // the reply timeout (a WAIT may take its time).
    o.store();
    o.store();
    assert_int_equal(o.stored(), 2);
    assert_int_equal(o.size(), 4);
    assert_int_equal(o.oldest_inflight_ms(), 12);
    // "c" is refused: it leaves, the stored ones before it stay.
    referral::OutboxEntry e = o.reject();
    assert_string_equal(e.command.c_str(), "c");
    assert_int_equal(o.stored(), 2);
    assert_int_equal(o.inflight(), 3);
    // A WAIT confirms the stored ones, oldest first.
    assert_string_equal(o.ack().command.c_str(), "a");
    assert_string_equal(o.ack().command.c_str(), "b");
    assert_int_equal(o.stored(), 0);
    // Stored but not confirmed when the connection drops: written again.
    o.store();
    o.requeue();
    assert_int_equal(o.stored(), 0);
    assert_int_equal(o.unsent(), 1);
    assert_string_equal(o.send_next(30).command.c_str(), "d");
}

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spool_round_trip_keeps_order),
        cmocka_unit_test(spool_rotates_files_and_replays_oldest_first),
        cmocka_unit_test(spool_orders_files_by_when_events_were_queued),
        cmocka_unit_test(spool_ignores_a_torn_tail),
        cmocka_unit_test(spool_leaves_a_live_writer_alone_and_recovers_it_once_dead),
        cmocka_unit_test(spool_returns_a_claim_nobody_holds_even_under_our_own_pid),
        cmocka_unit_test(spool_reports_an_unwritable_directory),
        cmocka_unit_test(outbox_acks_in_order_and_requeues_on_loss),
        cmocka_unit_test(outbox_limit_is_in_bytes),
        cmocka_unit_test(outbox_with_replicas_keeps_stored_entries_until_a_wait_confirms),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

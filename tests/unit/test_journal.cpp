// Unit tests for the journal (core/journal.h) and the spool's bound
// (max_size): a journal left by a process killed with SIGKILL is recovered
// by the spool and replayed in order; settled records are not replayed; a
// spool at max_size refuses new records until it has room again.
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

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "core/journal.h"
#include "core/spool.h"

using referral::Journal;
using referral::Spool;

namespace {

std::string make_dir() {
    char tmpl[] = "/tmp/referral-journal-test-XXXXXX";
    char* d = mkdtemp(tmpl);
    assert_non_null(d);
    return d;
}

std::vector<std::string> names(const std::string& dir, const char* prefix = "") {
    std::vector<std::string> out;
    DIR* d = opendir(dir.c_str());
    while (struct dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n[0] != '.' && n.rfind(prefix, 0) == 0) out.push_back(n);
    }
    closedir(d);
    return out;
}

void remove_dir(const std::string& dir) {
    for (const auto& n : names(dir)) unlink((dir + "/" + n).c_str());
    rmdir(dir.c_str());
}

// Orphans younger than 2 s are left alone (they may not be locked yet).
void age_all(const std::string& dir) {
    struct timespec times[2];
    clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec -= 60;
    times[1] = times[0];
    for (const auto& n : names(dir)) utimensat(AT_FDCWD, (dir + "/" + n).c_str(), times, 0);
}

// Moves every file's date back by `seconds`, keeping their order (unlike
// age_all, which gives them all one date).
void shift_dates(const std::string& dir, long seconds) {
    for (const auto& n : names(dir)) {
        struct stat st;
        const std::string path = dir + "/" + n;
        assert_int_equal(stat(path.c_str(), &st), 0);
        struct timespec times[2] = {st.st_atim, st.st_mtim};
        times[0].tv_sec -= seconds;
        times[1].tv_sec -= seconds;
        assert_int_equal(utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
    }
}

std::string record(int i) { return "*2\r\n$4\r\nPING\r\n$" + std::to_string(std::to_string(i).size()) + "\r\n" + std::to_string(i) + "\r\n"; }

// Everything the spool has to replay, oldest file first.
std::vector<std::string> replay_all(Spool* s) {
    std::vector<std::string> all, recs;
    std::string claim, err;
    std::int64_t ms = 0;
    while (s->claim_next(&recs, &claim, &ms, &err)) {
        all.insert(all.end(), recs.begin(), recs.end());
        s->release(claim);
    }
    return all;
}

// A child journals `n` records in segments of `segment` bytes, settles
// those of its first segment, and is killed with SIGKILL. Returns the
// records that were not settled.
std::vector<std::string> journal_then_die(const std::string& dir, int n, std::size_t segment,
                                          std::size_t* first_segment_records) {
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    // The child tells how many records its first segment had.
    pid_t pid = fork();
    if (pid == 0) {
        Journal j(dir, segment);
        std::string err;
        std::vector<std::uint64_t> seg;
        for (int i = 0; i < n; i++) seg.push_back(j.add(record(i), &err));
        std::size_t settled = 0;
        for (std::uint64_t s : seg) {
            if (s == seg.front()) {
                j.settle(s);
                settled++;
            }
        }
        if (j.segments() < 2 || write(ready[1], &settled, sizeof(settled)) != sizeof(settled)) _exit(1);
        pause();  // killed: no destructor, nothing flushed or synced
        _exit(0);
    }
    std::size_t settled = 0;
    assert_int_equal(read(ready[0], &settled, sizeof(settled)), sizeof(settled));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    close(ready[0]);
    close(ready[1]);
    *first_segment_records = settled;
    std::vector<std::string> left;
    for (int i = static_cast<int>(settled); i < n; i++) left.push_back(record(i));
    return left;
}

void journal_of_a_killed_process_is_replayed_in_order(void**) {
    std::string dir = make_dir();
    std::size_t first = 0;
    std::vector<std::string> expect = journal_then_die(dir, 300, 1024, &first);
    assert_true(first > 0);
    assert_true(expect.size() > first);  // several segments are left
    assert_true(names(dir, "j-").size() >= 2);

    age_all(dir);
    Spool s(dir, 1 << 20);
    assert_int_equal(s.recover_orphans(), expect.size());
    assert_int_equal(names(dir, "j-").size(), 0);
    // The first segment was all settled: deleted, not replayed.
    assert_true(replay_all(&s) == expect);
    assert_int_equal(s.recover_orphans(), 0);  // taken over once
    remove_dir(dir);
}

void journal_of_a_live_process_is_left_alone(void**) {
    std::string dir = make_dir();
    Journal j(dir, 4096);
    std::string err;
    assert_true(j.add(record(1), &err) > 0);
    age_all(dir);
    Spool s(dir, 1 << 20);
    assert_int_equal(s.recover_orphans(), 0);  // we hold its lock
    assert_int_equal(names(dir, "j-").size(), 1);
    remove_dir(dir);
}

void journal_starts_over_once_all_is_settled(void**) {
    std::string dir = make_dir();
    {
        Journal j(dir, 4096);
        std::string err;
        for (int i = 0; i < 5; i++) j.settle(j.add(record(i), &err));
        assert_int_equal(j.live(), 0);
        for (int i = 5; i < 8; i++) assert_true(j.add(record(i), &err) > 0);
        assert_int_equal(j.live(), 3);
        assert_int_equal(j.segments(), 1);
    }  // closed with records live: the file stays, unlocked
    age_all(dir);
    Spool s(dir, 1 << 20);
    assert_int_equal(s.recover_orphans(), 3);
    // Only what was written since it started over, not the stale bytes of
    // the settled records behind it.
    std::vector<std::string> expect = {record(5), record(6), record(7)};
    assert_true(replay_all(&s) == expect);
    remove_dir(dir);
}

void journal_with_nothing_live_is_deleted(void**) {
    std::string dir = make_dir();
    {
        Journal j(dir, 1024);
        std::string err;
        std::vector<std::uint64_t> seg;
        for (int i = 0; i < 200; i++) seg.push_back(j.add(record(i), &err));
        assert_true(j.segments() > 2);
        for (std::uint64_t s : seg) j.settle(s);
        assert_int_equal(j.live(), 0);
        // The full ones went as they emptied, but for one kept as a spare.
        assert_int_equal(j.segments(), 2);
        assert_int_equal(names(dir, "j-").size(), 2);
    }
    assert_int_equal(names(dir).size(), 0);  // the spare too
    remove_dir(dir);
}

// Steady traffic (each record settled a few records later) goes round two
// files, the spare taking over from a full segment, instead of a new file
// per segment. What a killed process leaves of them is its unsettled
// records, in order, after at most the settled ones that share a segment
// with them (replayed again: the consumer knows their ids), and none of
// the stale bytes of a segment's earlier turns.
void journal_reuses_a_settled_segment_and_replays_only_live_records(void**) {
    // Stopped at every point of a few segments' turns, so that the live
    // records are sometimes in one file and sometimes across the two.
    for (int n = 1000; n < 1200; n++) {
        std::string dir = make_dir();
        std::vector<std::string> live;
        {
            Journal j(dir, 1024);
            std::string err;
            std::vector<std::pair<std::uint64_t, std::string>> pending;
            std::vector<std::string> seen;
            for (int i = 0; i < n; i++) {
                pending.emplace_back(j.add(record(i), &err), record(i));
                assert_true(pending.back().first > 0);
                if (pending.size() > 20) {
                    j.settle(pending.front().first);
                    pending.erase(pending.begin());
                }
                assert_true(j.segments() <= 2);
                if (n == 1000) {
                    for (const auto& f : names(dir, "j-")) {
                        bool known = false;
                        for (const auto& k : seen) known = known || k == f;
                        if (!known) seen.push_back(f);
                    }
                }
            }
            // 1000 records of ~20 bytes: 20 KB through 1 KB files, in the
            // two first opened; renamed as they take turns.
            if (n == 1000) assert_true(seen.size() > 2 && j.segments() == 2);
            for (const auto& p : pending) live.push_back(p.second);
        }  // closed with records live: those files stay, unlocked (the spare goes)
        assert_true(names(dir, "j-").size() <= 2);
        age_all(dir);  // one date for all: the names must give the order
        Spool s(dir, 1 << 20);
        const std::size_t recovered = s.recover_orphans();
        std::vector<std::string> replayed = replay_all(&s);
        assert_int_equal(replayed.size(), recovered);
        // The last records written, consecutive and oldest first, the live
        // ones among them, no more than two segments' worth.
        assert_true(replayed.size() >= live.size());
        assert_true(replayed.size() <= 2 * 1024 / record(0).size());
        const int first = n - static_cast<int>(replayed.size());
        for (std::size_t k = 0; k < replayed.size(); k++) {
            if (replayed[k] != record(first + static_cast<int>(k))) fail_msg("n=%d: record %zu out of order", n, k);
        }
        remove_dir(dir);
    }
}

// A reused segment is dated when it comes back: a recovery orders a dead
// worker's segments by date first, and writing the pages of a reused file
// no longer dates it.
void journal_dates_a_reused_segment_as_new(void**) {
    std::string dir = make_dir();
    std::vector<std::string> expect;
    {
        Journal j(dir, 1024);
        std::string err;
        std::vector<std::uint64_t> first;
        int i = 0;
        while (j.segments() < 2) first.push_back(j.add(record(i++), &err));
        const std::uint64_t b = first.back();  // the first record of the second segment
        first.pop_back();
        expect.push_back(record(i - 1));
        for (std::uint64_t seg : first) j.settle(seg);  // the first segment is the spare now
        assert_int_equal(j.segments(), 2);
        usleep(50 * 1000);  // well past the granularity of file dates
        struct timespec reused_at;
        clock_gettime(CLOCK_REALTIME, &reused_at);
        for (;;) {
            const std::uint64_t seg = j.add(record(i), &err);
            expect.push_back(record(i++));
            if (seg != b) break;  // the spare took over: the second segment is full
        }
        assert_int_equal(j.segments(), 2);
        // Under its new name (the highest number), dated no earlier than
        // its return, give or take the file clock's tick; the second
        // segment's date is 50 ms older.
        std::vector<std::string> files = names(dir, "j-");
        assert_int_equal(files.size(), 2);
        std::sort(files.begin(), files.end());
        struct stat st;
        assert_int_equal(stat((dir + "/" + files.back()).c_str(), &st), 0);
        const long long dated_ms = st.st_mtim.tv_sec * 1000LL + st.st_mtim.tv_nsec / 1000000;
        const long long reused_ms = reused_at.tv_sec * 1000LL + reused_at.tv_nsec / 1000000;
        assert_true(dated_ms >= reused_ms - 20);
    }
    shift_dates(dir, 60);  // old enough to be recovered, order kept
    Spool s(dir, 1 << 20);
    assert_int_equal(s.recover_orphans(), expect.size());
    assert_true(replay_all(&s) == expect);
    remove_dir(dir);
}

void journal_gives_a_large_record_a_segment_of_its_own(void**) {
    std::string dir = make_dir();
    {
        Journal j(dir, 1024);
        std::string err;
        std::string big(5000, 'x');
        assert_true(j.add(record(1), &err) > 0);
        assert_true(j.add(big, &err) > 0);
        assert_true(j.add(record(2), &err) > 0);
    }
    age_all(dir);
    Spool s(dir, 1 << 20);
    assert_int_equal(s.recover_orphans(), 3);
    std::vector<std::string> expect = {record(1), std::string(5000, 'x'), record(2)};
    assert_true(replay_all(&s) == expect);
    remove_dir(dir);
}

void spool_refuses_records_past_max_size_until_there_is_room(void**) {
    std::string dir = make_dir();
    const std::size_t max = 64 * 1024;
    Spool s(dir, 16 * 1024, max);
    s.recover_orphans();
    std::string err;
    std::string rec(1000, 'r');
    int taken = 0;
    while (s.append(rec, 1700000000000 + taken, &err)) taken++;
    assert_true(s.full());
    assert_true(taken > 0);
    assert_true(static_cast<std::size_t>(taken) * (rec.size() + 5) <= max);
    assert_true(static_cast<std::size_t>(taken + 1) * (rec.size() + 5) > max);
    assert_true(s.seal(&err));
    // Still full as measured from the directory.
    s.recover_orphans();
    assert_false(s.append(rec, 1700000000000, &err));
    // A replayed file makes room.
    std::vector<std::string> recs;
    std::string claim;
    std::int64_t ms = 0;
    assert_true(s.claim_next(&recs, &claim, &ms, &err));
    s.release(claim);
    s.recover_orphans();
    assert_true(s.append(rec, 1700000000000, &err));
    assert_false(s.full());
    remove_dir(dir);
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(journal_of_a_killed_process_is_replayed_in_order),
        cmocka_unit_test(journal_of_a_live_process_is_left_alone),
        cmocka_unit_test(journal_starts_over_once_all_is_settled),
        cmocka_unit_test(journal_with_nothing_live_is_deleted),
        cmocka_unit_test(journal_reuses_a_settled_segment_and_replays_only_live_records),
        cmocka_unit_test(journal_dates_a_reused_segment_as_new),
        cmocka_unit_test(journal_gives_a_large_record_a_segment_of_its_own),
        cmocka_unit_test(spool_refuses_records_past_max_size_until_there_is_room),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

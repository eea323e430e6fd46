// bench/click_path.cpp — the nginx-free work the module does for one click,
// piece by piece, so a change to one of them shows without nginx, wrk and
// Redis sharing the cores (bench/edge.sh measures the whole).
//
// Each piece runs in a loop and is printed in ns per call and as a ratio to
// the baseline of the same run: copying the click's XADD bytes into a
// std::string, about the least a worker can do with an event.
//
//   sign_cookie            the Set-Cookie value (HMAC-SHA256, key schedule done once)
//   random_id              a new visitor's id
//   time_ordered_id        the event's id
//   Xadd + encode          the event as one RESP command
//   journal add + settle   the journal write and its release 64 events later,
//                          as a connection with 64 XADDs in flight does
//   outbox push + ack      the in-memory queue, 64 in flight
//
// Usage: build/bench_click_path [iterations, default 2000000]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/cookie.h"
#include "core/event.h"
#include "core/hmac.h"
#include "core/journal.h"
#include "core/outbox.h"
#include "core/random.h"

namespace {

volatile std::size_t sink;  // keeps the optimiser from dropping the work

template <typename F>
double ns_per_call(long n, F&& f) {
    for (long i = 0; i < n / 10; i++) f(i);  // warm caches and branch predictors
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; i++) f(i);
    const auto t1 = std::chrono::steady_clock::now();
    return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
    const long n = argc > 1 ? std::atol(argv[1]) : 2000000;
    if (n <= 0) {
        std::fprintf(stderr, "usage: %s [iterations]\n", argv[0]);
        return 2;
    }
    unsigned char secret[48];
    for (unsigned i = 0; i < sizeof(secret); i++) secret[i] = static_cast<unsigned char>(i * 7);
    const referral::HmacSha256 hmac(secret, sizeof(secret));
    const referral::Key key{secret, sizeof(secret), &hmac};
    char visitor[referral::kIdLen];
    char id[referral::kIdLen];
    if (!referral::random_id(visitor) || !referral::time_ordered_id(1764000000000, id)) return 1;

    // The click bench/edge.sh sends.
    referral::Event e;
    e.id = std::string_view(id, sizeof(id));
    e.type = "click";
    e.ts_ms = 1764000000000;
    e.code = "bench_code_42";
    e.visitor = std::string_view(visitor, sizeof(visitor));
    e.first_ts_ms = e.ts_ms;
    e.ip = "127.0.0.1";
    e.ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    e.url = "/pricing?ref=bench_code_42";
    e.referer = "https://news.example.com/item?id=1";
    e.host = "www.example.com";
    const referral::Xadd click("referral:events", e);
    std::vector<char> wire(click.size());
    const std::string_view command(wire.data(), click.encode(wire.data()));

    char dir[] = "/tmp/referral-bench-click-XXXXXX";
    if (mkdtemp(dir) == nullptr) {
        std::perror("mkdtemp");
        return 1;
    }

    struct Row {
        const char* name;
        double ns;
    };
    std::vector<Row> rows;
    const double base = ns_per_call(n, [&](long) {
        std::string s(command);
        sink = s.size();
    });
    rows.push_back({"sign_cookie", ns_per_call(n, [&](long i) {
                        char out[referral::kCookieMaxLen];
                        sink = referral::sign_cookie(e.code, e.visitor, e.ts_ms + i, key, out, sizeof(out));
                    })});
    rows.push_back({"random_id", ns_per_call(n, [&](long) {
                        char out[referral::kIdLen];
                        sink = referral::random_id(out) ? out[0] : 0;
                    })});
    rows.push_back({"time_ordered_id", ns_per_call(n, [&](long i) {
                        char out[referral::kIdLen];
                        sink = referral::time_ordered_id(e.ts_ms + i, out) ? out[0] : 0;
                    })});
    rows.push_back({"Xadd + encode", ns_per_call(n, [&](long i) {
                        referral::Event copy = e;
                        copy.ts_ms += i;
                        const referral::Xadd xadd("referral:events", copy);
                        sink = xadd.encode(wire.data());
                    })});
    {
        referral::Journal journal(dir, 1 << 20);  // a 4 MB referral_buffer's segments
        std::deque<std::uint64_t> inflight;
        std::string err;
        rows.push_back({"journal add + settle", ns_per_call(n, [&](long) {
                            inflight.push_back(journal.add(command, &err));
                            if (inflight.size() > 64) {
                                journal.settle(inflight.front());
                                inflight.pop_front();
                            }
                        })});
        for (std::uint64_t s : inflight) journal.settle(s);
    }
    {
        referral::Outbox outbox(std::size_t{1} << 30);
        rows.push_back({"outbox push + ack", ns_per_call(n, [&](long) {
                            outbox.push(std::string(command), 0, 1);
                            outbox.send_next(1);
                            if (outbox.size() > 64) sink = outbox.ack().command.size();
                        })});
    }
    rmdir(dir);

    std::printf("click path, %ld calls each, a %zu-byte click XADD\n", n, command.size());
    std::printf("%-22s %8.1f ns   1.00 (baseline: copy the XADD into a std::string)\n", "baseline", base);
    double total = 0;
    for (const Row& r : rows) {
        std::printf("%-22s %8.1f ns  %5.2f\n", r.name, r.ns, r.ns / base);
        total += r.ns;
    }
    std::printf("%-22s %8.1f ns  %5.2f\n", "sum", total, total / base);
    return 0;
}

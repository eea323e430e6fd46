// The delivery policy of the module's path of events to Redis: which replies
// acknowledge, which are retried and which give the event up; the
// connection's states, its timeouts and reconnect backoff; where a new event
// goes (memory, spool, nowhere); what an exiting worker does with what it
// holds; and what happens when moving the outbox to the spool only partly
// succeeds. Plain C++ with no I/O: module/referral_delivery.cpp owns the
// hiredis connection, the timers and the files, and asks this what to do.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "core/outbox.h"

namespace referral {

// ------------------------------------------------------------------ replies

enum class Reply { acked, retry, reject };

// A non-error reply acknowledges the oldest event in flight. A plain "ERR"
// is about this one command (a malformed record, e.g. from a damaged spool
// file) and would fail forever, holding up every event behind it: reject.
// Every other error (LOADING, OOM, READONLY, NOAUTH, WRONGTYPE, MASTERDOWN,
// "ERR unknown command" from an old Redis, ...) is the server's state:
// close the connection, keep the event, retry.
Reply classify_reply(bool is_error, std::string_view error) noexcept;

// ------------------------------------------------------ connection and backoff

enum class Link { idle, connecting, ready, failing };

struct Timing {
    static constexpr std::int64_t kBackoffMinMs = 500;
    static constexpr std::int64_t kBackoffMaxMs = 10000;
    static constexpr std::int64_t kConnectTimeoutMs = 3000;
    static constexpr std::int64_t kReplyTimeoutMs = 5000;
    // Without a spool, an exiting worker waits this long for Redis to come
    // back before it gives up on what it still holds.
    static constexpr std::int64_t kExitGraceMs = 10000;
    // replicas=N: how long one WAIT may block the connection on Redis's
    // side; while fewer replicas answer, a new WAIT follows each one.
    static constexpr std::int64_t kWaitTimeoutMs = 1000;
};

// replicas=N: a WAIT's reply (the number of replicas that hold every write
// before it) confirms the stored events when it reaches N.
inline bool replicas_confirm(long long replicas, long long wanted) noexcept {
    return replicas >= wanted;
}

// Reconnect delays: from 500 ms, times 1.5 per failure, at most 10 s, plus
// up to a quarter of jitter so workers do not reconnect in step. A
// connection that held for longer than the longest delay starts afresh; one
// that Redis accepts and drops at once keeps backing off.
class Backoff {
public:
    // `held_ms`: how long the failed connection had been ready, or -1 when
    // it never was. `random`: any value from a random source, for jitter.
    std::int64_t after_failure(std::int64_t held_ms, std::uint64_t random) noexcept;
    std::int64_t current() const noexcept { return current_; }

private:
    std::int64_t current_ = 0;
};

// The reason to close the connection now, or nullptr: a connect that takes
// too long, or a reply that does not come.
const char* timed_out(Link link, std::int64_t now_ms, std::int64_t connect_started_ms,
                      std::int64_t oldest_inflight_ms) noexcept;

// The reconnect timer fired without a connection: connect again when there
// is something to send (memory or spool), else wait idle (connections open
// on demand).
enum class Reconnect { connect, idle };
Reconnect on_reconnect_timer(bool outbox_empty, bool spool_backlog) noexcept;

// ------------------------------------------------------------- a new event

// With a spool, a new event goes to disk first while Redis is failing,
// while older spooled events wait (to keep the order), or when memory is
// full. Otherwise, or when that write fails: memory if it fits, else drop.
enum class Route { spool, memory, drop };
Route route_event(bool has_spool, Link link, bool backlog, bool fits, bool spool_failed) noexcept;

// -------------------------------------------------------------------- exit

// One tick of an exiting worker (ngx_exiting) that still holds events.
enum class ExitStep { wait, spool_all, drop_all };
ExitStep exit_step(bool has_spool, Link link, bool outbox_empty, std::int64_t exiting_for_ms) noexcept;

// ------------------------------------------------- moving memory to the spool

// The outcome of writing every entry of the outbox to the spool (an outage,
// an exit). The entries that could not be written stay in memory (the
// caller pushes `kept` back); a replayed entry (claim != 0) that is written
// again was already counted as spooled once.
//
// Claims (spool files being replayed) whose unacknowledged records were
// all rewritten can be released; if any record could not be written the
// claims are put back whole instead, so nothing is lost (their acknowledged
// records come again: event ids make that harmless downstream).
struct SpoolMove {
    std::size_t moved = 0;        // written: leave memory
    std::size_t first_time = 0;   // of those, never on disk before
    std::vector<OutboxEntry> kept;
    bool release_claims = true;   // false: unclaim them
};

// write(const OutboxEntry&) -> bool, in order.
template <typename Entries, typename Write>
SpoolMove move_to_spool(Entries&& entries, Write&& write) {
    SpoolMove m;
    for (auto& e : entries) {
        if (write(static_cast<const OutboxEntry&>(e))) {
            m.moved++;
            if (e.claim == 0) m.first_time++;
            continue;
        }
        m.release_claims = false;
        e.claim = 0;  // its claim is put back whole; this copy is on its own
        m.kept.push_back(std::move(e));
    }
    return m;
}

}  // namespace referral

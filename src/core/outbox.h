// A worker's events that Redis has not acknowledged yet, in order.
//
// The front `inflight` entries were written to the current Redis connection;
// Redis answers a pipeline in order, so each reply acknowledges the front.
// When the connection is lost every entry becomes unsent again and is
// written anew on the next one: an event may reach Redis twice, never zero
// times, and its unique id lets the consumer ignore the second copy.
//
// With `replicas=N` a reply only says the primary stored the event: the
// front `stored` entries wait for a WAIT to confirm that N replicas hold
// them before they leave.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

namespace referral {

struct OutboxEntry {
    std::string command;         // the complete RESP XADD
    std::uint64_t claim = 0;     // spool claim it was replayed from, 0 if none
    std::int64_t queued_ms = 0;  // when the event was first queued (orders the spool)
    std::int64_t sent_ms = 0;    // when it was written to the connection
    std::uint64_t journal = 0;   // journal segment holding it (core/journal.h), 0 if none
};

class Outbox {
public:
    explicit Outbox(std::size_t limit) : limit_(limit) {}

    bool fits(std::size_t bytes) const { return bytes_ + bytes <= limit_; }
    bool empty() const { return entries_.empty(); }
    std::size_t size() const { return entries_.size(); }
    std::size_t bytes() const { return bytes_; }
    std::size_t limit() const { return limit_; }
    std::size_t inflight() const { return inflight_; }
    std::size_t unsent() const { return entries_.size() - inflight_; }
    std::size_t stored() const { return stored_; }

    void push(std::string command, std::uint64_t claim, std::int64_t queued_ms,
              std::uint64_t journal = 0) {
        bytes_ += command.size();
        entries_.push_back(OutboxEntry{std::move(command), claim, queued_ms, 0, journal});
    }

    // The next entry to write; it counts as in flight from now on.
    OutboxEntry& send_next(std::int64_t now_ms) {
        OutboxEntry& e = entries_[inflight_++];
        e.sent_ms = now_ms;
        return e;
    }

    // Redis acknowledged the oldest entry in flight (inflight() > 0), or,
    // with replicas, a WAIT confirmed the oldest stored one.
    OutboxEntry ack() {
        OutboxEntry e = std::move(entries_.front());
        entries_.pop_front();
        bytes_ -= e.command.size();
        inflight_--;
        if (stored_ > 0) stored_--;
        return e;
    }

    // Replicas: the primary stored the oldest entry in flight that it had
    // not answered for yet (inflight() > stored()); it stays until a WAIT.
    void store() { stored_++; }

    // Redis refused the oldest entry in flight it had not answered for
    // (inflight() > stored()): it leaves, the stored ones before it stay.
    OutboxEntry reject() {
        auto it = entries_.begin() + static_cast<std::ptrdiff_t>(stored_);
        OutboxEntry e = std::move(*it);
        entries_.erase(it);
        bytes_ -= e.command.size();
        inflight_--;
        return e;
    }

    // Time the oldest entry still waiting for a reply was written, or -1.
    // Stored entries waiting for replicas do not count: WAIT has a timeout.
    std::int64_t oldest_inflight_ms() const {
        return inflight_ > stored_ ? entries_[stored_].sent_ms : -1;
    }

    // The connection is gone: nothing is in flight any more (what was
    // stored but not confirmed is written again).
    void requeue() {
        inflight_ = 0;
        stored_ = 0;
    }

    // Removes and returns every entry (to be spooled), oldest first.
    std::deque<OutboxEntry> take_all() {
        std::deque<OutboxEntry> all;
        all.swap(entries_);
        bytes_ = 0;
        inflight_ = 0;
        stored_ = 0;
        return all;
    }

private:
    std::deque<OutboxEntry> entries_;
    std::size_t inflight_ = 0;
    std::size_t stored_ = 0;
    std::size_t bytes_ = 0;
    std::size_t limit_;
};

}  // namespace referral

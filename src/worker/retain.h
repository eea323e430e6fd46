// `retain` (SPEC "Abuse and privacy rules in the worker"): where the
// stream may be trimmed (XTRIM MINID) without removing an entry that any
// consumer group still needs.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace referral::worker {

struct StreamId {
    std::uint64_t ms = 0, seq = 0;
    bool operator<(const StreamId& o) const { return ms < o.ms || (ms == o.ms && seq < o.seq); }
};

std::optional<StreamId> parse_stream_id(std::string_view s);
std::string to_string(const StreamId& id);

// What a group still needs: its oldest pending entry when it has one,
// else everything after its last delivered id (that one kept too).
struct GroupFloor {
    std::string oldest_pending;  // empty: nothing pending
    std::string last_delivered;  // "0-0" when it read nothing
};

// The MINID to trim at: entries older than `cutoff_ms` that no group
// still needs. nullopt when nothing may go (no group, an id unreadable).
std::optional<StreamId> trim_point(const std::vector<GroupFloor>& groups, std::int64_t cutoff_ms);

}  // namespace referral::worker

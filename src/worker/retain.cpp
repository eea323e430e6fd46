#include "worker/retain.h"

#include <algorithm>

namespace referral::worker {

std::optional<StreamId> parse_stream_id(std::string_view s) {
    StreamId id;
    std::size_t dash = s.find('-');
    std::string_view ms = s.substr(0, dash), seq = dash == std::string_view::npos ? "0" : s.substr(dash + 1);
    auto num = [](std::string_view d, std::uint64_t* out) {
        if (d.empty() || d.size() > 20) return false;
        std::uint64_t v = 0;
        for (char c : d) {
            if (c < '0' || c > '9') return false;
            std::uint64_t next = v * 10 + static_cast<std::uint64_t>(c - '0');
            if (next < v) return false;
            v = next;
        }
        *out = v;
        return true;
    };
    if (!num(ms, &id.ms) || !num(seq, &id.seq)) return std::nullopt;
    return id;
}

std::string to_string(const StreamId& id) { return std::to_string(id.ms) + "-" + std::to_string(id.seq); }

std::optional<StreamId> trim_point(const std::vector<GroupFloor>& groups, std::int64_t cutoff_ms) {
    if (groups.empty() || cutoff_ms <= 0) return std::nullopt;  // nobody reads it: not ours to judge
    StreamId point{static_cast<std::uint64_t>(cutoff_ms), 0};
    for (const GroupFloor& g : groups) {
        auto need = parse_stream_id(g.oldest_pending.empty() ? g.last_delivered : g.oldest_pending);
        if (!need) return std::nullopt;
        point = std::min(point, *need);
    }
    if (point.ms == 0 && point.seq == 0) return std::nullopt;
    return point;
}

}  // namespace referral::worker

// What `referral_status` answers: the totals over every nginx worker, as
// JSON (the default) or as Prometheus text format 0.0.4, and which of the
// two an Accept header asks for. Plain C++: the module sums its shared
// memory slots into StatusTotals and hands the rendering over to this.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace referral {

// One worker's view of Redis. The numbering is stored in shared memory.
enum class RedisState : std::uint8_t { idle = 0, connecting = 1, connected = 2, disconnected = 3 };
constexpr std::size_t kRedisStates = 4;
const char* to_string(RedisState s) noexcept;

struct StatusTotals {
    // Counters: monotonic, kept across worker crashes and reloads.
    std::uint64_t sent = 0;
    std::uint64_t spooled = 0;
    std::uint64_t replayed = 0;
    std::uint64_t dropped = 0;
    std::uint64_t clicks = 0;
    std::uint64_t conversions = 0;
    std::uint64_t malformed_conversions = 0;
    std::uint64_t invalid_codes = 0;
    std::uint64_t rejected_cookies = 0;
    std::uint64_t skipped = 0;
    // Gauges: from the worker processes alive now only.
    std::uint64_t buffered = 0;
    std::uint64_t workers = 0;
    std::uint64_t redis[kRedisStates] = {};  // live workers in each state
};

// The one word JSON's "redis" gives for all workers: "disconnected" when
// any worker cannot reach Redis, else "connecting" when any is on its way,
// else "connected" when any is, else "idle" (no worker had anything to send
// yet: connections open lazily).
RedisState overall(const StatusTotals& t) noexcept;

// Prometheus when `format` is "prometheus"; JSON when it is "json"; else
// Prometheus when Accept prefers text/plain or application/openmetrics-text
// to application/json (each type's weight from its most specific matching
// range, exact, then type/*, then */*; a tie keeps JSON, the default).
bool wants_prometheus(std::string_view format, std::string_view accept) noexcept;

constexpr std::size_t kStatusMaxLen = 4096;  // either rendering fits
constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

// Write the body to out (capacity cap, kStatusMaxLen is enough) and return
// its length, 0 when it does not fit.
std::size_t render_json(const StatusTotals& t, char* out, std::size_t cap) noexcept;
std::size_t render_prometheus(const StatusTotals& t, char* out, std::size_t cap) noexcept;

}  // namespace referral

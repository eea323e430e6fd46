#include "core/status.h"

#include <cinttypes>
#include <cstdarg>
#include <cstdio>

namespace referral {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool iequal(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

// "q=0.5" -> 500; anything malformed counts as 1 (RFC 9110 weights are
// 0 to 1 with at most three decimals).
int parse_q(std::string_view v) {
    if (v.empty() || (v[0] != '0' && v[0] != '1')) return 1000;
    int q = (v[0] - '0') * 1000;
    if (v.size() == 1) return q;
    if (v[1] != '.' || v.size() > 5) return 1000;
    int scale = 100;
    for (std::size_t i = 2; i < v.size(); i++, scale /= 10) {
        if (v[i] < '0' || v[i] > '9') return 1000;
        q += (v[i] - '0') * scale;
    }
    return q > 1000 ? 1000 : q;
}

// The weight Accept gives `type` ("text/plain"): that of the most specific
// range matching it, -1 when none does.
int weight(std::string_view accept, std::string_view type) {
    const std::string_view major = type.substr(0, type.find('/'));
    int best = -1, best_rank = -1;
    while (!accept.empty()) {
        std::size_t comma = accept.find(',');
        std::string_view item = accept.substr(0, comma);
        accept = comma == std::string_view::npos ? std::string_view() : accept.substr(comma + 1);
        std::size_t semi = item.find(';');
        std::string_view range = trim(item.substr(0, semi));
        int q = 1000;
        while (semi != std::string_view::npos) {
            item = item.substr(semi + 1);
            semi = item.find(';');
            std::string_view param = trim(item.substr(0, semi));
            if (param.size() >= 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
                q = parse_q(param.substr(2));
            }
        }
        int rank = -1;
        if (iequal(range, type)) {
            rank = 2;
        } else if (range.size() == major.size() + 2 && iequal(range.substr(0, major.size()), major) &&
                   range.substr(major.size()) == "/*") {
            rank = 1;
        } else if (range == "*/*") {
            rank = 0;
        }
        if (rank > best_rank || (rank == best_rank && q > best)) {
            best_rank = rank;
            best = q;
        }
    }
    return best_rank < 0 ? -1 : best;
}

class Writer {
public:
    Writer(char* out, std::size_t cap) : out_(out), cap_(cap) {}
    void printf(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
        if (failed_) return;
        va_list ap;
        va_start(ap, fmt);
        int n = std::vsnprintf(out_ + len_, cap_ - len_, fmt, ap);
        va_end(ap);
        if (n < 0 || static_cast<std::size_t>(n) >= cap_ - len_) {
            failed_ = true;
            return;
        }
        len_ += static_cast<std::size_t>(n);
    }
    std::size_t result() const { return failed_ ? 0 : len_; }

private:
    char* out_;
    std::size_t cap_;
    std::size_t len_ = 0;
    bool failed_ = false;
};

struct Metric {
    const char* json;     // JSON key; the Prometheus name adds a prefix (and _total)
    bool counter;
    const char* help;
    std::uint64_t StatusTotals::*field;
};

// In the order of SPEC's list of keys.
constexpr Metric kMetrics[] = {
    {"sent", true, "Events Redis acknowledged.", &StatusTotals::sent},
    {"buffered", false, "Events in worker memory that Redis has not acknowledged yet.",
     &StatusTotals::buffered},
    {"spooled", true, "Events written to the spool.", &StatusTotals::spooled},
    {"replayed", true, "Spooled events Redis acknowledged.", &StatusTotals::replayed},
    {"dropped", true, "Events given up on (logged).", &StatusTotals::dropped},
    {"clicks", true, "Click events recorded.", &StatusTotals::clicks},
    {"conversions", true, "Conversion events recorded.", &StatusTotals::conversions},
    {"malformed_conversions", true, "Conversion headers dropped as malformed.",
     &StatusTotals::malformed_conversions},
    {"invalid_codes", true, "Requests whose referral code was not valid.",
     &StatusTotals::invalid_codes},
    {"rejected_cookies", true, "Attribution cookies refused (altered, expired, unknown key).",
     &StatusTotals::rejected_cookies},
    {"skipped", true, "Requests not attributed under referral_skip.", &StatusTotals::skipped},
};

}  // namespace

const char* to_string(RedisState s) noexcept {
    switch (s) {
        case RedisState::idle: return "idle";
        case RedisState::connecting: return "connecting";
        case RedisState::connected: return "connected";
        default: return "disconnected";
    }
}

RedisState overall(const StatusTotals& t) noexcept {
    for (RedisState s : {RedisState::disconnected, RedisState::connecting, RedisState::connected}) {
        if (t.redis[static_cast<std::size_t>(s)] > 0) return s;
    }
    return RedisState::idle;
}

bool wants_prometheus(std::string_view format, std::string_view accept) noexcept {
    if (format == "prometheus") return true;
    if (format == "json") return false;
    int text = weight(accept, "text/plain");
    int om = weight(accept, "application/openmetrics-text");
    int json = weight(accept, "application/json");
    int prom = text > om ? text : om;
    return prom > 0 && prom > json;
}

std::size_t render_json(const StatusTotals& t, char* out, std::size_t cap) noexcept {
    Writer w(out, cap);
    w.printf("{");
    for (const Metric& m : kMetrics) w.printf("\"%s\":%" PRIu64 ",", m.json, t.*m.field);
    w.printf("\"redis\":\"%s\"}\n", to_string(overall(t)));
    return w.result();
}

std::size_t render_prometheus(const StatusTotals& t, char* out, std::size_t cap) noexcept {
    Writer w(out, cap);
    for (const Metric& m : kMetrics) {
        const char* suffix = m.counter ? "_total" : "";
        w.printf("# HELP nginx_referral_%s%s %s\n# TYPE nginx_referral_%s%s %s\n"
                 "nginx_referral_%s%s %" PRIu64 "\n",
                 m.json, suffix, m.help, m.json, suffix, m.counter ? "counter" : "gauge",
                 m.json, suffix, t.*m.field);
    }
    const std::uint64_t backlog = t.spooled > t.replayed ? t.spooled - t.replayed : 0;
    w.printf("# HELP nginx_referral_spool_backlog Spooled events not replayed yet "
             "(spooled_total - replayed_total).\n"
             "# TYPE nginx_referral_spool_backlog gauge\n"
             "nginx_referral_spool_backlog %" PRIu64 "\n", backlog);
    w.printf("# HELP nginx_referral_workers nginx worker processes reporting.\n"
             "# TYPE nginx_referral_workers gauge\n"
             "nginx_referral_workers %" PRIu64 "\n", t.workers);
    w.printf("# HELP nginx_referral_redis_workers Worker processes in each state of their "
             "Redis connection.\n# TYPE nginx_referral_redis_workers gauge\n");
    for (std::size_t s = 0; s < kRedisStates; s++) {
        w.printf("nginx_referral_redis_workers{state=\"%s\"} %" PRIu64 "\n",
                 to_string(static_cast<RedisState>(s)), t.redis[s]);
    }
    w.printf("# HELP nginx_referral_redis_up 1 when no worker is cut off from Redis.\n"
             "# TYPE nginx_referral_redis_up gauge\n"
             "nginx_referral_redis_up %d\n", overall(t) == RedisState::disconnected ? 0 : 1);
    return w.result();
}

}  // namespace referral

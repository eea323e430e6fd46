#include "core/delivery.h"

namespace referral {

Reply classify_reply(bool is_error, std::string_view error) noexcept {
    if (!is_error) return Reply::acked;
    if (error.substr(0, 4) != "ERR ") return Reply::retry;
    if (error.find("unknown command") != std::string_view::npos) return Reply::retry;
    return Reply::reject;
}

std::int64_t Backoff::after_failure(std::int64_t held_ms, std::uint64_t random) noexcept {
    if (held_ms > Timing::kBackoffMaxMs) current_ = 0;
    current_ = current_ == 0 ? Timing::kBackoffMinMs
                             : (current_ * 3 / 2 < Timing::kBackoffMaxMs ? current_ * 3 / 2
                                                                          : Timing::kBackoffMaxMs);
    const auto jitter = static_cast<std::int64_t>(random % static_cast<std::uint64_t>(current_ / 4 + 1));
    return current_ + jitter;
}

const char* timed_out(Link link, std::int64_t now_ms, std::int64_t connect_started_ms,
                      std::int64_t oldest_inflight_ms) noexcept {
    if (link == Link::connecting && now_ms - connect_started_ms > Timing::kConnectTimeoutMs) {
        return "connect timed out";
    }
    if (oldest_inflight_ms >= 0 && now_ms - oldest_inflight_ms > Timing::kReplyTimeoutMs) {
        return "no reply within 5 s";
    }
    return nullptr;
}

Reconnect on_reconnect_timer(bool outbox_empty, bool spool_backlog) noexcept {
    return !outbox_empty || spool_backlog ? Reconnect::connect : Reconnect::idle;
}

Route route_event(bool has_spool, Link link, bool backlog, bool fits, bool spool_failed) noexcept {
    if (has_spool && !spool_failed && (link == Link::failing || backlog || !fits)) return Route::spool;
    return fits ? Route::memory : Route::drop;
}

ExitStep exit_step(bool has_spool, Link link, bool outbox_empty, std::int64_t exiting_for_ms) noexcept {
    // Connected: keep delivering; the worker exits once the outbox is empty.
    if (outbox_empty || link == Link::ready) return ExitStep::wait;
    if (has_spool) return ExitStep::spool_all;
    return exiting_for_ms > Timing::kExitGraceMs ? ExitStep::drop_all : ExitStep::wait;
}

}  // namespace referral

#include "core/attribution.h"

namespace referral {

const char* to_string(AttributionStatus s) noexcept {
    switch (s) {
        case AttributionStatus::fresh: return "new";
        case AttributionStatus::kept: return "kept";
        case AttributionStatus::replaced: return "replaced";
        case AttributionStatus::cookie: return "cookie";
        case AttributionStatus::invalid: return "invalid";
        case AttributionStatus::skipped: return "skipped";
        default: return "";
    }
}

Decision decide(bool skip, CodeSeen code, CookieSeen cookie, AttributionMode mode) noexcept {
    Decision d;
    if (skip) {
        d.status = AttributionStatus::skipped;
        return d;
    }
    if (code == CodeSeen::valid) {
        // A click in every case; its event carries the request's code.
        d.click = true;
        if (cookie != CookieSeen::valid) {
            d.status = AttributionStatus::fresh;
            d.set_cookie = true;
            d.code = d.visitor = d.first_ts = Source::request;
        } else if (mode == AttributionMode::first) {
            // The cookie stays as it is: its code holds the attribution.
            d.status = AttributionStatus::kept;
            d.code = d.visitor = d.first_ts = Source::cookie;
        } else {
            // Same visitor, new code and time.
            d.status = AttributionStatus::replaced;
            d.set_cookie = true;
            d.code = d.first_ts = Source::request;
            d.visitor = Source::cookie;
        }
        return d;
    }
    if (cookie == CookieSeen::valid) {
        d.status = AttributionStatus::cookie;
        d.code = d.visitor = d.first_ts = Source::cookie;
        return d;
    }
    if (code == CodeSeen::invalid || cookie == CookieSeen::rejected) {
        d.status = AttributionStatus::invalid;
    }
    return d;
}

bool CookieScan::offer(std::string_view value) noexcept {
    if (valid_ || candidates_ > kMaxCandidates) return true;
    if (++candidates_ > kMaxCandidates) return true;
    CookieClaims claims{};
    CookieStatus st = verify_cookie(value, keys_, nkeys_, now_ms_, window_ms_, &claims);
    if (st == CookieStatus::valid) {
        valid_ = true;
        claims_ = claims;
        return true;
    }
    rejected_ = st;
    return false;
}

CookieSeen CookieScan::result() const noexcept {
    if (candidates_ == 0) return CookieSeen::absent;
    if (valid_ && candidates_ <= kMaxCandidates) return CookieSeen::valid;
    return CookieSeen::rejected;
}

}  // namespace referral

// The attribution rule (SPEC "The attribution cookie"): given what a request
// carries, which code holds the attribution, whether a click is recorded and
// whether a new cookie is set. Plain C++; the module reads the request and
// acts on the Decision, nothing more.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/cookie.h"

namespace referral {

enum class AttributionMode { first, last };

// $referral_status: "new", "kept", "replaced", "cookie", "invalid",
// "skipped", or "" (none: nothing at all).
enum class AttributionStatus { none, fresh, kept, replaced, cookie, invalid, skipped };
const char* to_string(AttributionStatus s) noexcept;

// The request's code (the link followed): none, valid, or malformed.
enum class CodeSeen { absent, valid, invalid };

// The best of the request's cookies of our name (CookieScan below).
enum class CookieSeen { absent, valid, rejected };

// Where $referral_code and the new cookie's fields come from.
enum class Source { nothing, request, cookie };

struct Decision {
    AttributionStatus status = AttributionStatus::none;
    bool click = false;       // record a click event (its code: the request's)
    bool set_cookie = false;  // sign and send a new cookie
    Source code = Source::nothing;      // $referral_code
    Source visitor = Source::nothing;   // request: a fresh random id
    Source first_ts = Source::nothing;  // request: now
};

// skip: referral_skip matched; nothing is read or decided then.
Decision decide(bool skip, CodeSeen code, CookieSeen cookie, AttributionMode mode) noexcept;

// Looks at a request's cookies of our name, in order: the first valid one
// wins. A browser may send several (other Domain or Path); at most
// kMaxCandidates are verified, so a request cannot make us compute MACs
// without bound, and past that the request counts as having none valid.
class CookieScan {
public:
    static constexpr int kMaxCandidates = 4;

    CookieScan(const Key* keys, std::size_t nkeys, std::int64_t now_ms, std::int64_t window_ms)
        : keys_(keys), nkeys_(nkeys), now_ms_(now_ms), window_ms_(window_ms) {}

    // Returns true when the scan is over (a valid cookie, or too many).
    bool offer(std::string_view value) noexcept;

    CookieSeen result() const noexcept;
    const CookieClaims& claims() const noexcept { return claims_; }  // when valid
    CookieStatus why_rejected() const noexcept { return rejected_; }  // the last refusal

private:
    const Key* keys_;
    std::size_t nkeys_;
    std::int64_t now_ms_;
    std::int64_t window_ms_;
    int candidates_ = 0;
    bool valid_ = false;
    CookieStatus rejected_ = CookieStatus::valid;
    CookieClaims claims_{};
};

}  // namespace referral

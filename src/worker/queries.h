// Read-only queries of `referralctl serve` (the HTTP API, the dashboard and
// /metrics), written once for SQLite and PostgreSQL over Store::db().
// Statement ids start at 2000 so they never meet store.cpp's, store_lifecycle.cpp's
// or the Db classes' own (1000..1002).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "worker/store.h"

namespace referral::worker {

// The reward lifecycle (SPEC "Reward lifecycle"), in its order.
constexpr std::array<const char*, 7> kRewardStatuses = {"pending",  "review",   "available", "paid",
                                                         "redeemed", "reversed", "rejected"};

// A count for every status, zero where there is none.
using StatusCounts = std::map<std::string, std::int64_t>;
StatusCounts empty_status_counts();

struct UserSummary {
    std::string user;
    std::optional<std::string> code;         // the primary code (else the oldest one)
    std::optional<std::string> referred_by;  // the referrer's user id
    std::string plan = "free";
    StatusCounts rewards;
};
// nullopt for a user the database does not know (Store::user_known).
std::optional<UserSummary> user_summary(Store& store, const std::string& user);

struct Friend {
    std::string user, joined_at, plan;  // joined_at: ISO 8601, when they were linked
};
// The users `user` referred, oldest first, at most `limit`.
std::vector<Friend> friends(Store& store, const std::string& user, int limit);

struct DayFigures {
    std::string date;  // YYYY-MM-DD, UTC
    std::int64_t clicks = 0, signups = 0, subscriptions = 0;
    StatusCounts rewards = empty_status_counts();
};
struct ReferrerFigures {
    std::string user;
    std::int64_t clicks = 0, signups = 0, subscriptions = 0, rewards = 0;
};
struct Funnel {
    std::vector<DayFigures> daily;  // every day of the period, oldest first
    DayFigures totals;              // date empty
    std::vector<ReferrerFigures> referrers;  // best first, at most `top`
};
// The last `days` UTC days including today (`now_ms`'s day). Clicks are
// click responses; signups, users linked to a referral; subscriptions,
// referred users on the day of their first subscribe; rewards by the day
// they were credited, per status. Referrers are ranked by subscriptions,
// then signups, then clicks.
Funnel funnel(Store& store, int days, int top, std::int64_t now_ms);

struct Delivery {
    std::int64_t id = 0, reward_id = 0, attempts = 0;  // reward_id 0: none (referral.linked)
    std::string target, operation, state, last_error, next_attempt_at, created_at;
};
// Dead deliveries and queued ones whose last attempt failed, newest first.
std::vector<Delivery> failing_deliveries(Store& store, int limit);

struct DbFigures {
    StatusCounts rewards = empty_status_counts();
    std::int64_t deliveries_queued = 0, deliveries_dead = 0;
    // Age of the oldest queued delivery in seconds; 0 when none is queued.
    double oldest_queued_age_s = 0;
};
DbFigures db_figures(Store& store, std::int64_t now_ms);

}  // namespace referral::worker

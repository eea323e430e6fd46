#include "worker/queries.h"

#include <algorithm>
#include <cstdlib>
#include <ctime>

#include "worker/lifecycle.h"
#include "worker/util.h"

namespace referral::worker {
namespace {

// Statement ids: store.cpp uses 1..99, store_lifecycle.cpp 200.., the Db
// classes themselves 1000..1002; each id is one SQL text.
enum Q : int {
    kSummaryUser = 2000,
    kSummaryCode,
    kSummaryRewards,
    kFriends,
    kDayClicks,
    kDaySignups,
    kDaySubscriptions,
    kDayRewards,
    kRefClicks,
    kRefSignups,
    kRefSubscriptions,
    kRefRewards,
    kFailing,
    kAllRewards,
    kDeliveryStates,
    kOldestQueued,
};

constexpr std::int64_t kDayMs = 86400LL * 1000;

// The reward's lifecycle status column.
const char* const kStatus = "status";


// The UTC day of a timestamp column, "YYYY-MM-DD", on both databases.
std::string day_of(Db& db, const std::string& column) { return "substr(" + db.iso(column) + ", 1, 10)"; }

std::string day_text(std::int64_t ms) {
    std::time_t t = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[16];
    std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
    return buf;
}

void add_status(StatusCounts* counts, const std::string& status, std::int64_t n) {
    // An unexpected status (a newer schema) is still counted, under its name.
    (*counts)[status] += n;
}

}  // namespace

StatusCounts empty_status_counts() {
    StatusCounts c;
    for (const char* s : kRewardStatuses) c[s] = 0;
    return c;
}

std::optional<UserSummary> user_summary(Store& store, const std::string& user) {
    if (!store.user_known(user)) return std::nullopt;
    Db& db = store.db();
    UserSummary s;
    s.user = user;
    s.rewards = empty_status_counts();
    Rows u = db.query(kSummaryUser,
                      "SELECT u.plan, r.user_id FROM referral_user u"
                      " LEFT JOIN referral r ON r.id = u.referral_id WHERE u.user_id = $1",
                      {Param::Text(user)});
    if (!u.empty()) {
        s.plan = str(u[0][0]);
        if (u[0][1]) s.referred_by = *u[0][1];
    }
    // The primary code (empty label) first, else the oldest.
    Rows c = db.query(kSummaryCode,
                      "SELECT code FROM referral WHERE user_id = $1"
                      " ORDER BY CASE WHEN label = '' THEN 0 ELSE 1 END, id LIMIT 1",
                      {Param::Text(user)});
    if (!c.empty()) s.code = str(c[0][0]);
    std::string sql = std::string("SELECT ") + kStatus + ", count(*) FROM referral_reward WHERE user_id = $1 GROUP BY " +
                      kStatus;
    for (const Row& r : db.query(kSummaryRewards, sql.c_str(), {Param::Text(user)}))
        add_status(&s.rewards, str(r[0]), to_int(r[1]));
    return s;
}

std::vector<Friend> friends(Store& store, const std::string& user, int limit) {
    Db& db = store.db();
    std::string sql = "SELECT u.user_id, " + db.iso("u.referred_at") +
                      ", u.plan FROM referral_user u JOIN referral r ON r.id = u.referral_id"
                      " WHERE r.user_id = $1 ORDER BY u.referred_at, u.user_id LIMIT $2";
    std::vector<Friend> out;
    for (const Row& r : db.query(kFriends, sql.c_str(), {Param::Text(user), Param::Int(limit)}))
        out.push_back(Friend{str(r[0]), str(r[1]), str(r[2])});
    return out;
}

Funnel funnel(Store& store, int days, int top, std::int64_t now) {
    Db& db = store.db();
    std::int64_t first_day = now - now % kDayMs - static_cast<std::int64_t>(days - 1) * kDayMs;
    std::string from = format_db_time(first_day);
    Funnel f;
    std::map<std::string, std::size_t> index;
    for (int i = 0; i < days; i++) {
        DayFigures d;
        d.date = day_text(first_day + i * kDayMs);
        index[d.date] = f.daily.size();
        f.daily.push_back(d);
    }
    auto day = [&](const std::optional<std::string>& date) -> DayFigures* {
        auto it = index.find(str(date));
        return it == index.end() ? nullptr : &f.daily[it->second];  // a row dated in the future
    };
    const Param p = Param::Text(from);

    std::string sql = "SELECT " + day_of(db, "created_at") +
                      ", count(*) FROM referral_response WHERE action = 'click' AND created_at >= $1 GROUP BY 1";
    for (const Row& r : db.query(kDayClicks, sql.c_str(), {p}))
        if (DayFigures* d = day(r[0])) d->clicks += to_int(r[1]);
    sql = "SELECT " + day_of(db, "referred_at") +
          ", count(*) FROM referral_user WHERE referral_id IS NOT NULL AND referred_at >= $1 GROUP BY 1";
    for (const Row& r : db.query(kDaySignups, sql.c_str(), {p}))
        if (DayFigures* d = day(r[0])) d->signups += to_int(r[1]);
    // A referred user subscribes once: on the day of their first subscribe.
    const std::string first_subscribe =
        "(SELECT x.user_id, MIN(x.created_at) AS at FROM referral_response x"
        " WHERE x.action = 'subscribe' AND x.user_id IS NOT NULL GROUP BY x.user_id) s";
    sql = "SELECT " + day_of(db, "s.at") + ", count(*) FROM " + first_subscribe + " WHERE s.at >= $1 GROUP BY 1";
    for (const Row& r : db.query(kDaySubscriptions, sql.c_str(), {p}))
        if (DayFigures* d = day(r[0])) d->subscriptions += to_int(r[1]);
    sql = "SELECT " + day_of(db, "date_credited") + ", " + kStatus +
          ", count(*) FROM referral_reward WHERE date_credited >= $1 GROUP BY 1, 2";
    for (const Row& r : db.query(kDayRewards, sql.c_str(), {p}))
        if (DayFigures* d = day(r[0])) add_status(&d->rewards, str(r[1]), to_int(r[2]));

    f.totals.rewards = empty_status_counts();
    for (const DayFigures& d : f.daily) {
        f.totals.clicks += d.clicks;
        f.totals.signups += d.signups;
        f.totals.subscriptions += d.subscriptions;
        for (const auto& kv : d.rewards) f.totals.rewards[kv.first] += kv.second;
    }

    std::map<std::string, ReferrerFigures> by;
    auto ref = [&](const std::optional<std::string>& user) -> ReferrerFigures& {
        ReferrerFigures& x = by[str(user)];
        x.user = str(user);
        return x;
    };
    for (const Row& r : db.query(kRefClicks,
                                 "SELECT r.user_id, count(*) FROM referral_response x JOIN referral r"
                                 " ON r.id = x.referral_id WHERE x.action = 'click' AND x.created_at >= $1"
                                 " GROUP BY r.user_id",
                                 {p}))
        ref(r[0]).clicks += to_int(r[1]);
    for (const Row& r : db.query(kRefSignups,
                                 "SELECT r.user_id, count(*) FROM referral_user u JOIN referral r"
                                 " ON r.id = u.referral_id WHERE u.referred_at >= $1 GROUP BY r.user_id",
                                 {p}))
        ref(r[0]).signups += to_int(r[1]);
    sql = "SELECT r.user_id, count(*) FROM " + first_subscribe +
          " JOIN referral_user u ON u.user_id = s.user_id JOIN referral r ON r.id = u.referral_id"
          " WHERE s.at >= $1 GROUP BY r.user_id";
    for (const Row& r : db.query(kRefSubscriptions, sql.c_str(), {p})) ref(r[0]).subscriptions += to_int(r[1]);
    for (const Row& r : db.query(kRefRewards,
                                 "SELECT user_id, count(*) FROM referral_reward WHERE role = 'referrer'"
                                 " AND date_credited >= $1 GROUP BY user_id",
                                 {p}))
        ref(r[0]).rewards += to_int(r[1]);
    for (auto& kv : by) f.referrers.push_back(kv.second);
    std::sort(f.referrers.begin(), f.referrers.end(), [](const ReferrerFigures& a, const ReferrerFigures& b) {
        if (a.subscriptions != b.subscriptions) return a.subscriptions > b.subscriptions;
        if (a.signups != b.signups) return a.signups > b.signups;
        if (a.clicks != b.clicks) return a.clicks > b.clicks;
        return a.user < b.user;
    });
    if (f.referrers.size() > static_cast<std::size_t>(top)) f.referrers.resize(static_cast<std::size_t>(top));
    return f;
}

std::vector<Delivery> failing_deliveries(Store& store, int limit) {
    Db& db = store.db();
    std::string sql = "SELECT id, reward_id, target, operation, state, attempts, last_error, " +
                      db.iso("next_attempt_at") + ", " + db.iso("created_at") +
                      " FROM referral_delivery WHERE state = 'dead'"
                      " OR (state = 'queued' AND last_error IS NOT NULL) ORDER BY id DESC LIMIT $1";
    std::vector<Delivery> out;
    for (const Row& r : db.query(kFailing, sql.c_str(), {Param::Int(limit)})) {
        Delivery d;
        d.id = to_int(r[0]);
        d.reward_id = to_int(r[1]);
        d.target = str(r[2]);
        d.operation = str(r[3]);
        d.state = str(r[4]);
        d.attempts = to_int(r[5]);
        d.last_error = str(r[6]);
        d.next_attempt_at = str(r[7]);
        d.created_at = str(r[8]);
        out.push_back(std::move(d));
    }
    return out;
}

DbFigures db_figures(Store& store, std::int64_t now) {
    Db& db = store.db();
    DbFigures f;
    std::string sql = std::string("SELECT ") + kStatus + ", count(*) FROM referral_reward GROUP BY " + kStatus;
    for (const Row& r : db.query(kAllRewards, sql.c_str(), {})) add_status(&f.rewards, str(r[0]), to_int(r[1]));
    for (const Row& r : db.query(kDeliveryStates,
                                 "SELECT state, count(*) FROM referral_delivery"
                                 " WHERE state IN ('queued', 'dead') GROUP BY state",
                                 {})) {
        if (str(r[0]) == "queued") f.deliveries_queued = to_int(r[1]);
        if (str(r[0]) == "dead") f.deliveries_dead = to_int(r[1]);
    }
    sql = "SELECT " + db.iso("MIN(created_at)") + " FROM referral_delivery WHERE state = 'queued'";
    Rows r = db.query(kOldestQueued, sql.c_str(), {});
    if (!r.empty() && r[0][0]) {
        std::int64_t at = iso_to_ms(*r[0][0]);
        if (at >= 0 && now > at) f.oldest_queued_age_s = static_cast<double>(now - at) / 1000.0;
    }
    return f;
}

}  // namespace referral::worker

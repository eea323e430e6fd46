// Abuse and privacy (SPEC "Abuse and privacy rules in the worker"): click
// dedup, who was seen with which device and address, code expiry and
// revocation, the worker's persisted counters, retention and erasure.
#include <cstdlib>

#include "worker/lifecycle.h"
#include "worker/store.h"

namespace referral::worker {
namespace {

// Statement ids of this file (store.cpp 1..99, store_lifecycle.cpp 200..,
// db_pg.cpp 1000..).
enum Q : int {
    kRecentClick = 300,
    kSawVisitor,
    kSeenVisitor,
    kSeenIp,
    kSetReview,
    kAddCounter,
    kCounters,
    kSetExpiry,
    kRevoke,
    kCodeInfo,
    kRetainResponses,
    kRetainVisitors,
    kForgetVisitorIds,
    kForgetResponses,
    kForgetVisitors,
    kForgetDeviceResponses,
    kForgetDevice,
    kKeepEarly,
    kTakeEarly,
    kDropEarly,
    kForgetEarly,
    kRetainEarly,
    kNoteClick,
    kDropClicks,
    kForgetClicks,
};

}  // namespace

bool Store::keep_early(const ResponseRow& x) {
    return db_->exec(kKeepEarly,
                     "INSERT INTO referral_early (event_id, user_id, action, visitor_id, ip, user_agent, target,"
                     " referer, host, amount, currency, order_id, created_at)"
                     " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                     " ON CONFLICT (event_id) DO NOTHING",
                     {Param::Text(x.event_id), Param::Text(x.user_id), Param::Text(x.action),
                      Param::OptText(x.visitor_id), Param::OptText(x.ip), Param::OptText(x.user_agent),
                      Param::OptText(x.target), Param::OptText(x.referer), Param::OptText(x.host),
                      x.amount ? Param::Int(*x.amount) : Param::Null(), Param::OptText(x.currency),
                      Param::OptText(x.order_id), Param::Text(x.created_at)}) > 0;
}

std::vector<Store::EarlyRow> Store::take_early(std::string_view user, std::string_view since) {
    std::vector<EarlyRow> out;
    std::string sql =
        "SELECT event_id, action, visitor_id, ip, user_agent, target, referer, host, currency, order_id,"
        " created_at, amount, " + db_->iso("created_at") +
        " FROM referral_early WHERE user_id = $1 AND created_at >= $2 ORDER BY created_at, event_id";
    for (const Row& r : db_->query(kTakeEarly, sql.c_str(), {Param::Text(user), Param::Text(since)})) {
        EarlyRow e;
        std::string* fields[] = {&e.event_id, &e.action,  &e.visitor_id, &e.ip,       &e.user_agent, &e.target,
                                 &e.referer,  &e.host,    &e.currency,   &e.order_id, &e.created_at};
        for (std::size_t i = 0; i < 11; i++) *fields[i] = r[i] ? *r[i] : std::string();
        if (r[11]) e.amount = to_int(r[11]);
        e.ts_ms = r[12] ? iso_to_ms(*r[12]) : 0;
        out.push_back(std::move(e));
    }
    db_->write(kDropEarly, "DELETE FROM referral_early WHERE user_id = $1", {Param::Text(user)});
    return out;
}

std::int64_t Store::drop_early_before(std::string_view before) {
    return db_->exec(kRetainEarly, "DELETE FROM referral_early WHERE created_at < $1", {Param::Text(before)});
}

bool Store::recent_click(std::int64_t referral_id, std::string_view visitor, std::string_view from,
                         std::string_view to) {
    return !db_->query(kRecentClick,
                       "SELECT 1 FROM referral_click_last WHERE referral_id = $1 AND visitor_id = $2"
                       " AND clicked_at >= $3 AND clicked_at <= $4",
                       {Param::Int(referral_id), Param::Text(visitor), Param::Text(from), Param::Text(to)})
                .empty();
}

void Store::note_click(std::int64_t referral_id, std::string_view visitor, std::string_view at) {
    db_->write(kNoteClick,
              "INSERT INTO referral_click_last (referral_id, visitor_id, clicked_at) VALUES ($1, $2, $3)"
              " ON CONFLICT (referral_id, visitor_id) DO UPDATE SET clicked_at = excluded.clicked_at"
              " WHERE referral_click_last.clicked_at < excluded.clicked_at",
              {Param::Int(referral_id), Param::Text(visitor), Param::Text(at)});
}

std::int64_t Store::drop_clicks_before(std::string_view before) {
    return db_->exec(kDropClicks, "DELETE FROM referral_click_last WHERE clicked_at < $1", {Param::Text(before)});
}

void Store::saw_visitor(std::string_view user, std::string_view visitor, std::string_view ip, std::string_view at) {
    db_->write(kSawVisitor,
              "INSERT INTO referral_visitor (user_id, visitor_id, ip, last_seen) VALUES ($1, $2, $3, $4)"
              " ON CONFLICT (user_id, visitor_id, ip) DO UPDATE SET last_seen = excluded.last_seen"
              " WHERE referral_visitor.last_seen < excluded.last_seen",
              {Param::Text(user), Param::Text(visitor), Param::Text(ip), Param::Text(at)});
}

bool Store::seen_with_visitor(std::string_view user, std::string_view visitor) {
    return !db_->query(kSeenVisitor,
                       "SELECT 1 FROM referral_visitor WHERE visitor_id = $2 AND user_id = $1 LIMIT 1",
                       {Param::Text(user), Param::Text(visitor)})
                .empty();
}

bool Store::seen_with_ip(std::string_view user, std::string_view ip, std::string_view since) {
    return !db_->query(kSeenIp,
                       "SELECT 1 FROM referral_visitor WHERE ip = $2 AND user_id = $1 AND last_seen >= $3 LIMIT 1",
                       {Param::Text(user), Param::Text(ip), Param::Text(since)})
                .empty();
}

void Store::set_review_reason(std::string_view user, std::string_view reason) {
    db_->write(kSetReview, "UPDATE referral_user SET review_reason = $2 WHERE user_id = $1",
              {Param::Text(user), Param::Text(reason)});
}

void Store::add_counter(std::string_view name, std::int64_t delta) {
    db_->write(kAddCounter,
              "INSERT INTO referral_counter (name, value) VALUES ($1, $2)"
              " ON CONFLICT (name) DO UPDATE SET value = referral_counter.value + excluded.value",
              {Param::Text(name), Param::Int(delta)});
}

std::vector<std::pair<std::string, std::int64_t>> Store::counters() {
    std::vector<std::pair<std::string, std::int64_t>> out;
    for (const Row& r : db_->query(kCounters, "SELECT name, value FROM referral_counter ORDER BY name", {}))
        out.emplace_back(r[0] ? *r[0] : std::string(), to_int(r[1]));
    return out;
}

bool Store::set_code_expiry(std::int64_t referral_id, std::string_view expires_at) {
    return db_->exec(kSetExpiry, "UPDATE referral SET expires_at = $2 WHERE id = $1",
                     {Param::Int(referral_id), Param::OptText(expires_at)}) > 0;
}

bool Store::revoke_code(std::string_view code, std::string_view at) {
    return db_->exec(kRevoke, "UPDATE referral SET revoked_at = $2 WHERE code = $1 AND revoked_at IS NULL",
                     {Param::Text(code), Param::Text(at)}) > 0;
}

std::optional<CodeInfo> Store::code_info(std::string_view code) {
    Rows r = db_->query(kCodeInfo, (code_columns(*db_) + " WHERE code = $1").c_str(), {Param::Text(code)});
    if (r.empty()) return std::nullopt;
    return code_row(r[0]);
}

std::int64_t Store::apply_retention(std::string_view before, int limit) {
    // Small batches (the caller commits each): never one huge transaction.
    std::string pick = "SELECT id FROM referral_response WHERE created_at < $1 AND (ip IS NOT NULL OR"
                       " user_agent IS NOT NULL OR target IS NOT NULL OR referer IS NOT NULL) LIMIT $2";
    std::int64_t n = db_->exec(kRetainResponses,
                               ("UPDATE referral_response SET ip = NULL, user_agent = NULL, target = NULL,"
                                " referer = NULL WHERE id IN (" + pick + ")").c_str(),
                               {Param::Text(before), Param::Int(limit)});
    n += db_->exec(kRetainVisitors,
                   "DELETE FROM referral_visitor WHERE last_seen < $1 AND (user_id, visitor_id, ip) IN"
                   " (SELECT user_id, visitor_id, ip FROM referral_visitor WHERE last_seen < $1 LIMIT $2)",
                   {Param::Text(before), Param::Int(limit)});
    return n;
}

Forgotten Store::forget(std::string_view user) {
    Forgotten f;
    // The user's devices: from their conversions and from what was seen.
    for (const Row& r : db_->query(kForgetVisitorIds,
                                   "SELECT visitor_id FROM referral_visitor WHERE user_id = $1 AND visitor_id <> ''"
                                   " UNION SELECT visitor_id FROM referral_response WHERE user_id = $1"
                                   " AND visitor_id IS NOT NULL",
                                   {Param::Text(user)})) {
        if (r[0] && !r[0]->empty()) f.visitor_ids.push_back(*r[0]);
    }
    // Their responses, and the clicks made from their devices.
    const char* clear = "UPDATE referral_response SET ip = NULL, user_agent = NULL, target = NULL,"
                        " referer = NULL, visitor_id = NULL";
    f.responses = db_->exec(kForgetResponses, (std::string(clear) + " WHERE user_id = $1").c_str(),
                            {Param::Text(user)});
    f.visitors = db_->exec(kForgetVisitors, "DELETE FROM referral_visitor WHERE user_id = $1", {Param::Text(user)});
    f.responses += db_->exec(kForgetEarly,
                             "UPDATE referral_early SET ip = NULL, user_agent = NULL, target = NULL, referer = NULL,"
                             " visitor_id = NULL WHERE user_id = $1",
                             {Param::Text(user)});
    for (const std::string& v : f.visitor_ids) {
        f.responses += db_->exec(kForgetDeviceResponses, (std::string(clear) + " WHERE visitor_id = $1").c_str(),
                                 {Param::Text(v)});
        f.visitors += db_->exec(kForgetDevice, "DELETE FROM referral_visitor WHERE visitor_id = $1", {Param::Text(v)});
        db_->write(kForgetClicks, "DELETE FROM referral_click_last WHERE visitor_id = $1", {Param::Text(v)});
    }
    return f;
}

}  // namespace referral::worker

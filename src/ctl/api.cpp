// The /v1 JSON API (SPEC "HTTP API and dashboard"): every id and body is
// checked before the database sees it; answers are the shapes `referralctl
// --json` prints.
#include <functional>

#include "core/conversion.h"
#include "ctl/http.h"
#include "ctl/render.h"
#include "worker/lifecycle.h"
#include "worker/queries.h"
#include "worker/reward_json.h"
#include "worker/util.h"

namespace referral::ctl {

using json = nlohmann::json;
using namespace referral::worker;

namespace {

const std::string& check_user(const std::string& user) {
    if (!referral::is_token(user, referral::kUserMaxLen)) {
        throw HttpError{400, "bad user id \"" + clean_text(user, 140) +
                                 "\": expected 1 to 128 printable characters without spaces, ';' or '='"};
    }
    return user;
}

std::int64_t check_reward_id(const std::string& text) {
    std::int64_t id;
    if (!parse_int64(text, &id) || id <= 0)
        throw HttpError{400, "bad reward id \"" + clean_text(text, 40) + "\": expected a positive integer"};
    return id;
}

// ?name=N within [lo, hi], or `def` when absent.
int int_param(const httplib::Request& req, const char* name, int def, int lo, int hi) {
    if (!req.has_param(name)) return def;
    std::string v = req.get_param_value(name);
    std::int64_t n;
    if (!parse_int64(v, &n) || n < lo || n > hi) {
        throw HttpError{400, std::string("bad ") + name + " \"" + clean_text(v, 40) + "\": expected an integer from " +
                                 std::to_string(lo) + " to " + std::to_string(hi)};
    }
    return static_cast<int>(n);
}

// A JSON object body with only `allowed` keys; an empty body is {}.
json object_body(const httplib::Request& req, std::initializer_list<const char*> allowed) {
    if (req.body.empty()) return json::object();
    json j = json::parse(req.body, nullptr, false);
    if (j.is_discarded()) throw HttpError{400, "the request body is not valid JSON"};
    if (!j.is_object()) throw HttpError{400, "the request body must be a JSON object"};
    for (const auto& kv : j.items()) {
        bool ok = false;
        for (const char* a : allowed) ok = ok || kv.key() == a;
        if (!ok) throw HttpError{400, "unknown key \"" + clean_text(kv.key(), 64) + "\" in the request body"};
    }
    return j;
}

// Runs `fn` with a pooled connection. A database failure drops the
// connection (it may be broken) and answers 503.
template <typename Fn>
void with_store(Context& ctx, Fn fn) {
    StorePool::Lease store = [&] {
        try {
            return ctx.pool.take();
        } catch (const DbError& e) {
            throw HttpError{503, std::string("database unavailable: ") + e.what()};
        }
    }();
    try {
        fn(*store);
    } catch (const DbError& e) {
        store.broken();
        throw HttpError{503, std::string("database error: ") + e.what()};
    }
}

json counts_json(const StatusCounts& c) {
    json j = json::object();
    for (const auto& kv : c) j[kv.first] = kv.second;
    return j;
}

void get_user(Context& ctx, httplib::Response& res, const std::string& user) {
    with_store(ctx, [&](Store& store) {
        auto s = user_summary(store, user);
        if (!s) throw HttpError{404, "unknown user " + user};
        send_json(res, 200,
                  {{"user", s->user},
                   {"code", s->code ? json(*s->code) : json(nullptr)},
                   {"link", s->code ? link_json(ctx.config.link_base, *s->code) : json(nullptr)},
                   {"referred_by", s->referred_by ? json(*s->referred_by) : json(nullptr)},
                   {"plan", s->plan},
                   {"rewards", counts_json(s->rewards)}});
    });
}

void get_rewards(Context& ctx, httplib::Response& res, const std::string& user) {
    with_store(ctx, [&](Store& store) {
        if (!store.user_known(user)) throw HttpError{404, "unknown user " + user};
        json arr = json::array();
        for (const auto& w : store.rewards(user)) arr.push_back(reward_json(w));
        send_json(res, 200, {{"user", user}, {"rewards", arr}});
    });
}

void get_friends(Context& ctx, httplib::Response& res, const std::string& user) {
    with_store(ctx, [&](Store& store) {
        if (!store.user_known(user)) throw HttpError{404, "unknown user " + user};
        json arr = json::array();
        for (const auto& f : friends(store, user, 1000))
            arr.push_back({{"user", f.user}, {"joined_at", f.joined_at}, {"plan", f.plan}});
        send_json(res, 200, {{"user", user}, {"friends", arr}});
    });
}

void post_code(Context& ctx, const httplib::Request& req, httplib::Response& res, const std::string& user) {
    json body = object_body(req, {"label"});
    std::string label;
    if (body.contains("label")) {
        if (!body["label"].is_string()) throw HttpError{400, "\"label\" must be a string"};
        label = body["label"].get<std::string>();
        if (!valid_label(label)) throw HttpError{400, "bad label: expected at most 64 printable characters"};
    }
    with_store(ctx, [&](Store& store) {
        bool created = false;
        CodeInfo c;
        store.begin();
        try {
            c = ensure_code(store, user, label, format_db_time(now_ms()), &created);
            store.commit();
        } catch (...) {
            store.rollback();
            throw;
        }
        json j = code_json(c, ctx.config.link_base);
        j["created"] = created;
        send_json(res, 200, j);
    });
}

void post_redeem(Context& ctx, httplib::Response& res, std::int64_t id) {
    with_store(ctx, [&](Store& store) {
        // The lifecycle's redeem: one conditional UPDATE (only `available`
        // becomes `redeemed`, so of two concurrent redeems exactly one
        // changes the row) and the reward.redeemed webhook, in one
        // transaction.
        Lifecycle lifecycle(ctx.config);
        bool done;
        store.begin();
        try {
            done = lifecycle.redeem(store, id, format_db_time(now_ms()));
            store.commit();
        } catch (...) {
            store.rollback();
            throw;
        }
        auto w = store.reward(id);
        if (!w) throw HttpError{404, "no reward with id " + std::to_string(id)};
        if (!done) {
            throw HttpError{409,
                            "reward " + std::to_string(id) + " (" + reward_label(*w) + " for " + w->user_id +
                                ") cannot be redeemed: it " + not_redeemable(*w),
                            {{"reward", reward_json(*w)}}};
        }
        send_json(res, 200, reward_json(*w));
    });
}

json day_json(const DayFigures& d) {
    json j{{"clicks", d.clicks},
           {"signups", d.signups},
           {"subscriptions", d.subscriptions},
           {"rewards", counts_json(d.rewards)}};
    if (!d.date.empty()) j["date"] = d.date;
    return j;
}

void get_stats(Context& ctx, const httplib::Request& req, httplib::Response& res) {
    int days = int_param(req, "days", 30, 1, 366);
    int top = int_param(req, "top", 10, 1, 100);
    with_store(ctx, [&](Store& store) {
        Funnel f = funnel(store, days, top, now_ms());
        json daily = json::array(), referrers = json::array();
        for (const auto& d : f.daily) daily.push_back(day_json(d));
        for (const auto& r : f.referrers) {
            referrers.push_back({{"user", r.user},
                                 {"clicks", r.clicks},
                                 {"signups", r.signups},
                                 {"subscriptions", r.subscriptions},
                                 {"rewards", r.rewards}});
        }
        send_json(res, 200,
                  {{"days", days},
                   {"from", f.daily.front().date},
                   {"to", f.daily.back().date},
                   {"totals", day_json(f.totals)},
                   {"daily", daily},
                   {"referrers", referrers}});
    });
}

void get_failing(Context& ctx, const httplib::Request& req, httplib::Response& res) {
    int limit = int_param(req, "limit", 20, 1, 200);
    with_store(ctx, [&](Store& store) {
        json arr = json::array();
        for (const auto& d : failing_deliveries(store, limit)) {
            arr.push_back({{"id", d.id},
                           {"reward_id", d.reward_id ? json(d.reward_id) : json(nullptr)},
                           {"target", d.target},
                           {"operation", d.operation},
                           {"state", d.state},
                           {"attempts", d.attempts},
                           {"last_error", d.last_error},
                           {"next_attempt_at", d.next_attempt_at.empty() ? json(nullptr) : json(d.next_attempt_at)},
                           {"created_at", d.created_at}});
        }
        send_json(res, 200, {{"deliveries", arr}});
    });
}

}  // namespace

void handle_api(Context& ctx, const httplib::Request& req, httplib::Response& res,
                const std::vector<std::string>& seg) {
    const bool get = req.method == "GET" || req.method == "HEAD", post = req.method == "POST";
    // The route's method, or 404 for a path that is none of ours.
    auto route = [&](const char* method, bool ok, const std::function<void()>& fn) {
        if (!ok) {
            res.set_header("Allow", method);
            throw HttpError{405, std::string("use ") + method + " here"};
        }
        fn();
    };
    const std::size_t n = seg.size();
    if (n >= 2 && seg[0] == "users") {
        const std::string& user = check_user(seg[1]);
        if (n == 2) return route("GET", get, [&] { get_user(ctx, res, user); });
        if (n == 3 && seg[2] == "rewards") return route("GET", get, [&] { get_rewards(ctx, res, user); });
        if (n == 3 && seg[2] == "friends") return route("GET", get, [&] { get_friends(ctx, res, user); });
        if (n == 3 && seg[2] == "codes") return route("POST", post, [&] { post_code(ctx, req, res, user); });
    }
    if (n == 3 && seg[0] == "rewards" && seg[2] == "redeem") {
        std::int64_t id = check_reward_id(seg[1]);
        return route("POST", post, [&] { post_redeem(ctx, res, id); });
    }
    if (n == 1 && seg[0] == "stats") return route("GET", get, [&] { get_stats(ctx, req, res); });
    if (n == 2 && seg[0] == "deliveries" && seg[1] == "failing")
        return route("GET", get, [&] { get_failing(ctx, req, res); });
    throw HttpError{404, "no such endpoint: " + req.method + " " + clean_text(req.path, 200)};
}

}  // namespace referral::ctl

// referralctl: the admin command line of the referral database
// (SPEC "The worker and the main database"). Text for people, --json for
// programs. Exit status: 0 done, 1 refused or failed, 2 bad usage.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/code.h"
#include "ctl/render.h"
#include "ctl/serve.h"
#include "worker/config.h"
#include "worker/lifecycle.h"
#include "worker/reward_json.h"
#include "worker/store.h"
#include "worker/util.h"

using namespace referral::worker;
using referral::ctl::code_json;
using json = nlohmann::json;

namespace {

bool g_json = false;
Config g_config;  // --config: webhooks (written with the changes they report), labels, rules, link_base

// A refusal: printed (as {"error": ...} with --json), exit status 1.
struct Failure {
    std::string message;
    std::string reason;  // short machine-readable word
    json extra = json::object();
};

std::string now_text() { return format_db_time(now_ms()); }

void print_json(const json& j) { std::cout << j.dump(2) << "\n"; }

void check_user(const std::string& user) {
    if (!referral::is_token(user, referral::kUserMaxLen)) {
        throw Failure{"bad user id \"" + clean_text(user, 140) +
                          "\": expected 1 to 128 printable characters without spaces, ';' or '='",
                      "bad_user"};
    }
}

// Runs `fn` in one transaction; a database error is a refusal.
template <typename F>
auto in_transaction(Store& store, F&& fn) {
    try {
        store.begin();
        auto result = fn();
        store.commit();
        return result;
    } catch (const DbError& e) {
        store.rollback();
        throw Failure{e.what(), "database"};
    }
}

std::int64_t parse_id(const std::string& text, const char* what) {
    std::int64_t id;
    if (!parse_int64(text, &id) || id <= 0) {
        throw Failure{std::string("bad ") + what + " id \"" + clean_text(text, 40) + "\": expected a positive integer",
                      "bad_id"};
    }
    return id;
}

void check_label(const std::string& label) {
    if (!referral::ctl::valid_label(label)) {
        throw Failure{"bad label: expected at most 64 printable characters", "bad_label"};
    }
}

std::unique_ptr<Store> open(const std::string& url_text, bool create) {
    DatabaseUrl url;
    std::string err;
    if (!parse_database_url(url_text, &url, &err)) throw Failure{"--database: " + err, "bad_database"};
    try {
        auto store = open_store(url, create);
        if (!create) store->require_current_schema();
        return store;
    } catch (const DbError& e) {
        throw Failure{e.what(), "database"};
    }
}

std::string pad(const std::string& s, std::size_t width) {
    // Widths count bytes; labels with a multi-byte symbol get one extra.
    std::size_t visible = 0;
    for (unsigned char c : s) visible += (c & 0xc0) != 0x80;
    return s + std::string(width > visible ? width - visible : 1, ' ');
}

// ------------------------------------------------------------ commands

int cmd_migrate(const std::string& db, int target) {
    if (target < 1 || target > kSchemaVersion)
        throw Failure{"bad --to " + std::to_string(target) + ": expected 1 to " + std::to_string(kSchemaVersion),
                      "bad_version"};
    auto store = open(db, true);
    int before;
    try {
        before = store->migrate(target);
    } catch (const DbError& e) {
        throw Failure{std::string("migration failed: ") + e.what(), "database"};
    }
    int after = store->schema_version();
    if (g_json) {
        print_json({{"previous_version", before}, {"version", after}, {"changed", before != after}});
    } else if (before == after) {
        std::cout << "schema already at version " << after << ", nothing to do\n";
    } else {
        std::cout << "schema migrated from version " << before << " to " << after << "\n";
    }
    return 0;
}

int cmd_code_create(const std::string& db, const std::string& user, const std::string& label,
                    const std::string& expires) {
    check_user(user);
    check_label(label);
    std::int64_t expires_ms = 0;
    if (!expires.empty() && (!parse_duration_ms(expires, &expires_ms) || expires_ms <= 0))
        throw Failure{"bad --expires \"" + clean_text(expires, 40) + "\": expected a duration such as \"30d\"",
                      "bad_duration"};
    auto store = open(db, false);
    bool created = false;
    CodeInfo c = in_transaction(*store, [&] {
        CodeInfo made = ensure_code(*store, user, label, now_text(), &created);
        if (expires_ms > 0) {
            // On a new code or an existing one: from now on it ends then.
            store->set_code_expiry(made.id, format_db_time(now_ms() + expires_ms));
            made = *store->code_info(made.code);
        }
        return made;
    });
    if (g_json) {
        json j = code_json(c, g_config.link_base);
        j["created"] = created;
        print_json(j);
    } else {
        // The code alone on the first line (scripts read it), the link next.
        std::cout << c.code << "\n";
        if (!g_config.link_base.empty()) std::cout << g_config.link_base << c.code << "\n";
    }
    return 0;
}

int cmd_code_show(const std::string& db, const std::string& user) {
    check_user(user);
    auto store = open(db, false);
    auto codes = store->codes(user);
    if (codes.empty()) {
        throw Failure{"user " + user + " has no referral code (create one with `referralctl code create --user " +
                          user + "`)",
                      "unknown_user"};
    }
    if (g_json) {
        json arr = json::array();
        for (const auto& c : codes) arr.push_back(code_json(c, g_config.link_base));
        print_json({{"user", user}, {"codes", arr}});
        return 0;
    }
    bool links = !g_config.link_base.empty();
    std::cout << pad("CODE", 42) << pad("LABEL", 20) << (links ? pad("CREATED", 22) + "LINK" : "CREATED") << "\n";
    for (const auto& c : codes) {
        std::cout << pad(c.code, 42) << pad(c.label.empty() ? "(primary)" : c.label, 20)
                  << (links ? pad(c.created_at, 22) + g_config.link_base + c.code : c.created_at) << "\n";
    }
    return 0;
}

int cmd_rewards(const std::string& db, const std::string& user) {
    check_user(user);
    auto store = open(db, false);
    if (!store->user_known(user)) throw Failure{"unknown user " + user, "unknown_user"};
    auto rewards = store->rewards(user);
    if (g_json) {
        json arr = json::array();
        for (const auto& w : rewards) arr.push_back(reward_json(w));
        print_json({{"user", user}, {"rewards", arr}});
        return 0;
    }
    if (rewards.empty()) {
        std::cout << "user " << user << " has no rewards yet\n";
        return 0;
    }
    std::cout << pad("ID", 8) << pad("REWARD", 22) << pad("FOR", 40) << pad("CREDITED", 22) << pad("STATUS", 11)
              << "REDEEMED\n";
    for (const auto& w : rewards) {
        std::string why = w.role == "referrer" ? "referring " + w.referred_user_id : "joining through a referral";
        std::string status = w.status + (w.reason.empty() ? "" : " (" + w.reason + ")");
        std::cout << pad(std::to_string(w.id), 8) << pad(reward_label(w), 22)
                  << pad(why + " (" + w.referral_type + ")", 40) << pad(w.date_credited, 22) << pad(status, 11)
                  << (w.redeemed ? "yes, " + w.date_redeemed : std::string("no")) << "\n";
    }
    return 0;
}

int cmd_redeem(const std::string& db, const std::string& id_text) {
    std::int64_t id = parse_id(id_text, "reward");
    auto store = open(db, false);
    Lifecycle lifecycle(g_config);
    bool done = in_transaction(*store, [&] { return lifecycle.redeem(*store, id, now_text()); });
    auto w = store->reward(id);
    if (!w) throw Failure{"no reward with id " + std::to_string(id), "unknown_reward"};
    if (!done) {
        Failure f{"reward " + std::to_string(id) + " (" + reward_label(*w) + " for " + w->user_id + ") " +
                      not_redeemable(*w),
                  w->status == "redeemed" ? "already_redeemed" : "not_available"};
        f.extra = reward_json(*w);
        throw f;
    }
    if (g_json) {
        print_json(reward_json(*w));
    } else {
        std::cout << "redeemed reward " << id << ": " << reward_label(*w) << " for " << w->user_id << " on "
                  << w->date_redeemed << "\n";
    }
    return 0;
}

json delivery_json(const DeliveryInfo& d) {
    auto opt = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
    return json{{"id", d.id},
                {"reward_id", d.reward_id ? json(*d.reward_id) : json(nullptr)},
                {"target", d.target},
                {"operation", d.operation},
                {"endpoint", opt(d.endpoint)},
                {"event_id", opt(d.event_id)},
                {"state", d.state},
                {"attempts", d.attempts},
                {"next_attempt_at", opt(d.state == "queued" ? d.next_attempt_at : "")},
                {"last_error", opt(d.last_error)},
                {"external_id", opt(d.external_id)},
                {"created_at", d.created_at},
                {"done_at", opt(d.done_at)}};
}

int cmd_deliveries(const std::string& db, const std::string& state, int limit) {
    if (!state.empty() && state != "queued" && state != "done" && state != "dead")
        throw Failure{"bad state \"" + clean_text(state, 20) + "\": expected queued, done or dead", "bad_state"};
    auto store = open(db, false);
    auto rows = store->deliveries(state, limit);
    if (g_json) {
        json arr = json::array();
        for (const auto& d : rows) arr.push_back(delivery_json(d));
        print_json({{"deliveries", arr}});
        return 0;
    }
    if (rows.empty()) {
        std::cout << "no deliveries" << (state.empty() ? "" : " " + state) << "\n";
        return 0;
    }
    std::cout << pad("ID", 8) << pad("REWARD", 8) << pad("TARGET", 18) << pad("STATE", 8) << pad("TRIES", 6)
              << pad("NEXT/DONE", 22) << "LAST ERROR\n";
    for (const auto& d : rows) {
        std::string what = d.target == "stripe" ? "stripe " + d.operation : d.operation;
        std::cout << pad(std::to_string(d.id), 8) << pad(d.reward_id ? std::to_string(*d.reward_id) : "-", 8)
                  << pad(what, 18) << pad(d.state, 8) << pad(std::to_string(d.attempts), 6)
                  << pad(d.state == "queued" ? d.next_attempt_at : d.done_at, 22) << d.last_error << "\n";
    }
    return 0;
}

int cmd_deliveries_retry(const std::string& db, const std::string& id_text) {
    std::int64_t id = parse_id(id_text, "delivery");
    auto store = open(db, false);
    auto before = store->delivery(id);
    if (!before) throw Failure{"no delivery with id " + std::to_string(id), "unknown_delivery"};
    if (!store->retry_delivery(id, now_text())) {
        throw Failure{"delivery " + std::to_string(id) + " is " + before->state + ", not dead: nothing to retry",
                      "not_dead"};
    }
    auto d = store->delivery(id);
    if (g_json) {
        print_json(delivery_json(*d));
    } else {
        std::cout << "delivery " << id << " queued again (it failed " << before->attempts
                  << " times; last error: " << before->last_error << ")\n";
    }
    return 0;
}

int cmd_user_set(const std::string& db, const std::string& user, const std::string& customer) {
    check_user(user);
    if (!referral::is_customer(customer)) {
        throw Failure{"bad Stripe customer \"" + clean_text(customer, 70) +
                          "\": expected 1 to 64 of A-Z, a-z, 0-9 and _ (e.g. cus_NffrFeUfNV2Hib)",
                      "bad_customer"};
    }
    auto store = open(db, false);
    in_transaction(*store, [&] {
        store->set_customer(user, customer, now_text());
        return true;
    });
    if (g_json) {
        print_json({{"user", user}, {"stripe_customer", customer}});
    } else {
        std::cout << "user " << user << ": Stripe customer " << customer << "\n";
    }
    return 0;
}

int cmd_review_list(const std::string& db) {
    auto store = open(db, false);
    auto rows = store->rewards_in_review();
    if (g_json) {
        json arr = json::array();
        for (const auto& w : rows) arr.push_back(reward_json(w));
        print_json({{"rewards", arr}});
        return 0;
    }
    if (rows.empty()) {
        std::cout << "no rewards in review\n";
        return 0;
    }
    std::cout << pad("ID", 8) << pad("USER", 20) << pad("REWARD", 22) << pad("REASON", 16) << "CREDITED\n";
    for (const auto& w : rows) {
        std::cout << pad(std::to_string(w.id), 8) << pad(w.user_id, 20) << pad(reward_label(w), 22)
                  << pad(w.reason, 16) << w.date_credited << "\n";
    }
    return 0;
}

int cmd_review_decide(const std::string& db, const std::string& id_text, bool approve, const std::string& reason) {
    std::int64_t id = parse_id(id_text, "reward");
    if (reason.size() > 256 || clean_text(reason, 256) != reason)
        throw Failure{"bad reason: expected at most 256 printable characters", "bad_reason"};
    auto store = open(db, false);
    Lifecycle lifecycle(g_config);
    bool done = in_transaction(*store, [&] { return lifecycle.decide(*store, id, approve, reason, now_text()); });
    auto w = store->reward(id);
    if (!w) throw Failure{"no reward with id " + std::to_string(id), "unknown_reward"};
    if (!done) {
        Failure f{"reward " + std::to_string(id) + " is " + w->status + ", not in review: it cannot be " +
                      (approve ? "approved" : "rejected"),
                  "not_in_review"};
        f.extra = reward_json(*w);
        throw f;
    }
    if (g_json) {
        print_json(reward_json(*w));
    } else {
        std::cout << (approve ? "approved" : "rejected") << " reward " << id << ": " << reward_label(*w) << " for "
                  << w->user_id << " (now " << w->status << ")\n";
    }
    return 0;
}

int cmd_code_revoke(const std::string& db, const std::string& code) {
    if (!referral::is_valid_code(code))
        throw Failure{"bad code \"" + clean_text(code, 70) + "\": expected 4 to 64 of A-Z, a-z, 0-9, _ and -",
                      "bad_code"};
    auto store = open(db, false);
    bool done = in_transaction(*store, [&] { return store->revoke_code(code, now_text()); });
    auto c = store->code_info(code);
    if (!c) throw Failure{"no referral code " + code, "unknown_code"};
    if (!done) throw Failure{"code " + code + " was already revoked on " + c->revoked_at, "already_revoked"};
    if (g_json) {
        print_json(code_json(*c, g_config.link_base));
    } else {
        std::cout << "revoked " << code << " (" << c->user_id << "): clicks on it still count, it links no one\n";
    }
    return 0;
}

int cmd_forget(const std::string& db, const std::string& user) {
    check_user(user);
    auto store = open(db, false);
    if (!store->user_known(user)) throw Failure{"unknown user " + user, "unknown_user"};
    Forgotten f = in_transaction(*store, [&] { return store->forget(user); });
    if (g_json) {
        print_json({{"user", user},
                    {"responses_cleared", f.responses},
                    {"visitor_rows_deleted", f.visitors},
                    {"visitor_ids", f.visitor_ids}});
    } else {
        std::cout << "forgot " << user << ": ip, user agent, URLs and visitor id cleared in " << f.responses
                  << " responses; " << f.visitors << " device records deleted (" << f.visitor_ids.size()
                  << " visitor ids); rewards and counts kept\n";
    }
    return 0;
}

int cmd_stats(const std::string& db) {
    auto store = open(db, false);
    auto rows = store->stats();
    auto counted = store->counters();
    if (g_json) {
        json arr = json::array();
        for (const auto& s : rows) {
            arr.push_back({{"user", s.user_id}, {"codes", s.codes}, {"clicks", s.clicks}, {"signups", s.signups},
                           {"subscriptions", s.subscriptions}, {"rewards", s.rewards}});
        }
        json figures = json::object();
        for (const auto& f : counted) figures[f.first] = f.second;
        print_json({{"referrers", arr}, {"counted", figures}});
        return 0;
    }
    if (!counted.empty()) {
        // What the worker blocked, reviewed or reversed, and why.
        std::cout << "counted by the worker:";
        for (const auto& f : counted) std::cout << " " << f.first << "=" << f.second;
        std::cout << "\n";
    }
    if (rows.empty()) {
        std::cout << "no referral activity yet\n";
        return 0;
    }
    std::cout << pad("REFERRER", 30) << pad("CLICKS", 10) << pad("SIGNUPS", 10) << pad("SUBSCRIPTIONS", 15)
              << "REWARDS\n";
    for (const auto& s : rows) {
        std::cout << pad(s.user_id, 30) << pad(std::to_string(s.clicks), 10) << pad(std::to_string(s.signups), 10)
                  << pad(std::to_string(s.subscriptions), 15) << s.rewards << "\n";
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"referralctl: the referral program's database, from the command line"};
    app.require_subcommand(1);
    app.fallthrough();
    std::string database, config_file, user, label, reward_id, state, customer, reason;
    int limit = 100;
    app.add_option("--database", database,
                   "sqlite:///path/file.db, a plain path, or postgresql://... (default: $REFERRAL_DATABASE, "
                   "then the config's)");
    app.add_option("--config", config_file,
                   "the worker's TOML file: database, webhooks, reward rules, link_base (serve: redis, stream, group)");
    app.add_flag("--json", g_json, "print JSON");

    auto* migrate = app.add_subcommand("migrate", "create or upgrade the schema");
    int migrate_to = kSchemaVersion;
    migrate->add_option("--to", migrate_to, "stop at this schema version (staged upgrades, tests)");
    auto* code = app.add_subcommand("code", "a user's referral codes");
    code->require_subcommand(1);
    auto* code_create = code->add_subcommand("create", "print the user's code for a label, creating it when missing");
    code_create->add_option("--user", user, "the application's user id")->required();
    code_create->add_option("--label", label, "e.g. a channel; empty: the primary code");
    std::string expires, revoke_code;
    code_create->add_option("--expires", expires, "the code ends this long from now (e.g. 30d), new or existing");
    auto* code_revoke = code->add_subcommand("revoke", "revoke a code: clicks still count, it links no one");
    code_revoke->add_option("CODE", revoke_code, "the code")->required();
    auto* forget = app.add_subcommand("forget", "erase a user's personal data (ip, user agent, URLs, visitor ids)");
    forget->add_option("--user", user, "the application's user id")->required();
    auto* code_show = code->add_subcommand("show", "the user's codes");
    code_show->add_option("--user", user, "the application's user id")->required();
    auto* rewards = app.add_subcommand("rewards", "what a user earned");
    rewards->add_option("--user", user, "the application's user id")->required();
    auto* redeem = app.add_subcommand("redeem", "mark a reward redeemed");
    redeem->add_option("REWARD_ID", reward_id, "the reward's id")->required();
    auto* stats = app.add_subcommand("stats", "per referrer: clicks, signups, subscriptions, rewards");
    auto* deliveries = app.add_subcommand("deliveries", "requests to Stripe and webhooks, newest first");
    deliveries->add_option("--state", state, "queued, done or dead");
    deliveries->add_option("--limit", limit, "at most this many (default 100)")->check(CLI::Range(1, 100000));
    auto* deliveries_retry = deliveries->add_subcommand("retry", "queue a dead delivery again");
    deliveries_retry->add_option("ID", reward_id, "the delivery's id")->required();
    auto* user_cmd = app.add_subcommand("user", "a user's settings");
    user_cmd->require_subcommand(1);
    auto* user_set = user_cmd->add_subcommand("set", "set a user's Stripe customer");
    user_set->add_option("--user", user, "the application's user id")->required();
    user_set->add_option("--stripe-customer", customer, "the user's Stripe customer id (cus_...)")->required();
    auto* review = app.add_subcommand("review", "rewards an abuse rule sent to review");
    auto* review_approve = review->add_subcommand("approve", "make a reward in review available");
    review_approve->add_option("ID", reward_id, "the reward's id")->required();
    auto* review_reject = review->add_subcommand("reject", "refuse a reward in review (final)");
    review_reject->add_option("ID", reward_id, "the reward's id")->required();
    review_reject->add_option("--reason", reason, "why, kept in the reward's reason");
    referral::ctl::ServeOptions serve_opts;
    auto* serve = app.add_subcommand("serve", "the HTTP API, /metrics and the dashboard");
    serve->add_option("--listen", serve_opts.listen, "HOST:PORT (default 127.0.0.1:8082)");
    serve->add_option("--token-file", serve_opts.token_file, "file holding the API token")->required();
    serve->add_option("--dashboard-dir", serve_opts.dashboard_dir,
                      "serve the dashboard's files from this directory (src/ctl/dashboard) instead of the copy built in");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? 0 : 2;
    }
    if (!config_file.empty()) {
        try {
            g_config = load_config(config_file);
        } catch (const ConfigError& e) {
            std::fprintf(stderr, "referralctl: %s\n", e.what());
            return 2;
        }
    }
    if (database.empty()) {
        const char* env = std::getenv("REFERRAL_DATABASE");
        database = env && *env ? env : g_config.database;
    }
    try {
        if (migrate->parsed()) return cmd_migrate(database, migrate_to);
        if (code_create->parsed()) return cmd_code_create(database, user, label, expires);
        if (code_revoke->parsed()) return cmd_code_revoke(database, revoke_code);
        if (forget->parsed()) return cmd_forget(database, user);
        if (code_show->parsed()) return cmd_code_show(database, user);
        if (rewards->parsed()) return cmd_rewards(database, user);
        if (redeem->parsed()) return cmd_redeem(database, reward_id);
        if (stats->parsed()) return cmd_stats(database);
        if (deliveries_retry->parsed()) return cmd_deliveries_retry(database, reward_id);
        if (deliveries->parsed()) return cmd_deliveries(database, state, limit);
        if (user_set->parsed()) return cmd_user_set(database, user, customer);
        if (review_approve->parsed()) return cmd_review_decide(database, reward_id, true, "");
        if (review_reject->parsed()) return cmd_review_decide(database, reward_id, false, reason);
        if (review->parsed()) return cmd_review_list(database);
        if (serve->parsed()) {
            DatabaseUrl url;
            std::string err;
            if (!parse_database_url(database, &url, &err)) throw Failure{"--database: " + err, "bad_database"};
            return referral::ctl::serve(serve_opts, g_config, url);
        }
    } catch (const Failure& f) {
        std::fprintf(stderr, "referralctl: %s\n", f.message.c_str());
        if (g_json) {
            json j{{"error", f.message}, {"reason", f.reason}};
            if (!f.extra.empty()) j["reward"] = f.extra;
            print_json(j);
        }
        return 1;
    } catch (const DbError& e) {
        std::fprintf(stderr, "referralctl: %s\n", e.what());
        if (g_json) print_json({{"error", e.what()}, {"reason", "database"}});
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "referralctl: %s\n", e.what());
        if (g_json) print_json({{"error", e.what()}, {"reason", "internal"}});
        return 1;
    }
    return 2;
}

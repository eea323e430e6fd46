#include "worker/config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <toml.hpp>

#include "core/code.h"
#include "worker/util.h"

namespace referral::worker {

const char* to_string(Plan p) noexcept {
    switch (p) {
        case Plan::free: return "free";
        case Plan::paid: return "paid";
        case Plan::any: return "any";
    }
    return "any";
}

const char* to_string(GrantKind k) noexcept {
    return k == GrantKind::credit ? "credit" : "trial_days";
}

const char* to_string(Deliver d) noexcept {
    switch (d) {
        case Deliver::unset: return "app";  // not resolved by parse_config: no Stripe, so the app
        case Deliver::app: return "app";
        case Deliver::stripe_balance: return "stripe_balance";
        case Deliver::stripe_promotion_code: return "stripe_promotion_code";
    }
    return "app";
}

bool parse_deliver(std::string_view s, Deliver* out) noexcept {
    if (s == "app") *out = Deliver::app;
    else if (s == "stripe_balance") *out = Deliver::stripe_balance;
    else if (s == "stripe_promotion_code") *out = Deliver::stripe_promotion_code;
    else return false;
    return true;
}

const char* const kWebhookEvents[6] = {"referral.linked", "reward.created", "reward.available",
                                       "reward.paid",     "reward.reversed", "reward.redeemed"};

const RewardRule* Config::rule(std::string_view name) const {
    for (const RewardRule& r : rules) {
        if (r.name == name) return &r;
    }
    return nullptr;
}

std::vector<const WebhookConfig*> Config::webhooks_for(std::string_view event) const {
    std::vector<const WebhookConfig*> out;
    for (const WebhookConfig& w : webhooks) {
        for (const std::string& e : w.events) {
            if (e == event) {
                out.push_back(&w);
                break;
            }
        }
    }
    return out;
}

std::vector<RewardRule> default_rules() {
    std::vector<RewardRule> rules(2);
    rules[0].name = "give-10-get-10";
    rules[0].action = "subscribe";
    rules[0].referrer_plan = Plan::paid;
    rules[0].referrer = {GrantKind::credit, 1000, "usd"};
    rules[0].referee = {GrantKind::credit, 1000, "usd"};
    rules[0].cap = 32;
    rules[1].name = "free-trial-extension";
    rules[1].action = "signup";
    rules[1].referrer_plan = Plan::free;
    rules[1].referrer = {GrantKind::trial_days, 7, ""};
    rules[1].referee = {GrantKind::trial_days, 7, ""};
    rules[1].cap = 32;
    return rules;
}

bool rule_applies(const RewardRule& rule, std::string_view action,
                  std::string_view referrer_plan) noexcept {
    if (rule.action != action) return false;
    switch (rule.referrer_plan) {
        case Plan::any: return true;
        case Plan::paid: return referrer_plan == "paid";
        case Plan::free: return referrer_plan != "paid";
    }
    return false;
}

std::string reward_label(GrantKind kind, std::int64_t amount, std::string_view currency) {
    if (kind == GrantKind::trial_days) {
        return std::to_string(amount) + (amount == 1 ? " extra trial day" : " extra trial days");
    }
    std::string cur(currency);
    for (auto& c : cur) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    // Currencies without minor units.
    static const std::set<std::string> zero_decimal = {"jpy", "krw", "vnd", "clp", "isk", "huf"};
    std::string number;
    std::int64_t a = amount < 0 ? -amount : amount;
    if (zero_decimal.count(cur)) {
        number = std::to_string(a);
    } else {
        char frac[8];
        std::snprintf(frac, sizeof(frac), "%02d", static_cast<int>(a % 100));
        number = std::to_string(a / 100) + "." + frac;
    }
    std::string sign = amount < 0 ? "-" : "";
    const char* symbol = nullptr;
    if (cur == "usd") symbol = "$";
    else if (cur == "eur") symbol = "\u20ac";
    else if (cur == "gbp") symbol = "\u00a3";
    else if (cur == "jpy") symbol = "\u00a5";
    if (symbol) return sign + symbol + number + " credit";
    std::string upper = cur;
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return sign + number + " " + upper + " credit";
}

// ------------------------------------------------------------ addresses

bool parse_redis_url(std::string_view url, RedisAddress* out, std::string* err) {
    RedisAddress a;
    if (url.rfind("unix:", 0) == 0) {
        std::string_view path = url.substr(5);
        if (path.rfind("//", 0) == 0) path.remove_prefix(2);  // unix:///path
        if (path.empty() || path[0] != '/') {
            *err = "a unix socket address is unix:/absolute/path";
            return false;
        }
        a.unix_path = std::string(path);
        a.port = 0;
        *out = a;
        return true;
    }
    std::string_view rest;
    if (url.rfind("redis-sentinel://", 0) == 0) {
        rest = url.substr(17);
        std::size_t hash = rest.find('#');
        if (hash == std::string_view::npos || hash + 1 == rest.size()) {
            *err = "a Sentinel address names its service: redis-sentinel://host:port[,host:port...][/db]#service";
            return false;
        }
        a.service = std::string(rest.substr(hash + 1));
        if (!is_token(a.service, 128)) {
            *err = "bad service name";
            return false;
        }
        rest = rest.substr(0, hash);
    } else if (url.rfind("redis://", 0) == 0) {
        rest = url.substr(8);
    } else {
        *err = "expected redis://[:password@]host:port[/db], unix:/path or "
               "redis-sentinel://[:password@]host:port[,host:port...][/db]#service";
        return false;
    }
    std::size_t slash = rest.find('/');
    std::string_view hostpart = rest.substr(0, slash);
    if (slash != std::string_view::npos) {
        std::string_view db = rest.substr(slash + 1);
        if (!db.empty()) {
            std::int64_t n;
            if (!parse_int64(db, &n) || n < 0 || n > 65535) {
                *err = "bad database number \"" + std::string(db) + "\"";
                return false;
            }
            a.db = static_cast<int>(n);
        }
    }
    std::size_t at = hostpart.rfind('@');
    if (at != std::string_view::npos) {
        std::string_view auth = hostpart.substr(0, at);
        hostpart = hostpart.substr(at + 1);
        std::size_t colon = auth.find(':');
        if (colon == std::string_view::npos) {
            a.password = std::string(auth);  // redis://password@host
        } else {
            a.user = std::string(auth.substr(0, colon));
            a.password = std::string(auth.substr(colon + 1));
        }
    }
    if (!a.service.empty()) {
        // Sentinels: host:port[,host:port...], each parsed as a plain address.
        while (!hostpart.empty()) {
            std::size_t comma = hostpart.find(',');
            RedisAddress one;
            std::string sub_err;
            if (!parse_redis_url("redis://" + std::string(hostpart.substr(0, comma)), &one, &sub_err)) {
                *err = "Sentinel " + std::string(hostpart.substr(0, comma)) + ": " + sub_err;
                return false;
            }
            const bool has_port = hostpart.substr(0, comma).find(':') != std::string_view::npos;
            a.sentinels.emplace_back(one.host, has_port ? one.port : 26379);
            if (comma == std::string_view::npos) break;
            hostpart = hostpart.substr(comma + 1);
        }
        if (a.sentinels.empty() || a.sentinels.size() > 16) {
            *err = "expected 1 to 16 Sentinels";
            return false;
        }
        a.host = a.sentinels[0].first;  // replaced by the primary once asked
        a.port = a.sentinels[0].second;
        *out = a;
        return true;
    }
    std::string_view host = hostpart;
    if (!hostpart.empty() && hostpart[0] == '[') {  // [::1]:6379
        std::size_t close = hostpart.find(']');
        if (close == std::string_view::npos) {
            *err = "unterminated [ in the host";
            return false;
        }
        host = hostpart.substr(1, close - 1);
        hostpart = hostpart.substr(close + 1);
        if (!hostpart.empty() && hostpart[0] != ':') {
            *err = "bad host";
            return false;
        }
        if (!hostpart.empty()) {
            std::int64_t p;
            if (!parse_int64(hostpart.substr(1), &p) || p < 1 || p > 65535) {
                *err = "bad port \"" + std::string(hostpart.substr(1)) + "\"";
                return false;
            }
            a.port = static_cast<int>(p);
        }
    } else {
        std::size_t colon = hostpart.rfind(':');
        if (colon != std::string_view::npos) {
            host = hostpart.substr(0, colon);
            std::int64_t p;
            if (!parse_int64(hostpart.substr(colon + 1), &p) || p < 1 || p > 65535) {
                *err = "bad port \"" + std::string(hostpart.substr(colon + 1)) + "\"";
                return false;
            }
            a.port = static_cast<int>(p);
        }
    }
    if (host.empty()) {
        *err = "missing host";
        return false;
    }
    for (char c : host) {
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' ||
              c == '_')) {
            *err = "bad host";
            return false;
        }
    }
    a.host = std::string(host);
    *out = a;
    return true;
}

std::string describe(const RedisAddress& a) {
    if (!a.unix_path.empty()) return "unix:" + a.unix_path + (a.db ? " db " + std::to_string(a.db) : "");
    if (!a.service.empty()) {
        std::string s = "redis-sentinel://";
        if (!a.password.empty()) s += ":***@";
        for (std::size_t i = 0; i < a.sentinels.size(); i++)
            s += (i ? "," : "") + a.sentinels[i].first + ":" + std::to_string(a.sentinels[i].second);
        if (a.db) s += "/" + std::to_string(a.db);
        return s + "#" + a.service;
    }
    std::string s = "redis://";
    if (!a.password.empty()) s += (a.user.empty() ? "" : a.user) + ":***@";
    s += a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host;
    s += ":" + std::to_string(a.port);
    if (a.db) s += "/" + std::to_string(a.db);
    return s;
}

bool parse_database_url(std::string_view url, DatabaseUrl* out, std::string* err) {
    if (url.empty()) {
        *err = "empty database address";
        return false;
    }
    if (url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0) {
        out->kind = DbKind::postgresql;
        out->target = std::string(url);
        return true;
    }
    std::string_view path = url;
    if (url.rfind("sqlite://", 0) == 0) {
        path = url.substr(9);  // sqlite:///abs -> /abs, sqlite://rel -> rel
    } else if (url.rfind("sqlite:", 0) == 0) {
        path = url.substr(7);
    } else if (url.find("://") != std::string_view::npos) {
        *err = "unknown database scheme in \"" + std::string(url.substr(0, url.find("://"))) +
               "\" (expected sqlite:/// or postgresql://)";
        return false;
    }
    if (path.empty()) {
        *err = "missing SQLite file path";
        return false;
    }
    out->kind = DbKind::sqlite;
    out->target = std::string(path);
    return true;
}

std::string describe(const DatabaseUrl& d) {
    if (d.kind == DbKind::sqlite) return "sqlite:" + d.target;
    // postgresql://user:secret@host/db -> postgresql://user:***@host/db
    std::string s = d.target;
    std::size_t scheme = s.find("://");
    std::size_t at = s.find('@', scheme + 3);
    if (scheme != std::string::npos && at != std::string::npos) {
        std::size_t colon = s.find(':', scheme + 3);
        if (colon != std::string::npos && colon < at) s.replace(colon + 1, at - colon - 1, "***");
    }
    std::size_t pw = s.find("password=");
    if (pw != std::string::npos) {
        std::size_t end = s.find_first_of("& ", pw);
        s.replace(pw + 9, (end == std::string::npos ? s.size() : end) - pw - 9, "***");
    }
    return s;
}

bool parse_duration_ms(std::string_view s, std::int64_t* ms) noexcept {
    if (s.empty()) return false;
    std::int64_t total = 0;
    std::size_t i = 0;
    bool bare = true;
    while (i < s.size()) {
        std::size_t start = i;
        std::int64_t n = 0;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
            if (i - start >= 12) return false;
            n = n * 10 + (s[i] - '0');
            i++;
        }
        if (i == start) return false;
        std::int64_t unit;
        if (i == s.size()) {
            if (!bare) return false;  // "1h30" is ambiguous
            unit = 1000;
        } else if (s.compare(i, 2, "ms") == 0) {
            unit = 1;
            i += 2;
        } else {
            switch (s[i]) {
                case 's': unit = 1000; break;
                case 'm': unit = 60 * 1000; break;
                case 'h': unit = 3600 * 1000; break;
                case 'd': unit = 86400LL * 1000; break;
                case 'w': unit = 7 * 86400LL * 1000; break;
                case 'M': unit = 30 * 86400LL * 1000; break;
                case 'y': unit = 365 * 86400LL * 1000; break;
                default: return false;
            }
            i++;
        }
        bare = false;
        total += n * unit;
        if (total > 100LL * 365 * 86400 * 1000) return false;
    }
    *ms = total;
    return true;
}

// ----------------------------------------------------------------- TOML

namespace {

using Value = toml::value;

std::string type_name(const Value& v) {
    switch (v.type()) {
        case toml::value_t::boolean: return "a boolean";
        case toml::value_t::integer: return "an integer";
        case toml::value_t::floating: return "a float";
        case toml::value_t::string: return "a string";
        case toml::value_t::offset_datetime:
        case toml::value_t::local_datetime:
        case toml::value_t::local_date:
        case toml::value_t::local_time: return "a date or time";
        case toml::value_t::array: return "an array";
        case toml::value_t::table: return "a table";
        default: return "nothing";
    }
}

class Reader {
public:
    explicit Reader(std::string file) : file_(std::move(file)) {}

    [[noreturn]] void fail(const Value& v, const std::string& key, const std::string& what) const {
        std::ostringstream m;
        m << file_ << ":" << v.location().line() << ": key '" << key << "': " << what;
        throw ConfigError(m.str());
    }

    // Every key of `table` must be in `known`; reports the first unknown
    // one (by line).
    void only_keys(const Value& table, const std::string& prefix,
                   std::initializer_list<const char*> known) const {
        const Value* worst = nullptr;
        std::string worst_key;
        for (const auto& kv : table.as_table()) {
            bool ok = false;
            for (const char* k : known) ok = ok || kv.first == k;
            if (ok) continue;
            if (!worst || kv.second.location().line() < worst->location().line()) {
                worst = &kv.second;
                worst_key = kv.first;
            }
        }
        if (worst) fail(*worst, prefix + worst_key, "unknown key");
    }

    std::string string(const Value& v, const std::string& key) const {
        if (!v.is_string()) fail(v, key, "expected a string, got " + type_name(v));
        return v.as_string().str;
    }

    std::int64_t integer(const Value& v, const std::string& key) const {
        if (!v.is_integer()) fail(v, key, "expected an integer, got " + type_name(v));
        return v.as_integer();
    }

    // A duration: "60s" or an integer number of seconds.
    std::int64_t duration(const Value& v, const std::string& key) const {
        if (v.is_integer()) {
            if (v.as_integer() < 0 || v.as_integer() > 100LL * 365 * 86400)
                fail(v, key, "bad value " + std::to_string(v.as_integer()));
            return v.as_integer() * 1000;
        }
        if (!v.is_string())
            fail(v, key, "expected a duration such as \"60s\" or \"30d\", got " + type_name(v));
        std::int64_t ms;
        if (!parse_duration_ms(v.as_string().str, &ms))
            fail(v, key, "bad value \"" + v.as_string().str +
                             "\": expected a duration such as \"60s\", \"15m\" or \"30d\"");
        return ms;
    }

    Grant grant(const Value& v, const std::string& key) const {
        if (!v.is_table())
            fail(v, key, "expected a table such as { kind = \"credit\", amount = 1000, currency = \"usd\" }, got " +
                             type_name(v));
        only_keys(v, key + ".", {"kind", "amount", "currency", "deliver"});
        const auto& t = v.as_table();
        Grant g;
        auto kind = t.find("kind");
        if (kind == t.end()) fail(v, key + ".kind", "missing (credit or trial_days)");
        std::string k = string(kind->second, key + ".kind");
        if (k == "credit") g.kind = GrantKind::credit;
        else if (k == "trial_days") g.kind = GrantKind::trial_days;
        else fail(kind->second, key + ".kind", "bad value \"" + k + "\": expected credit or trial_days");
        auto amount = t.find("amount");
        if (amount == t.end()) fail(v, key + ".amount", "missing");
        g.amount = integer(amount->second, key + ".amount");
        if (g.amount <= 0 || g.amount > 1000000000000LL)
            fail(amount->second, key + ".amount",
                 "bad value " + std::to_string(g.amount) + ": expected a positive integer");
        auto cur = t.find("currency");
        if (g.kind == GrantKind::credit) {
            if (cur == t.end()) fail(v, key + ".currency", "missing (a credit needs a 3-letter currency)");
            std::string c = string(cur->second, key + ".currency");
            bool ok = c.size() == 3;
            for (auto& ch : c) {
                if (!std::isalpha(static_cast<unsigned char>(ch))) ok = false;
                ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
            }
            if (!ok) fail(cur->second, key + ".currency", "bad value \"" + cur->second.as_string().str +
                                                               "\": expected 3 letters such as \"usd\"");
            g.currency = c;
        } else if (cur != t.end()) {
            fail(cur->second, key + ".currency", "only a credit has a currency");
        }
        if (auto d = t.find("deliver"); d != t.end()) {
            std::string text = string(d->second, key + ".deliver");
            if (!parse_deliver(text, &g.deliver))
                fail(d->second, key + ".deliver",
                     "bad value \"" + text + "\": expected app, stripe_balance or stripe_promotion_code");
            if (g.kind == GrantKind::trial_days && g.deliver != Deliver::app)
                fail(d->second, key + ".deliver", "bad value \"" + text + "\": trial days are always delivered by the app");
        }
        return g;
    }

    RewardRule rule(const Value& v, const std::string& key, std::set<std::string>* names) const {
        if (!v.is_table()) fail(v, key, "expected a table ([[reward]]), got " + type_name(v));
        only_keys(v, key + ".", {"name", "action", "referrer_plan", "referrer", "referee", "cap", "hold",
                                 "clawback", "daily_cap"});
        const auto& t = v.as_table();
        RewardRule r;
        auto need = [&](const char* k) -> const Value& {
            auto it = t.find(k);
            if (it == t.end()) fail(v, key + "." + k, "missing");
            return it->second;
        };
        const Value& name = need("name");
        r.name = string(name, key + ".name");
        if (r.name.empty() || r.name.size() > 64 || !is_token(r.name, 64))
            fail(name, key + ".name", "bad value \"" + r.name + "\": expected 1 to 64 characters without spaces");
        if (!names->insert(r.name).second)
            fail(name, key + ".name", "bad value \"" + r.name + "\": another rule has this name");
        const Value& action = need("action");
        r.action = string(action, key + ".action");
        bool ok = !r.action.empty() && r.action.size() <= 32;
        for (char c : r.action) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
        if (!ok) fail(action, key + ".action", "bad value \"" + r.action + "\": expected [a-z0-9_]{1,32}");
        const Value& plan = need("referrer_plan");
        std::string p = string(plan, key + ".referrer_plan");
        if (p == "paid") r.referrer_plan = Plan::paid;
        else if (p == "free") r.referrer_plan = Plan::free;
        else if (p == "any") r.referrer_plan = Plan::any;
        else fail(plan, key + ".referrer_plan", "bad value \"" + p + "\": expected paid, free or any");
        r.referrer = grant(need("referrer"), key + ".referrer");
        r.referee = grant(need("referee"), key + ".referee");
        auto cap = t.find("cap");
        if (cap != t.end()) {
            r.cap = integer(cap->second, key + ".cap");
            if (r.cap < 0 || r.cap > 1000000000)
                fail(cap->second, key + ".cap", "bad value " + std::to_string(r.cap) + ": expected 0 or more");
        }
        if (auto it = t.find("daily_cap"); it != t.end()) {
            r.daily_cap = integer(it->second, key + ".daily_cap");
            if (r.daily_cap < 0 || r.daily_cap > 1000000000)
                fail(it->second, key + ".daily_cap",
                     "bad value " + std::to_string(r.daily_cap) + ": expected 0 or more");
        }
        if (auto it = t.find("hold"); it != t.end()) r.hold_ms = duration(it->second, key + ".hold");
        if (auto it = t.find("clawback"); it != t.end()) r.clawback_ms = duration(it->second, key + ".clawback");
        if (r.action == "refund" || r.action == "chargeback")
            fail(action, key + ".action", "bad value \"" + r.action + "\": a refund or chargeback reverses rewards, it earns none");
        return r;
    }

    StripeConfig stripe(const Value& v) const {
        if (!v.is_table()) fail(v, "stripe", "expected a table ([stripe]), got " + type_name(v));
        only_keys(v, "stripe.", {"api_key_file", "api_base", "api_version", "max_attempts", "timeout"});
        const auto& t = v.as_table();
        StripeConfig s;
        s.enabled = true;
        auto key = t.find("api_key_file");
        if (key == t.end()) fail(v, "stripe.api_key_file", "missing (the file holding the secret key sk_...)");
        s.api_key_file = string(key->second, "stripe.api_key_file");
        if (s.api_key_file.empty()) fail(key->second, "stripe.api_key_file", "bad value: empty path");
        if (auto it = t.find("api_base"); it != t.end()) {
            s.api_base = string(it->second, "stripe.api_base");
            if (!http_url(s.api_base)) fail(it->second, "stripe.api_base", "bad value \"" + s.api_base + "\": expected an http:// or https:// URL");
            while (!s.api_base.empty() && s.api_base.back() == '/') s.api_base.pop_back();
        }
        if (auto it = t.find("api_version"); it != t.end()) {
            s.api_version = string(it->second, "stripe.api_version");
            if (!is_token(s.api_version, 64))
                fail(it->second, "stripe.api_version", "bad value: expected a version such as \"2024-06-20\"");
        }
        if (auto it = t.find("max_attempts"); it != t.end()) s.max_attempts = attempts(it->second, "stripe.max_attempts");
        if (auto it = t.find("timeout"); it != t.end()) s.timeout_ms = timeout(it->second, "stripe.timeout");
        return s;
    }

    WebhookConfig webhook(const Value& v, const std::string& key) const {
        if (!v.is_table()) fail(v, key, "expected a table ([[webhook]]), got " + type_name(v));
        only_keys(v, key + ".", {"url", "secret_file", "events", "max_attempts", "timeout"});
        const auto& t = v.as_table();
        WebhookConfig w;
        auto url = t.find("url");
        if (url == t.end()) fail(v, key + ".url", "missing");
        w.url = string(url->second, key + ".url");
        if (!http_url(w.url)) fail(url->second, key + ".url", "bad value \"" + clean_text(w.url, 200) + "\": expected an http:// or https:// URL");
        auto secret = t.find("secret_file");
        if (secret == t.end()) fail(v, key + ".secret_file", "missing (the file holding the signing secret)");
        w.secret_file = string(secret->second, key + ".secret_file");
        if (w.secret_file.empty()) fail(secret->second, key + ".secret_file", "bad value: empty path");
        auto events = t.find("events");
        if (events == t.end()) {
            for (const char* e : kWebhookEvents) w.events.push_back(e);
        } else {
            if (!events->second.is_array())
                fail(events->second, key + ".events", "expected an array of event names, got " + type_name(events->second));
            for (const auto& e : events->second.as_array()) {
                std::string name = string(e, key + ".events");
                bool known = false;
                for (const char* k : kWebhookEvents) known = known || name == k;
                if (!known)
                    fail(e, key + ".events", "bad value \"" + clean_text(name, 64) +
                                                  "\": expected referral.linked, reward.created, reward.available, "
                                                  "reward.paid, reward.reversed or reward.redeemed");
                w.events.push_back(name);
            }
        }
        if (auto it = t.find("max_attempts"); it != t.end()) w.max_attempts = attempts(it->second, key + ".max_attempts");
        if (auto it = t.find("timeout"); it != t.end()) w.timeout_ms = timeout(it->second, key + ".timeout");
        return w;
    }

private:
    static bool http_url(const std::string& u) {
        std::size_t n = u.rfind("https://", 0) == 0 ? 8 : u.rfind("http://", 0) == 0 ? 7 : 0;
        if (n == 0 || u.size() <= n || u.size() > 2048) return false;
        for (unsigned char c : u) {
            if (c <= 0x20 || c >= 0x7f) return false;
        }
        return true;
    }

    std::int64_t timeout(const Value& v, const std::string& key) const {
        std::int64_t ms = duration(v, key);
        if (ms < 100 || ms > 600000) fail(v, key, "bad value: expected 100ms to 10m");
        return ms;
    }

    int attempts(const Value& v, const std::string& key) const {
        std::int64_t n = integer(v, key);
        if (n < 1 || n > 1000) fail(v, key, "bad value " + std::to_string(n) + ": expected 1 to 1000");
        return static_cast<int>(n);
    }

    std::string file_;
};

}  // namespace

bool valid_link_base(std::string_view s) noexcept {
    if (s.size() > 512) return false;
    std::size_t scheme = s.rfind("https://", 0) == 0 ? 8 : s.rfind("http://", 0) == 0 ? 7 : 0;
    if (scheme == 0 || s.size() == scheme) return false;
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (u <= ' ' || u >= 0x7f || c == '"' || c == '\'' || c == '<' || c == '>' || c == '\\' || c == '`')
            return false;
    }
    return true;
}

void validate_stream_name(const std::string& what, const std::string& value) {
    if (value.empty() || value.size() > 256) throw ConfigError(what + ": expected 1 to 256 characters");
    for (char c : value) {
        if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f)
            throw ConfigError(what + ": bad value \"" + value + "\": no spaces or control characters");
    }
}

Config parse_config(const std::string& text, const std::string& name) {
    Value root;
    try {
        std::istringstream in(text);
        root = toml::parse(in, name);
    } catch (const toml::syntax_error& e) {
        throw ConfigError(name + ": not valid TOML: " + e.what());
    } catch (const std::exception& e) {
        throw ConfigError(name + ": " + e.what());
    }
    Reader r(name);
    Config c;
    r.only_keys(root, "", {"redis", "stream", "group", "consumer", "database", "window", "batch",
                           "claim_idle", "reward", "stripe", "webhook", "click_dedup", "review_same_ip",
                           "retention", "retain", "link_base"});
    const auto& t = root.as_table();
    auto wrap = [&](const Value& v, const std::string& key, auto fn) {
        try {
            fn();
        } catch (const ConfigError& e) {
            // validate_stream_name names the key but not the line
            r.fail(v, key, std::string(e.what()).substr(key.size() + 2));
        }
    };
    if (auto it = t.find("redis"); it != t.end()) {
        c.redis = r.string(it->second, "redis");
        RedisAddress a;
        std::string err;
        if (!parse_redis_url(c.redis, &a, &err)) r.fail(it->second, "redis", "bad value: " + err);
    }
    if (auto it = t.find("stream"); it != t.end()) {
        c.stream = r.string(it->second, "stream");
        wrap(it->second, "stream", [&] { validate_stream_name("stream", c.stream); });
    }
    if (auto it = t.find("group"); it != t.end()) {
        c.group = r.string(it->second, "group");
        wrap(it->second, "group", [&] { validate_stream_name("group", c.group); });
    }
    if (auto it = t.find("consumer"); it != t.end()) {
        c.consumer = r.string(it->second, "consumer");
        wrap(it->second, "consumer", [&] { validate_stream_name("consumer", c.consumer); });
    }
    if (auto it = t.find("database"); it != t.end()) {
        c.database = r.string(it->second, "database");
        DatabaseUrl d;
        std::string err;
        if (!parse_database_url(c.database, &d, &err)) r.fail(it->second, "database", "bad value: " + err);
        c.database_from_file = true;
    }
    if (auto it = t.find("window"); it != t.end()) {
        c.window_ms = r.duration(it->second, "window");
        if (c.window_ms <= 0) r.fail(it->second, "window", "bad value: must be longer than 0");
    }
    if (auto it = t.find("batch"); it != t.end()) {
        std::int64_t b = r.integer(it->second, "batch");
        if (b < 1 || b > kMaxBatch)
            r.fail(it->second, "batch", "bad value " + std::to_string(b) + ": expected 1 to " +
                                            std::to_string(kMaxBatch));
        c.batch = static_cast<int>(b);
    }
    if (auto it = t.find("claim_idle"); it != t.end()) {
        c.claim_idle_ms = r.duration(it->second, "claim_idle");
        // Below a second, entries in flight at a live consumer would be
        // taken from it. (The flag --claim-idle 0 stays allowed: for tests.)
        if (c.claim_idle_ms < 1000) r.fail(it->second, "claim_idle", "bad value: must be at least 1s");
    }
    if (auto it = t.find("link_base"); it != t.end()) {
        c.link_base = r.string(it->second, "link_base");
        if (!valid_link_base(c.link_base))
            r.fail(it->second, "link_base",
                   "bad value: expected an http:// or https:// URL such as \"https://example.com/r/\"");
    }
    if (auto it = t.find("reward"); it != t.end()) {
        if (!it->second.is_array())
            r.fail(it->second, "reward", "expected an array of tables ([[reward]]), got " + type_name(it->second));
        c.rules.clear();
        std::set<std::string> names;
        std::size_t i = 0;
        for (const auto& item : it->second.as_array()) {
            c.rules.push_back(r.rule(item, "reward[" + std::to_string(i) + "]", &names));
            i++;
        }
    }
    if (auto it = t.find("click_dedup"); it != t.end()) c.click_dedup_ms = r.duration(it->second, "click_dedup");
    if (auto it = t.find("review_same_ip"); it != t.end()) {
        if (!it->second.is_boolean())
            r.fail(it->second, "review_same_ip", "expected true or false, got " + type_name(it->second));
        c.review_same_ip = it->second.as_boolean();
    }
    if (auto it = t.find("retention"); it != t.end()) {
        c.retention_ms = r.duration(it->second, "retention");
        if (c.retention_ms > 0 && c.retention_ms < 86400LL * 1000)
            r.fail(it->second, "retention", "bad value: at least 1d (or 0s: keep everything)");
    }
    if (auto it = t.find("retain"); it != t.end()) {
        c.retain_ms = r.duration(it->second, "retain");
        if (c.retain_ms > 0 && c.retain_ms < 60LL * 1000)
            r.fail(it->second, "retain", "bad value: at least 1m (or 0s: never trim)");
    }
    if (auto it = t.find("stripe"); it != t.end()) c.stripe = r.stripe(it->second);
    if (auto it = t.find("webhook"); it != t.end()) {
        if (!it->second.is_array())
            r.fail(it->second, "webhook", "expected an array of tables ([[webhook]]), got " + type_name(it->second));
        std::size_t i = 0;
        for (const auto& item : it->second.as_array()) {
            c.webhooks.push_back(r.webhook(item, "webhook[" + std::to_string(i) + "]"));
            i++;
        }
    }
    // A credit goes to Stripe's customer balance when Stripe is configured;
    // trial days (and everything without Stripe) are the application's.
    for (RewardRule& rule : c.rules) {
        for (Grant* g : {&rule.referrer, &rule.referee}) {
            if (g->deliver == Deliver::unset)
                g->deliver = g->kind == GrantKind::credit && c.stripe.enabled ? Deliver::stripe_balance : Deliver::app;
            if (g->deliver != Deliver::app && !c.stripe.enabled) {
                const auto& rules = t.at("reward").as_array();
                std::size_t i = static_cast<std::size_t>(&rule - c.rules.data());
                r.fail(rules.at(i), "reward[" + std::to_string(i) + "]." + (g == &rule.referrer ? "referrer" : "referee") + ".deliver",
                       std::string("bad value \"") + to_string(g->deliver) + "\": needs a [stripe] table");
            }
        }
    }
    return c;
}

std::string read_secret_file(const std::string& what, const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ConfigError(what + ": cannot read \"" + path + "\": " + std::strerror(errno));
    std::string text;
    char buf[4096];
    while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
        text.append(buf, static_cast<std::size_t>(in.gcount()));
        if (text.size() > 65536) throw ConfigError(what + ": \"" + path + "\" is larger than 64 KiB");
    }
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    if (text.empty()) throw ConfigError(what + ": \"" + path + "\" is empty");
    return text;
}

void load_secrets(Config* c) {
    if (c->stripe.enabled) c->stripe.api_key = read_secret_file("stripe.api_key_file", c->stripe.api_key_file);
    for (std::size_t i = 0; i < c->webhooks.size(); i++) {
        c->webhooks[i].secret =
            read_secret_file("webhook[" + std::to_string(i) + "].secret_file", c->webhooks[i].secret_file);
    }
}

Config load_config(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ConfigError(path + ": cannot read the file");
    std::ostringstream buf;
    buf << in.rdbuf();
    return parse_config(buf.str(), path);
}

}  // namespace referral::worker

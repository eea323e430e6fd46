// The worker's configuration: TOML file, command-line overrides, reward
// rules, and the Redis and database addresses (SPEC "The worker and the main
// database").
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace referral::worker {

enum class Plan { free, paid, any };
enum class GrantKind { credit, trial_days };

const char* to_string(Plan p) noexcept;
const char* to_string(GrantKind k) noexcept;

// Who fulfils a reward (SPEC "Reward lifecycle"): the application, told
// by webhooks, or the worker through Stripe.
enum class Deliver { unset, app, stripe_balance, stripe_promotion_code };
const char* to_string(Deliver d) noexcept;
bool parse_deliver(std::string_view s, Deliver* out) noexcept;

// What one side of a referral gets.
struct Grant {
    GrantKind kind = GrantKind::credit;
    std::int64_t amount = 0;  // minor units for a credit, days for trial_days
    std::string currency;     // lowercase ISO code for a credit, empty otherwise
    Deliver deliver = Deliver::unset;  // resolved by parse_config: never unset after it
};

struct RewardRule {
    std::string name;    // stored as referral_reward.referral_type
    std::string action;  // the referred user's action that qualifies
    Plan referrer_plan = Plan::any;
    Grant referrer;
    Grant referee;
    std::int64_t cap = -1;  // rewarded referrals per referrer; -1: no cap
    std::int64_t hold_ms = 0;                         // pending this long, then available
    std::int64_t clawback_ms = 90LL * 86400 * 1000;   // a refund within this reverses
    std::int64_t daily_cap = -1;                      // per referrer per UTC day; -1: none
};

// The original program's two rules (SPEC).
std::vector<RewardRule> default_rules();

// True when `rule` fires for `action` while the referrer's plan is
// `referrer_plan` ("free" or "paid").
bool rule_applies(const RewardRule& rule, std::string_view action,
                  std::string_view referrer_plan) noexcept;

// "$10.00 credit", "€5.50 credit", "12.00 CHF credit", "7 extra trial days".
std::string reward_label(GrantKind kind, std::int64_t amount, std::string_view currency);

// redis://[[user]:password@]host[:port][/db], unix:/path, or
// redis-sentinel://[:password@]host:port[,host:port...][/db]#service
struct RedisAddress {
    std::string host;       // empty for a unix socket
    int port = 6379;
    std::string unix_path;  // empty for TCP
    std::string user;
    std::string password;   // the primary's (Sentinels are asked without one)
    int db = 0;
    // Sentinels, asked in order for the current primary of `service` on
    // every (re)connect; empty for a plain address.
    std::vector<std::pair<std::string, int>> sentinels;
    std::string service;
};
bool parse_redis_url(std::string_view url, RedisAddress* out, std::string* err);
// The address for logs: the password is never shown.
std::string describe(const RedisAddress& a);

enum class DbKind { sqlite, postgresql };
struct DatabaseUrl {
    DbKind kind = DbKind::sqlite;
    std::string target;  // SQLite: file path; PostgreSQL: the libpq URI as given
};
// sqlite:///path/file.db, sqlite:relative.db, a plain path, or
// postgresql://... / postgres://...
bool parse_database_url(std::string_view url, DatabaseUrl* out, std::string* err);
// For logs and messages: a PostgreSQL password is replaced by "***".
std::string describe(const DatabaseUrl& d);

// nginx time syntax: "30d", "60s", "1h30m", "500ms"; a bare number is seconds.
bool parse_duration_ms(std::string_view s, std::int64_t* ms) noexcept;

constexpr int kMaxBatch = 100000;

// The pinned Stripe API version sent on every request unless the config
// names another.
constexpr const char* kDefaultStripeVersion = "2024-06-20";

struct StripeConfig {
    bool enabled = false;  // a [stripe] table is present
    std::string api_key_file;
    std::string api_base = "https://api.stripe.com";
    std::string api_version = kDefaultStripeVersion;
    int max_attempts = 20;
    std::int64_t timeout_ms = 30000;  // whole request; connecting: at most 5 s of it
    std::string api_key;  // read by load_secrets(), never logged
};

// The webhook event types (SPEC "Delivery to Stripe and to the application").
extern const char* const kWebhookEvents[6];

struct WebhookConfig {
    std::string url;
    std::string secret_file;
    std::vector<std::string> events;  // subset of kWebhookEvents
    int max_attempts = 20;
    std::int64_t timeout_ms = 10000;
    std::string secret;  // read by load_secrets(), never logged
};

struct Config {
    std::string redis = "redis://127.0.0.1:6379";
    std::string stream = "referral:events";
    std::string group = "referral-workers";
    std::string consumer;  // empty: "<hostname>-<pid>"
    std::string database = "sqlite:///var/lib/referral/referral.db";
    std::int64_t window_ms = 30LL * 86400 * 1000;
    int batch = 500;
    std::int64_t claim_idle_ms = 60000;
    std::vector<RewardRule> rules = default_rules();
    StripeConfig stripe;
    std::vector<WebhookConfig> webhooks;
    // Abuse and privacy (SPEC "Abuse and privacy rules in the worker").
    std::int64_t click_dedup_ms = 0;  // 0: off
    bool review_same_ip = false;
    std::int64_t retention_ms = 0;    // 0: keep responses' ip, user agent and URLs
    std::int64_t retain_ms = 0;       // 0: never trim the stream
    bool database_from_file = false;
    // Sharing links are link_base + code ("https://example.com/r/"); empty:
    // codes are shown without a link.
    std::string link_base;

    const RewardRule* rule(std::string_view name) const;
    // Endpoints subscribed to `event` ("reward.paid", ...).
    std::vector<const WebhookConfig*> webhooks_for(std::string_view event) const;
};

// A refused configuration. what() is the whole message, naming the file,
// the line and the key.
struct ConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Parses TOML text (`name` is used in messages) over the defaults.
Config parse_config(const std::string& text, const std::string& name);
Config load_config(const std::string& path);

// An absolute http(s) URL prefix of at most 512 printable characters
// without spaces, quotes or angle brackets (it is shown in pages and JSON).
bool valid_link_base(std::string_view s) noexcept;
// Reads the Stripe key and webhook secrets named by the config (the files'
// content without a trailing newline). Throws ConfigError naming the file
// when one is missing, unreadable or empty; the content is never logged.
void load_secrets(Config* c);

// A file's content without its trailing newline; throws ConfigError.
std::string read_secret_file(const std::string& what, const std::string& path);

// Checks that do not depend on where a value came from (file or flag):
// throws ConfigError naming the setting.
void validate_stream_name(const std::string& what, const std::string& value);

}  // namespace referral::worker

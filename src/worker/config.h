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

// What one side of a referral gets.
struct Grant {
    GrantKind kind = GrantKind::credit;
    std::int64_t amount = 0;  // minor units for a credit, days for trial_days
    std::string currency;     // lowercase ISO code for a credit, empty otherwise
};

struct RewardRule {
    std::string name;    // stored as referral_reward.referral_type
    std::string action;  // the referred user's action that qualifies
    Plan referrer_plan = Plan::any;
    Grant referrer;
    Grant referee;
    std::int64_t cap = -1;  // rewarded referrals per referrer; -1: no cap
};

// The original program's two rules (SPEC).
std::vector<RewardRule> default_rules();

// True when `rule` fires for `action` while the referrer's plan is
// `referrer_plan` ("free" or "paid").
bool rule_applies(const RewardRule& rule, std::string_view action,
                  std::string_view referrer_plan) noexcept;

// "$10.00 credit", "€5.50 credit", "12.00 CHF credit", "7 extra trial days".
std::string reward_label(GrantKind kind, std::int64_t amount, std::string_view currency);

// redis://[[user]:password@]host[:port][/db]  or  unix:/path
struct RedisAddress {
    std::string host;       // empty for a unix socket
    int port = 6379;
    std::string unix_path;  // empty for TCP
    std::string user;
    std::string password;
    int db = 0;
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
    bool database_from_file = false;
    // Sharing links are link_base + code ("https://example.com/r/"); empty:
    // codes are shown without a link.
    std::string link_base;
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

// Checks that do not depend on where a value came from (file or flag):
// throws ConfigError naming the setting.
void validate_stream_name(const std::string& what, const std::string& value);

}  // namespace referral::worker

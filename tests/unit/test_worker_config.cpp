// Unit tests for the worker's configuration: the TOML file (a good file,
// unknown keys, wrong types and bad values named with their line), the
// Redis and database addresses, durations.
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

extern "C" {
#include <cmocka.h>
}

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "worker/config.h"

using namespace referral::worker;

namespace {

// The error message of parsing `text`, or "" when it is accepted.
std::string refusal(const std::string& text) {
    try {
        parse_config(text, "worker.toml");
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const char* kSpecExample = R"(redis = "redis://127.0.0.1:6379"
stream = "referral:events"
group = "referral-workers"
database = "sqlite:///var/lib/referral/referral.db"
window = "30d"          # attribution window, as the module's referral_window
batch = 500
claim_idle = "60s"

[[reward]]
name = "give-10-get-10" # stored as referral_reward.referral_type
action = "subscribe"    # the referred user's action that qualifies
referrer_plan = "paid"  # paid | free | any
referrer = { kind = "credit", amount = 1000, currency = "usd" }
referee  = { kind = "credit", amount = 1000, currency = "usd" }
cap = 32                # rewarded referrals per referrer under this rule

[[reward]]
name = "free-trial-extension"
action = "signup"
referrer_plan = "free"
referrer = { kind = "trial_days", amount = 7 }
referee  = { kind = "trial_days", amount = 7 }
cap = 32
)";

void test_spec_example_is_accepted(void**) {
    Config c = parse_config(kSpecExample, "worker.toml");
    assert_string_equal(c.redis.c_str(), "redis://127.0.0.1:6379");
    assert_string_equal(c.stream.c_str(), "referral:events");
    assert_string_equal(c.group.c_str(), "referral-workers");
    assert_string_equal(c.database.c_str(), "sqlite:///var/lib/referral/referral.db");
    assert_int_equal(c.window_ms, 30LL * 86400 * 1000);
    assert_int_equal(c.batch, 500);
    assert_int_equal(c.claim_idle_ms, 60000);
    assert_int_equal(c.rules.size(), 2);
    assert_string_equal(c.rules[0].name.c_str(), "give-10-get-10");
    assert_true(c.rules[0].referrer_plan == Plan::paid);
    assert_true(c.rules[0].referrer.kind == GrantKind::credit);
    assert_int_equal(c.rules[0].referee.amount, 1000);
    assert_string_equal(c.rules[0].referee.currency.c_str(), "usd");
    assert_int_equal(c.rules[0].cap, 32);
    assert_true(c.rules[1].referrer_plan == Plan::free);
    assert_true(c.rules[1].referee.kind == GrantKind::trial_days);
    assert_int_equal(c.rules[1].referee.amount, 7);
}

void test_defaults_are_the_spec_rules(void**) {
    Config c = parse_config("", "empty.toml");
    assert_int_equal(c.batch, 500);
    assert_int_equal(c.claim_idle_ms, 60000);
    assert_string_equal(c.group.c_str(), "referral-workers");
    assert_string_equal(c.stream.c_str(), "referral:events");
    assert_int_equal(c.rules.size(), 2);
    assert_string_equal(c.rules[0].action.c_str(), "subscribe");
    assert_string_equal(c.rules[1].action.c_str(), "signup");
    assert_int_equal(c.rules[0].referrer.amount, 1000);
    assert_int_equal(c.rules[1].referrer.amount, 7);
}

void test_reward_list_replaces_defaults(void**) {
    Config c = parse_config(R"([[reward]]
name = "any-signup"
action = "signup"
referrer_plan = "any"
referrer = { kind = "credit", amount = 500, currency = "EUR" }
referee = { kind = "trial_days", amount = 14 }
)", "w.toml");
    assert_int_equal(c.rules.size(), 1);
    assert_string_equal(c.rules[0].name.c_str(), "any-signup");
    assert_string_equal(c.rules[0].referrer.currency.c_str(), "eur");
    assert_int_equal(c.rules[0].cap, -1);  // no cap given: unlimited
    assert_int_equal(parse_config("reward = []\n", "w.toml").rules.size(), 0);
}

void test_unknown_key_named_with_line(void**) {
    std::string m = refusal("batch = 10\n\nbatchsize = 20\n");
    assert_true(contains(m, "worker.toml:3"));
    assert_true(contains(m, "batchsize"));
    assert_true(contains(m, "unknown key"));
    m = refusal("[[reward]]\nname = \"x\"\naction = \"signup\"\nreferrer_plan = \"any\"\n"
                "referrer = { kind = \"trial_days\", amount = 1 }\n"
                "referee = { kind = \"trial_days\", amount = 1 }\nbonus = 3\n");
    assert_true(contains(m, "worker.toml:7"));
    assert_true(contains(m, "reward[0].bonus"));
    m = refusal("[[reward]]\nname = \"x\"\naction = \"signup\"\nreferrer_plan = \"any\"\n"
                "referrer = { kind = \"trial_days\", amount = 1, days = 2 }\n"
                "referee = { kind = \"trial_days\", amount = 1 }\n");
    assert_true(contains(m, "worker.toml:5"));
    assert_true(contains(m, "reward[0].referrer.days"));
}

void test_wrong_type_named_with_line(void**) {
    std::string m = refusal("stream = \"s\"\nbatch = \"500\"\n");
    assert_true(contains(m, "worker.toml:2"));
    assert_true(contains(m, "'batch'"));
    assert_true(contains(m, "expected an integer"));
    m = refusal("redis = 6379\n");
    assert_true(contains(m, "worker.toml:1"));
    assert_true(contains(m, "'redis'"));
    m = refusal("window = true\n");
    assert_true(contains(m, "'window'"));
}

void test_bad_value_named_with_line(void**) {
    std::string m = refusal("\n\nwindow = \"30 days\"\n");
    assert_true(contains(m, "worker.toml:3"));
    assert_true(contains(m, "'window'"));
    assert_true(contains(m, "bad value"));
    m = refusal("batch = 10\nclaim_idle = \"0\"\n");
    assert_true(contains(m, "worker.toml:2"));
    assert_true(contains(m, "'claim_idle'"));
    m = refusal("claim_idle = \"999ms\"\n");
    assert_true(contains(m, "worker.toml:1"));
    assert_true(contains(m, "'claim_idle'"));
    assert_int_equal(parse_config("claim_idle = \"1s\"\n", "w.toml").claim_idle_ms, 1000);
    m = refusal("batch = 0\n");
    assert_true(contains(m, "'batch'"));
    assert_true(contains(m, "worker.toml:1"));
    m = refusal("redis = \"http://localhost\"\n");
    assert_true(contains(m, "'redis'"));
    m = refusal("database = \"mysql://x\"\n");
    assert_true(contains(m, "'database'"));
    m = refusal("[[reward]]\nname = \"x\"\naction = \"signup\"\nreferrer_plan = \"gold\"\n"
                "referrer = { kind = \"trial_days\", amount = 1 }\n"
                "referee = { kind = \"trial_days\", amount = 1 }\n");
    assert_true(contains(m, "worker.toml:4"));
    assert_true(contains(m, "reward[0].referrer_plan"));
    assert_true(contains(m, "gold"));
    m = refusal("[[reward]]\nname = \"x\"\naction = \"signup\"\nreferrer_plan = \"free\"\n"
                "referrer = { kind = \"credit\", amount = 1 }\n"
                "referee = { kind = \"trial_days\", amount = 1 }\n");
    assert_true(contains(m, "reward[0].referrer.currency"));
    m = refusal("[[reward]]\nname = \"x\"\naction = \"signup\"\nreferrer_plan = \"free\"\n"
                "referrer = { kind = \"cash\", amount = 1 }\n"
                "referee = { kind = \"trial_days\", amount = 1 }\n");
    assert_true(contains(m, "reward[0].referrer.kind"));
    m = refusal("[[reward]]\nname = \"x\"\naction = \"signup\"\nreferrer_plan = \"free\"\n"
                "referrer = { kind = \"trial_days\", amount = -1 }\n"
                "referee = { kind = \"trial_days\", amount = 1 }\ncap = -2\n");
    assert_true(contains(m, "reward[0].referrer.amount"));
    m = refusal("[[reward]]\nname = \"x\"\naction = \"Sign Up\"\nreferrer_plan = \"free\"\n"
                "referrer = { kind = \"trial_days\", amount = 1 }\n"
                "referee = { kind = \"trial_days\", amount = 1 }\n");
    assert_true(contains(m, "reward[0].action"));
    m = refusal("[[reward]]\nname = \"x\"\naction = \"signup\"\nreferrer_plan = \"free\"\n"
                "referrer = { kind = \"trial_days\", amount = 1 }\n");
    assert_true(contains(m, "reward[0].referee"));
    assert_true(contains(m, "missing"));
}

void test_syntax_error_refused(void**) {
    std::string m = refusal("batch = \n");
    assert_true(contains(m, "worker.toml"));
    assert_true(contains(m, "TOML"));
}

void test_redis_urls(void**) {
    RedisAddress a;
    std::string err;
    assert_true(parse_redis_url("redis://127.0.0.1:6380", &a, &err));
    assert_string_equal(a.host.c_str(), "127.0.0.1");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 0);
    assert_true(a.password.empty());
    assert_true(parse_redis_url("redis://:s3cret@cache.internal:6379/2", &a, &err));
    assert_string_equal(a.host.c_str(), "cache.internal");
    assert_string_equal(a.password.c_str(), "s3cret");
    assert_true(a.user.empty());
    assert_int_equal(a.db, 2);
    assert_true(describe(a).find("s3cret") == std::string::npos);
    assert_true(parse_redis_url("redis://worker:pw@h:1", &a, &err));
    assert_string_equal(a.user.c_str(), "worker");
    assert_string_equal(a.password.c_str(), "pw");
    assert_true(parse_redis_url("redis://localhost", &a, &err));
    assert_int_equal(a.port, 6379);
    assert_true(parse_redis_url("unix:/run/redis/redis.sock", &a, &err));
    assert_string_equal(a.unix_path.c_str(), "/run/redis/redis.sock");
    assert_false(parse_redis_url("unix:relative.sock", &a, &err));
    assert_false(parse_redis_url("http://localhost:6379", &a, &err));
    assert_false(parse_redis_url("redis://localhost:0", &a, &err));
    assert_false(parse_redis_url("redis://localhost:99999", &a, &err));
    assert_false(parse_redis_url("redis://localhost:6379/x", &a, &err));
    assert_false(parse_redis_url("redis://:pw@:6379", &a, &err));
}

void test_database_urls(void**) {
    DatabaseUrl d;
    std::string err;
    assert_true(parse_database_url("sqlite:///var/lib/referral/referral.db", &d, &err));
    assert_true(d.kind == DbKind::sqlite);
    assert_string_equal(d.target.c_str(), "/var/lib/referral/referral.db");
    assert_true(parse_database_url("/tmp/x.db", &d, &err));
    assert_true(d.kind == DbKind::sqlite);
    assert_string_equal(d.target.c_str(), "/tmp/x.db");
    assert_true(parse_database_url("referral.db", &d, &err));
    assert_string_equal(d.target.c_str(), "referral.db");
    assert_true(parse_database_url("postgresql://app:secret@db:5432/main", &d, &err));
    assert_true(d.kind == DbKind::postgresql);
    assert_true(describe(d).find("secret") == std::string::npos);
    assert_true(parse_database_url("postgres://db/main", &d, &err));
    assert_true(d.kind == DbKind::postgresql);
    assert_false(parse_database_url("mysql://db/main", &d, &err));
    assert_false(parse_database_url("", &d, &err));
    assert_false(parse_database_url("sqlite://", &d, &err));
}

void test_link_base(void**) {
    assert_true(parse_config("", "worker.toml").link_base.empty());
    assert_string_equal(parse_config("link_base = \"https://example.com/r/\"\n", "worker.toml").link_base.c_str(),
                        "https://example.com/r/");
    assert_string_equal(parse_config("link_base = \"http://127.0.0.1:8080/?ref=\"\n", "w").link_base.c_str(),
                        "http://127.0.0.1:8080/?ref=");
    // not a URL, another scheme, markup, spaces, a bare scheme: refused with key and line
    for (const char* bad : {"example.com/r/", "javascript:alert(1)//", "https://x/<script>", "https://x/ r/",
                            "https://", "ftp://example.com/"}) {
        std::string m = refusal(std::string("batch = 1\nlink_base = \"") + bad + "\"\n");
        assert_true(contains(m, "worker.toml:2"));
        assert_true(contains(m, "'link_base'"));
        assert_true(contains(m, "bad value"));
    }
    std::string m = refusal("link_base = 1\n");
    assert_true(contains(m, "'link_base'") && contains(m, "expected a string"));
    assert_false(valid_link_base("https://example.com/" + std::string(600, 'a')));
}

void test_durations(void**) {
    std::int64_t ms;
    assert_true(parse_duration_ms("30d", &ms));
    assert_int_equal(ms, 30LL * 86400 * 1000);
    assert_true(parse_duration_ms("60s", &ms));
    assert_int_equal(ms, 60000);
    assert_true(parse_duration_ms("60", &ms));
    assert_int_equal(ms, 60000);
    assert_true(parse_duration_ms("1h30m", &ms));
    assert_int_equal(ms, 5400000);
    assert_true(parse_duration_ms("250ms", &ms));
    assert_int_equal(ms, 250);
    assert_true(parse_duration_ms("0", &ms));
    assert_int_equal(ms, 0);
    assert_false(parse_duration_ms("", &ms));
    assert_false(parse_duration_ms("30 days", &ms));
    assert_false(parse_duration_ms("d", &ms));
    assert_false(parse_duration_ms("-5s", &ms));
    assert_false(parse_duration_ms("1h30", &ms));
}

// SPEC "Delivery to Stripe and to the application": [stripe], [[webhook]],
// the rule keys hold, clawback, daily_cap and per side deliver.
const char* kDelivery = R"([stripe]
api_key_file = "/etc/referral/stripe.key"
api_base = "http://127.0.0.1:12111/"
max_attempts = 5

[[webhook]]
url = "https://app.example.com/hooks/referral"
secret_file = "/etc/referral/webhook.secret"
events = ["reward.available", "reward.paid"]

[[reward]]
name = "give-10-get-10"
action = "subscribe"
referrer_plan = "paid"
referrer = { kind = "credit", amount = 1000, currency = "usd" }
referee  = { kind = "credit", amount = 1000, currency = "usd", deliver = "stripe_promotion_code" }
hold = "14d"
clawback = "60d"
daily_cap = 3

[[reward]]
name = "trial"
action = "signup"
referrer_plan = "free"
referrer = { kind = "trial_days", amount = 7 }
referee  = { kind = "trial_days", amount = 7 }
)";

void test_delivery_config(void**) {
    Config c = parse_config(kDelivery, "worker.toml");
    assert_true(c.stripe.enabled);
    assert_string_equal(c.stripe.api_base.c_str(), "http://127.0.0.1:12111");  // trailing '/' dropped
    assert_string_equal(c.stripe.api_version.c_str(), kDefaultStripeVersion);
    assert_int_equal(c.stripe.max_attempts, 5);
    assert_true(c.stripe.api_key.empty());  // read later, by load_secrets
    assert_int_equal(c.webhooks.size(), 1);
    assert_int_equal(c.webhooks[0].events.size(), 2);
    assert_int_equal(c.webhooks_for("reward.paid").size(), 1);
    assert_int_equal(c.webhooks_for("reward.created").size(), 0);
    const RewardRule& r = c.rules[0];
    assert_int_equal(r.hold_ms, 14LL * 86400 * 1000);
    assert_int_equal(r.clawback_ms, 60LL * 86400 * 1000);
    assert_int_equal(r.daily_cap, 3);
    // With [stripe], a credit defaults to the customer balance; trial days are the app's.
    assert_int_equal(static_cast<int>(r.referrer.deliver), static_cast<int>(Deliver::stripe_balance));
    assert_int_equal(static_cast<int>(r.referee.deliver), static_cast<int>(Deliver::stripe_promotion_code));
    assert_int_equal(static_cast<int>(c.rules[1].referrer.deliver), static_cast<int>(Deliver::app));
    assert_int_equal(c.rules[1].clawback_ms, 90LL * 86400 * 1000);  // the default
    // Without [stripe] everything is the app's.
    Config plain = parse_config("", "worker.toml");
    assert_false(plain.stripe.enabled);
    assert_string_equal(to_string(plain.rules[0].referrer.deliver), "app");
    // Without `events`, every event.
    Config all = parse_config("[[webhook]]\nurl = \"http://h/x\"\nsecret_file = \"/s\"\n", "w.toml");
    assert_int_equal(all.webhooks[0].events.size(), 6);
}

void test_delivery_config_refusals(void**) {
    std::string e = refusal("[stripe]\napi_base = \"http://x\"\n");
    assert_true(contains(e, "worker.toml:1: key 'stripe.api_key_file': missing"));
    e = refusal("[stripe]\napi_key_file = \"/k\"\napi_base = \"ftp://x\"\n");
    assert_true(contains(e, ":3: key 'stripe.api_base': bad value"));
    e = refusal("[stripe]\napi_key_file = \"/k\"\nmax_attempts = 0\n");
    assert_true(contains(e, ":3: key 'stripe.max_attempts': bad value 0"));
    e = refusal("[stripe]\napi_key_file = \"/k\"\nsecret = 1\n");
    assert_true(contains(e, "key 'stripe.secret': unknown key"));
    e = refusal("[[webhook]]\nurl = \"http://h/x\"\nsecret_file = \"/s\"\nevents = [\"reward.lost\"]\n");
    assert_true(contains(e, ":4: key 'webhook[0].events': bad value \"reward.lost\""));
    e = refusal("[[webhook]]\nsecret_file = \"/s\"\n");
    assert_true(contains(e, "key 'webhook[0].url': missing"));
    e = refusal("[[webhook]]\nurl = \"http://h/x\"\n");
    assert_true(contains(e, "key 'webhook[0].secret_file': missing"));
    const std::string rule = "[[reward]]\nname = \"r\"\naction = \"subscribe\"\nreferrer_plan = \"any\"\n"
                             "referee = { kind = \"trial_days\", amount = 1 }\n";
    e = refusal(rule + "referrer = { kind = \"credit\", amount = 1, currency = \"usd\", deliver = \"paypal\" }\n");
    assert_true(contains(e, ":6: key 'reward[0].referrer.deliver': bad value \"paypal\""));
    e = refusal(rule + "referrer = { kind = \"credit\", amount = 1, currency = \"usd\", deliver = \"stripe_balance\" }\n");
    assert_true(contains(e, "reward[0].referrer.deliver") && contains(e, "needs a [stripe] table"));
    e = refusal(rule + "referrer = { kind = \"trial_days\", amount = 1, deliver = \"stripe_balance\" }\n");
    assert_true(contains(e, "trial days are always delivered by the app"));
    const std::string ok_side = "referrer = { kind = \"trial_days\", amount = 1 }\n";
    e = refusal(rule + ok_side + "hold = \"2 weeks\"\n");
    assert_true(contains(e, ":7: key 'reward[0].hold': bad value"));
    e = refusal(rule + ok_side + "clawback = true\n");
    assert_true(contains(e, ":7: key 'reward[0].clawback'"));
    e = refusal(rule + ok_side + "daily_cap = -1\n");
    assert_true(contains(e, ":7: key 'reward[0].daily_cap': bad value -1"));
}

// SPEC "Abuse and privacy rules in the worker".
void test_abuse_keys(void**) {
    Config c = parse_config("click_dedup = \"1h\"\nreview_same_ip = true\nretention = \"400d\"\nretain = \"24h\"\n",
                            "w.toml");
    assert_int_equal(c.click_dedup_ms, 3600 * 1000);
    assert_true(c.review_same_ip);
    assert_int_equal(c.retention_ms, 400LL * 86400 * 1000);
    assert_int_equal(c.retain_ms, 24LL * 3600 * 1000);
    Config d = parse_config("", "w.toml");
    assert_int_equal(d.click_dedup_ms, 0);
    assert_false(d.review_same_ip);
    assert_int_equal(d.retention_ms, 0);
    assert_int_equal(d.retain_ms, 0);
    assert_true(contains(refusal("review_same_ip = \"yes\"\n"), "worker.toml:1: key 'review_same_ip': expected true or false"));
    assert_true(contains(refusal("\nclick_dedup = \"an hour\"\n"), ":2: key 'click_dedup': bad value"));
    assert_true(contains(refusal("retention = \"1h\"\n"), ":1: key 'retention': bad value: at least 1d"));
    assert_true(contains(refusal("retain = \"10s\"\n"), ":1: key 'retain': bad value: at least 1m"));
    assert_true(refusal("retain = \"0s\"\nretention = \"0s\"\n").empty());
}

void test_secret_files(void**) {
    char dir[] = "/tmp/referral-secrets-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const std::string key = std::string(dir) + "/stripe.key";
    Config c = parse_config("[stripe]\napi_key_file = \"" + key + "\"\n", "w.toml");
    try {
        load_secrets(&c);
        fail_msg("a missing key file was accepted");
    } catch (const ConfigError& e) {
        assert_true(contains(e.what(), key) && contains(e.what(), "stripe.api_key_file"));
    }
    FILE* f = std::fopen(key.c_str(), "w");
    std::fputs("sk_test_abc\n", f);
    std::fclose(f);
    load_secrets(&c);
    assert_string_equal(c.stripe.api_key.c_str(), "sk_test_abc");  // without the newline
    f = std::fopen(key.c_str(), "w");
    std::fclose(f);
    try {
        load_secrets(&c);
        fail_msg("an empty key file was accepted");
    } catch (const ConfigError& e) {
        assert_true(contains(e.what(), "is empty"));
    }
    std::remove(key.c_str());
    rmdir(dir);
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delivery_config),
        cmocka_unit_test(test_delivery_config_refusals),
        cmocka_unit_test(test_secret_files),
        cmocka_unit_test(test_abuse_keys),
        cmocka_unit_test(test_spec_example_is_accepted),
        cmocka_unit_test(test_defaults_are_the_spec_rules),
        cmocka_unit_test(test_reward_list_replaces_defaults),
        cmocka_unit_test(test_unknown_key_named_with_line),
        cmocka_unit_test(test_wrong_type_named_with_line),
        cmocka_unit_test(test_bad_value_named_with_line),
        cmocka_unit_test(test_syntax_error_refused),
        cmocka_unit_test(test_redis_urls),
        cmocka_unit_test(test_database_urls),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_link_base),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

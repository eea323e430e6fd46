// Unit tests for the reward rules: which rule fires for which plan, the
// labels people read, and the effect of events on a real (temporary)
// SQLite database through the same code the worker runs.
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

extern "C" {
#include <cmocka.h>
}

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "worker/config.h"
#include "worker/processor.h"
#include "worker/store.h"

using namespace referral::worker;

namespace {

void test_rule_applies_by_plan(void**) {
    auto rules = default_rules();
    const RewardRule& paid = rules[0];  // give-10-get-10
    const RewardRule& free = rules[1];  // free-trial-extension
    assert_true(rule_applies(paid, "subscribe", "paid"));
    assert_false(rule_applies(paid, "subscribe", "free"));
    assert_false(rule_applies(paid, "signup", "paid"));
    assert_true(rule_applies(free, "signup", "free"));
    assert_false(rule_applies(free, "signup", "paid"));
    assert_false(rule_applies(free, "subscribe", "free"));
    RewardRule any = free;
    any.referrer_plan = Plan::any;
    assert_true(rule_applies(any, "signup", "paid"));
    assert_true(rule_applies(any, "signup", "free"));
}

void test_reward_labels(void**) {
    assert_string_equal(reward_label(GrantKind::credit, 1000, "usd").c_str(), "$10.00 credit");
    assert_string_equal(reward_label(GrantKind::credit, 1005, "USD").c_str(), "$10.05 credit");
    assert_string_equal(reward_label(GrantKind::credit, 550, "eur").c_str(), "\u20ac5.50 credit");
    assert_string_equal(reward_label(GrantKind::credit, 1200, "chf").c_str(), "12.00 CHF credit");
    assert_string_equal(reward_label(GrantKind::credit, 500, "jpy").c_str(), "\u00a5500 credit");
    assert_string_equal(reward_label(GrantKind::trial_days, 7, "").c_str(), "7 extra trial days");
    assert_string_equal(reward_label(GrantKind::trial_days, 1, "").c_str(), "1 extra trial day");
}

// ---- events on a real SQLite database ------------------------------------

struct Fixture {
    std::string dir;
    std::unique_ptr<Store> store;
    std::vector<std::vector<std::pair<std::string, std::string>>> kept;
    int next_id = 1;
};

int setup(void** state) {
    auto* f = new Fixture;
    char tmpl[] = "/tmp/referral-unit-XXXXXX";
    f->dir = mkdtemp(tmpl);
    DatabaseUrl url;
    url.kind = DbKind::sqlite;
    url.target = f->dir + "/t.db";
    f->store = open_store(url, true);
    f->store->migrate();
    *state = f;
    return 0;
}

int teardown(void** state) {
    auto* f = static_cast<Fixture*>(*state);
    f->store.reset();
    std::string cmd = "rm -rf " + f->dir;
    int rc = std::system(cmd.c_str());
    (void)rc;
    delete f;
    return 0;
}

std::string id_for(int n) {
    char buf[40];
    std::snprintf(buf, sizeof(buf), "%032x", n);
    return buf;
}

const std::int64_t kT0 = 1764000000000LL;
const std::int64_t kDay = 86400LL * 1000;

// Applies one conversion in its own transaction.
Counters convert(Fixture* f, Processor& p, const std::string& action, const std::string& user,
                 const std::string& code = "", std::int64_t ts = kT0, std::int64_t first_ts = kT0,
                 int id = 0) {
    std::vector<std::pair<std::string, std::string>> kv = {
        {"v", "1"}, {"id", id_for(id ? id : f->next_id++)}, {"type", "conversion"},
        {"ts", std::to_string(ts)}, {"code", code}, {"visitor", ""},
        {"first_ts", code.empty() ? "" : std::to_string(first_ts)},
        {"action", action}, {"user", user}};
    std::vector<Field> fields;
    for (auto& x : kv) fields.push_back({x.first, x.second});
    Event ev;
    std::string why = parse_event(fields, &ev);
    assert_string_equal(why.c_str(), "");
    Counters c;
    f->store->begin();
    p.apply(*f->store, ev, &c);
    p.flush(*f->store, &c);
    f->store->commit();
    return c;
}

std::string code_of(Fixture* f, const std::string& user) {
    auto codes = f->store->codes(user);
    assert_false(codes.empty());
    return codes[0].code;
}

void test_signup_gets_own_code_and_links_once(void** state) {
    auto* f = static_cast<Fixture*>(*state);
    Processor p(default_rules(), 30 * kDay);
    Counters c = convert(f, p, "signup", "alice");
    assert_int_equal(c.codes_created, 1);
    std::string alice = code_of(f, "alice");
    assert_int_equal(alice.size(), 40);
    c = convert(f, p, "signup", "bob", alice);
    assert_int_equal(c.linked, 1);
    assert_int_equal(c.rewards, 1);  // alice is free: 7 extra trial days each
    auto r = f->store->rewards("alice");
    assert_int_equal(r.size(), 1);
    assert_string_equal(r[0].kind.c_str(), "trial_days");
    assert_int_equal(r[0].amount, 7);
    assert_string_equal(r[0].role.c_str(), "referrer");
    assert_int_equal(f->store->rewards("bob").size(), 1);
    // bob signing up again through carol's code: double referral
    convert(f, p, "signup", "carol");
    c = convert(f, p, "signup", "bob", code_of(f, "carol"));
    assert_int_equal(c.double_referral, 1);
    assert_int_equal(c.linked, 0);
    assert_int_equal(f->store->rewards("carol").size(), 0);
}

void test_self_unknown_and_window(void** state) {
    auto* f = static_cast<Fixture*>(*state);
    Processor p(default_rules(), 30 * kDay);
    convert(f, p, "signup", "alice");
    std::string alice = code_of(f, "alice");
    Counters c = convert(f, p, "signup", "alice", alice);
    assert_int_equal(c.self_referral, 1);
    c = convert(f, p, "signup", "dave", "nobody-has-this");
    assert_int_equal(c.unknown_code, 1);
    c = convert(f, p, "signup", "erin", alice, kT0 + 31 * kDay, kT0);
    assert_int_equal(c.out_of_window, 1);
    c = convert(f, p, "signup", "frank", alice, kT0 + 29 * kDay, kT0);
    assert_int_equal(c.linked, 1);
    assert_int_equal(f->store->rewards("alice").size(), 1);
}

void test_plan_and_cap(void** state) {
    auto* f = static_cast<Fixture*>(*state);
    auto rules = default_rules();
    rules[0].cap = 2;
    Processor p(rules, 30 * kDay);
    convert(f, p, "signup", "paula");
    convert(f, p, "subscribe", "paula");  // paula pays: the credit rule
    std::string code = code_of(f, "paula");
    for (const char* friend_ : {"f1", "f2", "f3"}) {
        Counters c = convert(f, p, "signup", friend_, code);
        assert_int_equal(c.linked, 1);
        assert_int_equal(c.rewards, 0);  // the trial rule is for free referrers
    }
    assert_int_equal(convert(f, p, "subscribe", "f1").rewards, 1);
    assert_int_equal(convert(f, p, "subscribe", "f2").rewards, 1);
    Counters c = convert(f, p, "subscribe", "f3");
    assert_int_equal(c.rewards, 0);
    assert_int_equal(c.capped, 1);
    // f1 subscribing again (a new event) credits nothing more
    assert_int_equal(convert(f, p, "subscribe", "f1").rewards, 0);
    auto r = f->store->rewards("paula");
    assert_int_equal(r.size(), 2);
    assert_string_equal(r[0].kind.c_str(), "credit");
    assert_int_equal(r[0].amount, 1000);
    assert_string_equal(r[0].currency.c_str(), "usd");
    assert_int_equal(f->store->rewards("f3").size(), 0);
    // paula unsubscribes: her next friend's subscription is not credited
    convert(f, p, "unsubscribe", "paula");
    convert(f, p, "signup", "f4", code);
    assert_int_equal(convert(f, p, "subscribe", "f4").rewards, 0);
}

void test_same_event_twice_changes_nothing(void** state) {
    auto* f = static_cast<Fixture*>(*state);
    Processor p(default_rules(), 30 * kDay);
    convert(f, p, "signup", "alice");
    std::string alice = code_of(f, "alice");
    Counters c = convert(f, p, "signup", "bob", alice, kT0, kT0, 9000);
    assert_int_equal(c.rewards, 1);
    c = convert(f, p, "signup", "bob", alice, kT0, kT0, 9000);
    assert_int_equal(c.duplicates, 1);
    assert_int_equal(c.rewards, 0);
    assert_int_equal(c.double_referral, 0);
    assert_int_equal(f->store->rewards("alice").size(), 1);
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rule_applies_by_plan),
        cmocka_unit_test(test_reward_labels),
        cmocka_unit_test_setup_teardown(test_signup_gets_own_code_and_links_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_unknown_and_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_and_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_event_twice_changes_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

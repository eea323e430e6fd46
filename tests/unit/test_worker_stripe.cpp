// Unit tests for the requests the worker sends to Stripe and to webhook
// endpoints, and for how it judges their replies (src/worker/stripe.*).
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>

extern "C" {
#include <cmocka.h>
}

#include <cstring>
#include <string>

#include "worker/lifecycle.h"
#include "worker/stripe.h"

using namespace referral::worker;

namespace {

RewardInfo credit(std::int64_t id = 17, std::int64_t amount = 1000) {
    RewardInfo w;
    w.id = id;
    w.kind = "credit";
    w.amount = amount;
    w.currency = "usd";
    w.user_id = "alice";
    w.deliver = "stripe_balance";
    return w;
}

std::string param(const StripeCall& c, const std::string& name) {
    for (const auto& kv : c.form) {
        if (kv.first == name) return kv.second;
    }
    return "<absent>";
}

void test_form_encode(void**) {
    assert_string_equal(form_encode({}).c_str(), "");
    assert_string_equal(form_encode({{"amount", "-1000"}, {"currency", "usd"}}).c_str(),
                        "amount=-1000&currency=usd");
    // Brackets, spaces, '&', '=', '+', UTF-8 and '%' are all escaped.
    assert_string_equal(form_encode({{"metadata[reward_id]", "17"}}).c_str(), "metadata%5Breward_id%5D=17");
    assert_string_equal(form_encode({{"description", "$10.00 credit"}}).c_str(), "description=%2410.00%20credit");
    assert_string_equal(form_encode({{"a&b=c", "x+y%z"}}).c_str(), "a%26b%3Dc=x%2By%25z");
    assert_string_equal(form_encode({{"d", "\xe2\x82\xac" "5"}}).c_str(), "d=%E2%82%AC5");
    assert_string_equal(form_encode({{"k", ""}}).c_str(), "k=");
    assert_string_equal(form_encode({{"safe", "AZaz09-._~"}}).c_str(), "safe=AZaz09-._~");
}

void test_idempotency_key_is_stable(void**) {
    assert_string_equal(idempotency_key(17, "credit").c_str(), "referral-17-credit");
    std::string err;
    auto a = stripe_call(credit(), kOpCredit, 0, "cus_1", "", &err);
    auto b = stripe_call(credit(), kOpCredit, 0, "cus_1", "", &err);
    assert_true(a && b);
    assert_string_equal(a->idempotency_key.c_str(), "referral-17-credit");
    assert_true(form_encode(a->form) == form_encode(b->form));  // a retry sends the same parameters
    auto r = stripe_call(credit(), kOpReverseCredit, 0, "cus_1", "", &err);
    assert_string_equal(r->idempotency_key.c_str(), "referral-17-reverse");
}

void test_balance_credit_and_reversal(void**) {
    std::string err;
    auto c = stripe_call(credit(17, 1000), kOpCredit, 0, "cus_Nf1", "", &err);
    assert_true(c.has_value());
    assert_string_equal(c->path.c_str(), "/v1/customers/cus_Nf1/balance_transactions");
    assert_string_equal(param(*c, "amount").c_str(), "-1000");  // negative: a credit
    assert_string_equal(param(*c, "currency").c_str(), "usd");
    assert_string_equal(param(*c, "description").c_str(), "$10.00 credit");
    assert_string_equal(param(*c, "metadata[reward_id]").c_str(), "17");
    RewardInfo paid = credit(17, 1000);
    paid.external_id = "cbtxn_1";
    auto r = stripe_call(paid, kOpReverseCredit, 0, "cus_Nf1", "", &err);
    assert_string_equal(param(*r, "amount").c_str(), "1000");  // the opposite
    assert_string_equal(param(*r, "metadata[reverses]").c_str(), "cbtxn_1");
    // No customer, or one that would break the URL: refused, not sent.
    assert_false(stripe_call(credit(), kOpCredit, 0, "", "", &err).has_value());
    assert_non_null(std::strstr(err.c_str(), "no Stripe customer"));
    assert_false(stripe_call(credit(), kOpCredit, 0, "cus/../x", "", &err).has_value());
    RewardInfo days = credit();
    days.kind = "trial_days";
    days.currency = "";
    assert_false(stripe_call(days, kOpCredit, 0, "cus_1", "", &err).has_value());
}

void test_promotion_code_steps(void**) {
    std::string err;
    RewardInfo w = credit(5, 1000);
    w.deliver = "stripe_promotion_code";
    assert_int_equal(stripe_steps(kOpPromotionCode), 2);
    assert_int_equal(stripe_steps(kOpCredit), 1);
    auto coupon = stripe_call(w, kOpPromotionCode, 0, "", "", &err);
    assert_string_equal(coupon->path.c_str(), "/v1/coupons");
    assert_string_equal(param(*coupon, "amount_off").c_str(), "1000");
    assert_string_equal(param(*coupon, "duration").c_str(), "once");
    assert_string_equal(param(*coupon, "max_redemptions").c_str(), "1");
    assert_string_equal(coupon->idempotency_key.c_str(), "referral-5-coupon");
    auto promo = stripe_call(w, kOpPromotionCode, 1, "cus_9", "Z4OV52SU", &err);
    assert_string_equal(promo->path.c_str(), "/v1/promotion_codes");
    assert_string_equal(param(*promo, "coupon").c_str(), "Z4OV52SU");
    assert_string_equal(param(*promo, "customer").c_str(), "cus_9");
    assert_string_equal(promo->idempotency_key.c_str(), "referral-5-promotion_code");
    // Without a customer the code is not restricted.
    promo = stripe_call(w, kOpPromotionCode, 1, "", "Z4OV52SU", &err);
    assert_string_equal(param(*promo, "customer").c_str(), "<absent>");
    assert_false(stripe_call(w, kOpPromotionCode, 1, "", "bad/id", &err).has_value());
    w.external_id = "promo_1";
    auto off = stripe_call(w, kOpDeactivate, 0, "", "", &err);
    assert_string_equal(off->path.c_str(), "/v1/promotion_codes/promo_1");
    assert_string_equal(param(*off, "active").c_str(), "false");
    assert_false(stripe_call(w, "bogus", 0, "", "", &err).has_value());
}

void test_request_headers(void**) {
    StripeConfig s;
    s.api_base = "http://127.0.0.1:9";
    s.api_key = "sk_test_123";
    s.api_version = "2024-06-20";
    std::string err;
    HttpRequest r = stripe_request(s, *stripe_call(credit(), kOpCredit, 0, "cus_1", "", &err));
    assert_string_equal(r.url.c_str(), "http://127.0.0.1:9/v1/customers/cus_1/balance_transactions");
    bool auth = false, version = false, key = false;
    for (const auto& h : r.headers) {
        auth = auth || (h.first == "Authorization" && h.second == "Bearer sk_test_123");
        version = version || (h.first == "Stripe-Version" && h.second == "2024-06-20");
        key = key || (h.first == "Idempotency-Key" && h.second == "referral-17-credit");
    }
    assert_true(auth && version && key);
}

HttpReply reply(long status, const std::string& body = "{}", const std::string& retry_after = "",
                const std::string& should_retry = "") {
    HttpReply r;
    r.status = status;
    r.body = body;
    r.retry_after = retry_after;
    r.should_retry = should_retry;
    return r;
}

void test_judge_stripe(void**) {
    Verdict v = judge_stripe(reply(200, R"({"id": "cbtxn_1", "object": "customer_balance_transaction"})"));
    assert_int_equal(v.kind, Verdict::done);
    assert_string_equal(v.id.c_str(), "cbtxn_1");
    // 2xx without an id: we cannot tell, retry (the key replays it).
    assert_int_equal(judge_stripe(reply(200, "not json")).kind, Verdict::retry);
    HttpReply net;
    net.error = "Connection refused";
    v = judge_stripe(net);
    assert_int_equal(v.kind, Verdict::retry);
    assert_non_null(std::strstr(v.error.c_str(), "Connection refused"));
    for (long s : {409L, 429L, 500L, 502L, 503L}) assert_int_equal(judge_stripe(reply(s)).kind, Verdict::retry);
    v = judge_stripe(reply(429, R"({"error": {"type": "rate_limit_error", "message": "Too many"}})", "7"));
    assert_int_equal(v.retry_after_ms, 7000);
    v = judge_stripe(reply(400, R"({"error": {"type": "invalid_request_error", "message": "No such customer: 'cus_x'"}})"));
    assert_int_equal(v.kind, Verdict::dead);
    assert_non_null(std::strstr(v.error.c_str(), "No such customer: 'cus_x'"));
    assert_non_null(std::strstr(v.error.c_str(), "HTTP 400"));
    for (long s : {401L, 402L, 403L, 404L}) assert_int_equal(judge_stripe(reply(s)).kind, Verdict::dead);
    // Stripe-Should-Retry decides when present.
    assert_int_equal(judge_stripe(reply(500, "{}", "", "false")).kind, Verdict::dead);
    assert_int_equal(judge_stripe(reply(400, "{}", "", "true")).kind, Verdict::retry);
}

void test_judge_webhook(void**) {
    assert_int_equal(judge_webhook(reply(200)).kind, Verdict::done);
    assert_int_equal(judge_webhook(reply(204, "")).kind, Verdict::done);
    for (long s : {0L, 301L, 400L, 404L, 500L, 503L}) assert_int_equal(judge_webhook(reply(s)).kind, Verdict::retry);
    assert_int_equal(judge_webhook(reply(503, "", "3")).retry_after_ms, 3000);
}

void test_webhook_signature(void**) {
    // Computed independently: HMAC-SHA256("whsec_test", "1700000000.{\"id\":\"evt_1\"}").
    assert_string_equal(webhook_signature("whsec_test", 1700000000, R"({"id":"evt_1"})").c_str(),
                        "t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925");
    assert_string_not_equal(webhook_signature("whsec_tesT", 1700000000, R"({"id":"evt_1"})").c_str(),
                            webhook_signature("whsec_test", 1700000000, R"({"id":"evt_1"})").c_str());
    WebhookConfig hook;
    hook.url = "http://127.0.0.1:1/hook";
    hook.secret = "whsec_test";
    HttpRequest r = webhook_request(hook, R"({"id":"evt_1"})", 1700000000);
    assert_string_equal(r.body.c_str(), R"({"id":"evt_1"})");
    bool signed_ok = false;
    for (const auto& h : r.headers) signed_ok = signed_ok || (h.first == "Referral-Signature" && h.second.rfind("t=1700000000,v1=c892", 0) == 0);
    assert_true(signed_ok);
}

void test_backoff(void**) {
    // 1 s doubled per attempt, jitter in [0.5, 1).
    assert_int_equal(backoff_ms(1, -1, 0.0), 500);
    assert_true(backoff_ms(1, -1, 0.999) < 1000);
    assert_int_equal(backoff_ms(2, -1, 0.0), 1000);
    assert_int_equal(backoff_ms(4, -1, 0.0), 4000);
    assert_true(backoff_ms(60, -1, 0.999) <= 3600 * 1000);  // capped at an hour
    assert_true(backoff_ms(60, -1, 0.0) >= 1800 * 1000);
    // Retry-After is a floor.
    assert_int_equal(backoff_ms(1, 30000, 0.0), 30000);
    assert_int_equal(backoff_ms(5, 1000, 0.0), 8000);
    assert_int_equal(parse_retry_after_ms("120"), 120000);
    assert_int_equal(parse_retry_after_ms(""), -1);
    assert_int_equal(parse_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), -1);
    assert_int_equal(parse_retry_after_ms("999999"), 3600 * 1000);
}

void test_iso_to_ms(void**) {
    assert_int_equal(iso_to_ms("1970-01-01T00:00:01Z"), 1000);
    assert_int_equal(iso_to_ms("2026-12-01T12:00:00Z"), 1796126400000LL);
    assert_int_equal(iso_to_ms("2026-12-01 12:00:00"), -1);
    assert_int_equal(iso_to_ms(""), -1);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_encode),
        cmocka_unit_test(test_idempotency_key_is_stable),
        cmocka_unit_test(test_balance_credit_and_reversal),
        cmocka_unit_test(test_promotion_code_steps),
        cmocka_unit_test(test_request_headers),
        cmocka_unit_test(test_judge_stripe),
        cmocka_unit_test(test_judge_webhook),
        cmocka_unit_test(test_webhook_signature),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_iso_to_ms),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}

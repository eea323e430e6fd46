// Requests to Stripe and to webhook endpoints, and how their replies are
// judged (SPEC "Delivery to Stripe and to the application"). Pure
// functions: the HTTP is http.h's, the loop delivery.h's.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "worker/config.h"
#include "worker/http.h"
#include "worker/store.h"

namespace referral::worker {

using Form = std::vector<std::pair<std::string, std::string>>;

// application/x-www-form-urlencoded: every byte but A-Z a-z 0-9 - . _ ~
// percent-encoded (so '[' ']' of metadata[reward_id] too), space as %20.
std::string form_encode(const Form& form);

// Idempotency-Key of one operation on one reward: the same on every retry.
std::string idempotency_key(std::int64_t reward_id, std::string_view operation);

// One Stripe request of a delivery. A promotion code takes two: the coupon
// (step 0) and the promotion code for it (step 1, given the coupon's id).
struct StripeCall {
    std::string path;  // "/v1/customers/cus_1/balance_transactions"
    Form form;
    std::string idempotency_key;
};

// The calls for `op` on `reward` (see lifecycle.h's kOp*), or an error
// that will never go away (a reward without an amount, a bad id).
// `customer` may be empty (then a promotion code is not restricted);
// `coupon` is step 0's answer for step 1.
std::optional<StripeCall> stripe_call(const RewardInfo& reward, std::string_view op, int step,
                                      std::string_view customer, std::string_view coupon, std::string* error);
// How many calls `op` takes.
int stripe_steps(std::string_view op);

HttpRequest stripe_request(const StripeConfig& stripe, const StripeCall& call);

// What to do after an attempt.
struct Verdict {
    enum Kind { done, retry, dead } kind = retry;
    std::string error;              // for last_error: Stripe's message, the status, the network error
    std::string id;                 // done: the object's id (cbtxn_..., promo_..., coupon id)
    std::int64_t retry_after_ms = -1;  // the server asked for this delay
};

// Stripe: 2xx done; Stripe-Should-Retry decides when present; network
// errors, timeouts, 409, 429 and 5xx retried; any other 4xx dead with
// Stripe's message.
Verdict judge_stripe(const HttpReply& reply);
// Webhook: 2xx done; anything else retried.
Verdict judge_webhook(const HttpReply& reply);

// "t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<body>">": Stripe's scheme.
std::string webhook_signature(std::string_view secret, std::int64_t unix_s, std::string_view body);
HttpRequest webhook_request(const WebhookConfig& hook, std::string_view body, std::int64_t unix_s);

// Delay before attempt `attempts + 1`: 1 s doubled per attempt up to 1 h,
// times a jitter in [0.5, 1) from `unit_random` in [0, 1); never less than
// a Retry-After the server sent (bounded to 1 h).
std::int64_t backoff_ms(std::int64_t attempts, std::int64_t retry_after_ms, double unit_random);

// Retry-After in seconds ("120"); -1 when absent or not a number (an
// HTTP date is treated as absent).
std::int64_t parse_retry_after_ms(std::string_view value);

}  // namespace referral::worker

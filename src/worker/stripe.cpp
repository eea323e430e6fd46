#include "worker/stripe.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/hmac.h"
#include "core/random.h"
#include "worker/lifecycle.h"
#include "worker/reward_json.h"
#include "worker/util.h"

namespace referral::worker {
namespace {

constexpr std::int64_t kMaxDelayMs = 3600 * 1000;

bool unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

// Ids Stripe gives back go into a URL path: letters, digits, '_' only.
bool safe_id(std::string_view s) {
    if (s.empty() || s.size() > 255) return false;
    for (char c : s) {
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

// Stripe's error JSON: {"error": {"message": "...", "type": "..."}}.
std::string stripe_message(const std::string& body, long status) {
    std::string msg;
    try {
        auto j = nlohmann::json::parse(body);
        const auto& e = j.at("error");
        if (e.contains("message") && e["message"].is_string()) msg = e["message"].get<std::string>();
        if (e.contains("type") && e["type"].is_string()) msg = e["type"].get<std::string>() + ": " + msg;
    } catch (const std::exception&) {
        msg = body.substr(0, 200);
    }
    return "HTTP " + std::to_string(status) + (msg.empty() ? "" : ": " + clean_text(msg, 900));
}

}  // namespace

std::string form_encode(const Form& form) {
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (const auto& kv : form) {
        if (!out.empty()) out += '&';
        for (const std::string* s : {&kv.first, &kv.second}) {
            for (unsigned char c : *s) {
                if (unreserved(c)) {
                    out += static_cast<char>(c);
                } else {
                    out += '%';
                    out += hex[c >> 4];
                    out += hex[c & 15];
                }
            }
            if (s == &kv.first) out += '=';
        }
    }
    return out;
}

std::string idempotency_key(std::int64_t reward_id, std::string_view operation) {
    return "referral-" + std::to_string(reward_id) + "-" + std::string(operation);
}

int stripe_steps(std::string_view op) { return op == kOpPromotionCode ? 2 : 1; }

std::optional<StripeCall> stripe_call(const RewardInfo& w, std::string_view op, int step,
                                      std::string_view customer, std::string_view coupon, std::string* error) {
    if (w.kind != "credit" || w.amount <= 0 || w.currency.size() != 3) {
        *error = "reward " + std::to_string(w.id) + " is not a credit Stripe can pay";
        return std::nullopt;
    }
    const std::string rid = std::to_string(w.id);
    StripeCall call;
    if (op == kOpCredit || op == kOpReverseCredit) {
        if (!is_customer(customer)) {
            *error = "no Stripe customer for user " + w.user_id;
            return std::nullopt;
        }
        const bool credit = op == kOpCredit;
        call.path = "/v1/customers/" + std::string(customer) + "/balance_transactions";
        // A negative amount is a credit: it lowers what the customer owes.
        call.form = {{"amount", std::to_string(credit ? -w.amount : w.amount)},
                     {"currency", w.currency},
                     {"description", credit ? reward_label(w) : "Reversal: " + reward_label(w)},
                     {"metadata[reward_id]", rid}};
        if (!credit && !w.external_id.empty()) call.form.push_back({"metadata[reverses]", w.external_id});
    } else if (op == kOpPromotionCode && step == 0) {
        call.path = "/v1/coupons";
        call.form = {{"amount_off", std::to_string(w.amount)}, {"currency", w.currency},
                     {"duration", "once"},                     {"max_redemptions", "1"},
                     {"name", reward_label(w)},                {"metadata[reward_id]", rid}};
        call.idempotency_key = idempotency_key(w.id, "coupon");
        return call;
    } else if (op == kOpPromotionCode && step == 1) {
        if (!safe_id(coupon)) {
            *error = "Stripe answered a coupon without a usable id";
            return std::nullopt;
        }
        call.path = "/v1/promotion_codes";
        call.form = {{"coupon", std::string(coupon)}};
        if (!customer.empty()) call.form.push_back({"customer", std::string(customer)});
        call.form.push_back({"max_redemptions", "1"});
        call.form.push_back({"metadata[reward_id]", rid});
    } else if (op == kOpDeactivate) {
        if (!safe_id(w.external_id)) {
            *error = "reward " + rid + " has no promotion code id to deactivate";
            return std::nullopt;
        }
        call.path = "/v1/promotion_codes/" + w.external_id;
        call.form = {{"active", "false"}};
    } else {
        *error = "unknown Stripe operation \"" + clean_text(op, 40) + "\"";
        return std::nullopt;
    }
    call.idempotency_key = idempotency_key(w.id, op);
    return call;
}

HttpRequest stripe_request(const StripeConfig& stripe, const StripeCall& call) {
    HttpRequest r;
    r.method = "POST";
    r.url = stripe.api_base + call.path;
    r.body = form_encode(call.form);
    r.headers = {{"Authorization", "Bearer " + stripe.api_key},
                 {"Stripe-Version", stripe.api_version},
                 {"Idempotency-Key", call.idempotency_key},
                 {"Content-Type", "application/x-www-form-urlencoded"}};
    return r;
}

std::int64_t parse_retry_after_ms(std::string_view v) {
    std::int64_t s;
    if (!parse_int64(v, &s) || s < 0) return -1;
    return std::min<std::int64_t>(s, kMaxDelayMs / 1000) * 1000;
}

Verdict judge_stripe(const HttpReply& reply) {
    Verdict v;
    if (reply.status == 0) {
        v.kind = Verdict::retry;
        v.error = "network: " + clean_text(reply.error, 200);
        return v;
    }
    if (reply.status >= 200 && reply.status < 300) {
        try {
            auto j = nlohmann::json::parse(reply.body);
            if (j.contains("id") && j["id"].is_string()) v.id = j["id"].get<std::string>();
        } catch (const std::exception&) {
        }
        if (!safe_id(v.id)) {
            // Applied or not, we cannot tell: the same key replays the answer.
            v.kind = Verdict::retry;
            v.error = "HTTP " + std::to_string(reply.status) + " without an object id";
            v.id.clear();
            return v;
        }
        v.kind = Verdict::done;
        return v;
    }
    v.error = stripe_message(reply.body, reply.status);
    v.retry_after_ms = parse_retry_after_ms(reply.retry_after);
    if (reply.should_retry == "true") {
        v.kind = Verdict::retry;
    } else if (reply.should_retry == "false") {
        v.kind = Verdict::dead;
    } else {
        const long s = reply.status;
        v.kind = (s == 409 || s == 429 || s >= 500) ? Verdict::retry : Verdict::dead;
    }
    return v;
}

Verdict judge_webhook(const HttpReply& reply) {
    Verdict v;
    if (reply.status >= 200 && reply.status < 300) {
        v.kind = Verdict::done;
        return v;
    }
    v.kind = Verdict::retry;
    v.error = reply.status == 0 ? "network: " + clean_text(reply.error, 200)
                                : "HTTP " + std::to_string(reply.status) + ": " + clean_text(reply.body, 200);
    v.retry_after_ms = parse_retry_after_ms(reply.retry_after);
    return v;
}

std::string webhook_signature(std::string_view secret, std::int64_t unix_s, std::string_view body) {
    const std::string t = std::to_string(unix_s);
    std::string msg = t + ".";
    msg.append(body.data(), body.size());
    HmacSha256 mac(reinterpret_cast<const unsigned char*>(secret.data()), secret.size());
    unsigned char digest[HmacSha256::kDigestLen];
    if (!mac.mac(msg, digest)) throw std::runtime_error("HMAC-SHA256 failed");
    char hex[2 * HmacSha256::kDigestLen];
    hex_lower(digest, sizeof(digest), hex);
    return "t=" + t + ",v1=" + std::string(hex, sizeof(hex));
}

HttpRequest webhook_request(const WebhookConfig& hook, std::string_view body, std::int64_t unix_s) {
    HttpRequest r;
    r.method = "POST";
    r.url = hook.url;
    r.body = std::string(body);
    r.headers = {{"Content-Type", "application/json"},
                 {"Referral-Signature", webhook_signature(hook.secret, unix_s, body)}};
    return r;
}

std::int64_t backoff_ms(std::int64_t attempts, std::int64_t retry_after_ms, double unit_random) {
    std::int64_t base = 1000;
    for (std::int64_t i = 1; i < attempts && base < kMaxDelayMs; i++) base *= 2;
    base = std::min(base, kMaxDelayMs);
    double jitter = 0.5 + 0.5 * std::clamp(unit_random, 0.0, 0.999999);
    std::int64_t d = static_cast<std::int64_t>(static_cast<double>(base) * jitter);
    return std::max(d, std::min(retry_after_ms, kMaxDelayMs));
}

}  // namespace referral::worker

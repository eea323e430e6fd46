#include "worker/lifecycle.h"

#include <ctime>

#include "core/random.h"
#include "worker/reward_json.h"
#include "worker/util.h"

namespace referral::worker {

std::int64_t iso_to_ms(std::string_view s) noexcept {
    // 2026-01-02T03:04:05Z
    if (s.size() != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[19] != 'Z')
        return -1;
    auto num = [&](std::size_t at, std::size_t n) {
        int v = 0;
        for (std::size_t i = at; i < at + n; i++) {
            if (s[i] < '0' || s[i] > '9') return -1;
            v = v * 10 + (s[i] - '0');
        }
        return v;
    };
    std::tm tm{};
    tm.tm_year = num(0, 4) - 1900;
    tm.tm_mon = num(5, 2) - 1;
    tm.tm_mday = num(8, 2);
    tm.tm_hour = num(11, 2);
    tm.tm_min = num(14, 2);
    tm.tm_sec = num(17, 2);
    if (tm.tm_year < 0 || tm.tm_mon < 0 || tm.tm_mday < 0 || tm.tm_hour < 0 || tm.tm_min < 0 || tm.tm_sec < 0)
        return -1;
    return static_cast<std::int64_t>(timegm(&tm)) * 1000;
}

namespace {

const char* pay_operation(std::string_view deliver) {
    if (deliver == "stripe_balance") return kOpCredit;
    if (deliver == "stripe_promotion_code") return kOpPromotionCode;
    return nullptr;
}

const char* reverse_operation(std::string_view deliver) {
    if (deliver == "stripe_balance") return kOpReverseCredit;
    if (deliver == "stripe_promotion_code") return kOpDeactivate;
    return nullptr;
}

// The outbox row of one Stripe operation; none when it exists already
// (the unique index: one per reward and operation, i.e. per idempotency key).
void queue_stripe(Store& store, std::int64_t reward_id, const char* op, std::string_view at) {
    NewDelivery d;
    d.reward_id = reward_id;
    d.target = "stripe";
    d.operation = op;
    d.at = at;
    store.insert_delivery(d);
}

}  // namespace

void Lifecycle::webhook(Store& store, const char* type, const std::string& object_json,
                        std::optional<std::int64_t> reward_id, std::string_view at) {
    auto endpoints = config_.webhooks_for(type);
    if (endpoints.empty()) return;
    // One event id for every endpoint; the body is frozen here, so every
    // retry sends the same bytes (only the signature's time changes).
    char id[kIdLen];
    if (!random_id(id)) throw std::runtime_error("no randomness for a webhook event id");
    const std::string event_id = "evt_" + std::string(id, kIdLen);
    const std::string body = "{\"id\":\"" + event_id + "\",\"type\":\"" + type +
                             "\",\"created\":" + std::to_string(now_ms() / 1000) +
                             ",\"data\":{\"object\":" + object_json + "}}";
    for (const WebhookConfig* w : endpoints) {
        NewDelivery d;
        d.reward_id = reward_id;
        d.target = "webhook";
        d.operation = type;
        d.endpoint = w->url;
        d.event_id = event_id;
        d.payload = body;
        d.at = at;
        store.insert_delivery(d);
    }
}

void Lifecycle::reward_event(Store& store, const char* type, std::int64_t reward_id, std::string_view at) {
    if (config_.webhooks_for(type).empty()) return;
    if (auto w = store.reward(reward_id)) webhook(store, type, reward_json(*w).dump(), reward_id, at);
}

void Lifecycle::created(Store& store, std::int64_t reward_id, const RewardRow& row, std::string_view at) {
    // The new row is read back only when something goes out for it (a
    // webhook, a Stripe payment): a round trip per reward otherwise.
    const bool available_now = row.status == "available";
    if (config_.webhooks_for("reward.created").empty() &&
        !(available_now && (pay_operation(to_string(row.grant->deliver)) != nullptr ||
                            !config_.webhooks_for("reward.available").empty())))
        return;
    // One read of the new row serves both events: nothing changes it between them.
    auto w = store.reward(reward_id);
    if (!w) return;
    if (!config_.webhooks_for("reward.created").empty())
        webhook(store, "reward.created", reward_json(*w).dump(), reward_id, at);
    if (w->status == "available") available(store, *w, at);
}

void Lifecycle::became_available(Store& store, std::int64_t reward_id, std::string_view at) {
    if (auto w = store.reward(reward_id)) available(store, *w, at);
}

void Lifecycle::available(Store& store, const RewardInfo& w, std::string_view at) {
    if (const char* op = pay_operation(w.deliver)) queue_stripe(store, w.id, op, at);
    if (!config_.webhooks_for("reward.available").empty())
        webhook(store, "reward.available", reward_json(w).dump(), w.id, at);
}

void Lifecycle::linked(Store& store, std::string_view user, std::string_view referred_by, std::string_view code,
                       std::string_view at) {
    if (config_.webhooks_for("referral.linked").empty()) return;
    nlohmann::json o{{"user", user}, {"referred_by", referred_by}, {"code", code}};
    // `at` is the database's text form; the webhook shows ISO 8601.
    std::string iso(at.substr(0, 19));
    if (iso.size() == 19) iso[10] = 'T';
    o["linked_at"] = iso + "Z";
    webhook(store, "referral.linked", o.dump(), std::nullopt, at);
}

RefundOutcome Lifecycle::refund(Store& store, std::string_view referred_user, std::string_view order,
                                std::int64_t ts_ms, std::string_view at, std::int64_t* reversed) {
    *reversed = 0;
    if (order.empty()) return RefundOutcome::unknown_order;
    auto rewards = store.rewards_for_order(referred_user, order);
    if (rewards.empty()) return RefundOutcome::unknown_order;
    bool outside = false;
    for (const RewardInfo& w : rewards) {
        const RewardRule* rule = config_.rule(w.referral_type);
        const std::int64_t clawback = rule ? rule->clawback_ms : RewardRule().clawback_ms;
        const std::int64_t credited = iso_to_ms(w.date_credited);
        if (credited < 0 || ts_ms - credited > clawback) {
            outside = true;
            continue;
        }
        if (w.status == "reversed" || w.status == "rejected") continue;
        if (!store.reverse_reward(w.id, w.status, at)) continue;  // changed meanwhile
        (*reversed)++;
        if (w.status == "paid") {
            // Paid out: take it back at the provider too.
            if (const char* op = reverse_operation(w.deliver)) {
                queue_stripe(store, w.id, op, at);
            }
        } else if (w.status == "available") {
            // Not sent yet: nothing to take back. A request already tried
            // may have reached Stripe: it goes on, and paid() reverses it.
            store.cancel_unsent(w.id, "cancelled: the reward was reversed before it was delivered", at);
        }
        reward_event(store, "reward.reversed", w.id, at);
    }
    if (*reversed > 0) return RefundOutcome::reversed;
    return outside ? RefundOutcome::outside_window : RefundOutcome::already_final;
}

void Lifecycle::paid(Store& store, std::int64_t reward_id, std::string_view external_id, std::string_view at) {
    if (store.mark_paid(reward_id, external_id, at)) {
        reward_event(store, "reward.paid", reward_id, at);
        return;
    }
    // Reversed while the request was in flight: the money went out, so
    // the reversal goes out too.
    auto w = store.reward(reward_id);
    if (!w || w->status != "reversed") return;
    store.set_reward_external_id(reward_id, external_id);
    if (const char* op = reverse_operation(w->deliver)) {
        queue_stripe(store, reward_id, op, at);
    }
}

bool Lifecycle::redeem(Store& store, std::int64_t reward_id, std::string_view at) {
    if (!store.redeem(reward_id, at)) return false;
    reward_event(store, "reward.redeemed", reward_id, at);
    return true;
}

std::string not_redeemable(const RewardInfo& w) {
    if (w.status == "redeemed") return "was already redeemed on " + w.date_redeemed;
    if (w.status == "pending") return "is pending until " + w.hold_until + " (the rule's hold period)";
    if (w.status == "review") return "is in review" + (w.reason.empty() ? std::string() : " (" + w.reason + ")");
    if (w.status == "reversed") return "was reversed on " + w.reversed_at + " (its order was refunded)";
    if (w.status == "rejected") return "was rejected in review";
    if (w.status == "paid") return "was already paid through Stripe on " + w.paid_at;
    if (w.deliver != "app") return "is delivered through Stripe (" + w.deliver + "), not by the application";
    return std::string();
}

std::int64_t Lifecycle::promote_due(Store& store, std::string_view now, int limit) {
    auto ids = store.promote_due(now, limit);
    for (std::int64_t id : ids) became_available(store, id, now);
    return static_cast<std::int64_t>(ids.size());
}

bool Lifecycle::decide(Store& store, std::int64_t reward_id, bool approve, std::string_view reason,
                       std::string_view at) {
    if (!store.review_decision(reward_id, approve, reason, at)) return false;
    if (approve) became_available(store, reward_id, at);
    return true;
}

}  // namespace referral::worker

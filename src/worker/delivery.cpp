#include "worker/delivery.h"

#include <unistd.h>

#include <algorithm>
#include <random>

#include "worker/util.h"
#include "worker/worker.h"

namespace referral::worker {
namespace {

constexpr std::int64_t kConnectTimeoutMs = 5000;
constexpr std::int64_t kIdleMs = 1000;     // poll when there was nothing to do
constexpr std::int64_t kFlushMs = 1000;    // record outcomes at least this often
constexpr int kPromote = 200;

double unit_random() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

bool sleep_ms(std::int64_t ms) {
    for (std::int64_t slept = 0; slept < ms; slept += 50) {
        if (g_stop) return false;
        usleep(50 * 1000);
    }
    return !g_stop;
}

}  // namespace

DeliveryLoop::DeliveryLoop(const Config& config, DatabaseUrl database, std::string owner)
    : config_(config), database_(std::move(database)), owner_(std::move(owner)), lifecycle_(config_) {}

void DeliveryLoop::run() noexcept {
    if (config_.retention_ms > 0)
        log(LogLevel::info, "retention: ip, user agent and URLs of responses are cleared after %llds",
            static_cast<long long>(config_.retention_ms / 1000));
    if (config_.stripe.enabled)
        log(LogLevel::info, "delivery: Stripe at %s (Stripe-Version %s), %zu webhook endpoint(s)",
            config_.stripe.api_base.c_str(), config_.stripe.api_version.c_str(), config_.webhooks.size());
    else
        log(LogLevel::info, "delivery: no Stripe (rewards go to the application), %zu webhook endpoint(s)",
            config_.webhooks.size());
    int backoff = 200;
    bool released = false;
    while (!g_stop) {
        try {
            if (!store_) {
                store_ = open_store(database_, false);
                store_->require_current_schema();
            }
            if (!released) {
                // Restarted under the same name: what we held is ours to send again.
                store_->release_leases(owner_);
                released = true;
            }
            bool busy = round();
            busy = retention() || busy;
            backoff = 200;
            if (!busy) sleep_ms(kIdleMs);
        } catch (const DbError& e) {
            if (store_) store_->rollback();
            store_.reset();
            log(LogLevel::warn, "delivery: database error: %s; retrying in %.1fs", e.what(), backoff / 1000.0);
            sleep_ms(backoff);
            backoff = std::min(10000, backoff * 3 / 2 + 100);
        } catch (const std::exception& e) {
            if (store_) store_->rollback();
            store_.reset();
            log(LogLevel::error, "delivery: unexpected error: %s; retrying in 10s", e.what());
            sleep_ms(10000);
        }
    }
}

bool DeliveryLoop::round() {
    const std::int64_t start = now_ms();
    const std::string now = format_db_time(start);
    store_->begin();
    std::int64_t promoted = lifecycle_.promote_due(*store_, now, kPromote);
    auto claimed = store_->claim_deliveries(now, format_db_time(start + kLeaseMs), owner_, kClaim);
    store_->commit();
    totals_.promoted += promoted;
    if (promoted > 0) log(LogLevel::info, "delivery: %lld rewards past their hold are available", static_cast<long long>(promoted));

    std::vector<Outcome> outcomes;
    std::int64_t last_flush = now_ms();
    for (const DeliveryInfo& d : claimed) {
        // Past half the lease, leave the rest for the next round (released
        // below) rather than send what another worker may claim.
        if (g_stop || now_ms() - start > kLeaseMs / 2) break;
        outcomes.push_back(attempt(d));
        if (now_ms() - last_flush >= kFlushMs) {
            record(&outcomes);
            last_flush = now_ms();
        }
    }
    record(&outcomes);
    if (!claimed.empty()) store_->release_leases(owner_);
    return promoted > 0 || !claimed.empty();
}

bool DeliveryLoop::retention() {
    if (now_ms() < next_retention_ms_) return false;
    constexpr int kBatch = 500;
    store_->begin();
    // Conversions kept for a signup that never came, past the window.
    store_->drop_early_before(format_db_time(now_ms() - config_.window_ms - 86400LL * 1000));
    if (config_.click_dedup_ms > 0) store_->drop_clicks_before(format_db_time(now_ms() - config_.click_dedup_ms - 3600000));
    std::int64_t n = config_.retention_ms > 0
                         ? store_->apply_retention(format_db_time(now_ms() - config_.retention_ms), kBatch)
                         : 0;
    store_->commit();
    totals_.retained += n;
    // A full batch: more is due, go on at once; else look again in a minute.
    next_retention_ms_ = n >= kBatch ? 0 : now_ms() + 60000;
    if (n > 0) log(LogLevel::debug, "retention: %lld rows cleared", static_cast<long long>(n));
    return n >= kBatch;
}

const WebhookConfig* DeliveryLoop::endpoint(const DeliveryInfo& d) const {
    for (const WebhookConfig& w : config_.webhooks) {
        if (w.url == d.endpoint) return &w;
    }
    return nullptr;
}

int DeliveryLoop::max_attempts(const DeliveryInfo& d) const {
    if (d.target == "stripe") return config_.stripe.max_attempts;
    const WebhookConfig* hook = endpoint(d);
    return hook ? hook->max_attempts : 1;
}

DeliveryLoop::Outcome DeliveryLoop::attempt(const DeliveryInfo& d) {
    Outcome o;
    o.delivery = d;
    Verdict v = d.target == "stripe" ? stripe_attempt(d, &o.paid_id) : webhook_attempt(d);
    const std::int64_t attempts = d.attempts + 1;
    DeliveryResult& r = o.result;
    r.external_id = v.id;
    if (v.kind == Verdict::done) {
        r.state = "done";
        totals_.delivered++;
    } else if (v.kind == Verdict::retry && attempts < max_attempts(d)) {
        r.state = "queued";
        r.error = v.error;
        r.next_attempt_at = format_db_time(now_ms() + backoff_ms(attempts, v.retry_after_ms, unit_random()));
        totals_.retried++;
        log(LogLevel::info, "delivery %lld (%s %s) failed, attempt %lld: %s; retrying at %s",
            static_cast<long long>(d.id), d.target.c_str(), d.operation.c_str(), static_cast<long long>(attempts),
            v.error.c_str(), r.next_attempt_at.c_str());
    } else {
        r.state = "dead";
        r.error = v.kind == Verdict::retry ? "gave up after " + std::to_string(attempts) + " attempts: " + v.error
                                           : v.error;
        totals_.dead++;
        log(LogLevel::warn, "delivery %lld (%s %s) is dead: %s", static_cast<long long>(d.id), d.target.c_str(),
            d.operation.c_str(), r.error.c_str());
    }
    return o;
}

Verdict DeliveryLoop::stripe_attempt(const DeliveryInfo& d, std::string* paid_id) {
    Verdict v;
    if (!config_.stripe.enabled) {
        v.kind = Verdict::dead;
        v.error = "Stripe is not configured ([stripe] in the worker's config)";
        return v;
    }
    auto reward = d.reward_id ? store_->reward(*d.reward_id) : std::nullopt;
    if (!reward) {
        v.kind = Verdict::dead;
        v.error = "the delivery's reward does not exist";
        return v;
    }
    std::string coupon;
    const int steps = stripe_steps(d.operation);
    for (int step = 0; step < steps; step++) {
        std::string error;
        auto call = stripe_call(*reward, d.operation, step, d.customer, coupon, &error);
        if (!call) {
            v.kind = Verdict::dead;
            v.error = error;
            return v;
        }
        HttpReply reply = http_.send(stripe_request(config_.stripe, *call), kConnectTimeoutMs,
                                     config_.stripe.timeout_ms);
        totals_.requests++;
        v = judge_stripe(reply);
        if (v.kind != Verdict::done) return v;
        coupon = v.id;
    }
    if (d.operation == kOpCredit || d.operation == kOpPromotionCode) *paid_id = v.id;
    return v;
}

Verdict DeliveryLoop::webhook_attempt(const DeliveryInfo& d) {
    Verdict v;
    const WebhookConfig* hook = endpoint(d);
    if (!hook) {
        v.kind = Verdict::dead;
        v.error = "the endpoint is no longer in the worker's config";
        return v;
    }
    HttpReply reply = http_.send(webhook_request(*hook, d.payload, now_ms() / 1000), kConnectTimeoutMs,
                                 hook->timeout_ms);
    totals_.requests++;
    return judge_webhook(reply);
}

void DeliveryLoop::record(std::vector<Outcome>* outcomes) {
    if (outcomes->empty()) return;
    const std::string now = format_db_time(now_ms());
    store_->begin();
    for (const Outcome& o : *outcomes) {
        if (!store_->record_delivery(o.delivery.id, owner_, o.result, now)) {
            // The lease passed to another worker: it sends (with the same
            // key) and records; nothing of ours to add.
            log(LogLevel::warn, "delivery %lld: lease lost before its outcome was recorded",
                static_cast<long long>(o.delivery.id));
            continue;
        }
        if (!o.paid_id.empty() && o.delivery.reward_id) lifecycle_.paid(*store_, *o.delivery.reward_id, o.paid_id, now);
    }
    store_->commit();
    outcomes->clear();
}

}  // namespace referral::worker

// The reward lifecycle (SPEC "Reward lifecycle"): each transition, and the
// outbox rows it writes (Stripe requests, webhooks), inside the caller's
// transaction, so that a change and what tells the world about it commit
// or roll back together.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "worker/config.h"
#include "worker/store.h"

namespace referral::worker {

// The Stripe operations of a reward, named in its Idempotency-Key
// (referral-<reward id>-<operation>).
constexpr const char* kOpCredit = "credit";                // stripe_balance
constexpr const char* kOpReverseCredit = "reverse";        // its opposite transaction
constexpr const char* kOpPromotionCode = "promotion_code"; // coupon + promotion code
constexpr const char* kOpDeactivate = "deactivate";        // promotion code active=false

enum class RefundOutcome { reversed, unknown_order, outside_window, already_final };

class Lifecycle {
public:
    explicit Lifecycle(const Config& config) : config_(config) {}

    // A reward row was inserted (pending, review or available), from `row`.
    void created(Store& store, std::int64_t reward_id, const RewardRow& row, std::string_view at);
    // A reward is now available: Stripe delivery queued when it is
    // delivered through Stripe, reward.available for the application.
    void became_available(Store& store, std::int64_t reward_id, std::string_view at);
    void linked(Store& store, std::string_view user, std::string_view referred_by, std::string_view code,
                std::string_view at);
    // A `refund`/`chargeback` of `order` by `referred_user` at `ts_ms`.
    RefundOutcome refund(Store& store, std::string_view referred_user, std::string_view order,
                         std::int64_t ts_ms, std::string_view at, std::int64_t* reversed);
    // The Stripe request that pays the reward succeeded.
    void paid(Store& store, std::int64_t reward_id, std::string_view external_id, std::string_view at);
    // available -> redeemed, for a reward the application fulfils; false
    // when it cannot be (not_redeemable() says why).
    bool redeem(Store& store, std::int64_t reward_id, std::string_view at);
    // Pending rewards whose hold has passed; how many were promoted.
    std::int64_t promote_due(Store& store, std::string_view now, int limit);
    // review -> available / rejected; false when the reward was not in review.
    bool decide(Store& store, std::int64_t reward_id, bool approve, std::string_view reason,
                std::string_view at);

private:
    // Queues what an available reward needs: its Stripe payment, reward.available.
    void available(Store& store, const RewardInfo& w, std::string_view at);
    void reward_event(Store& store, const char* type, std::int64_t reward_id, std::string_view at);
    void webhook(Store& store, const char* type, const std::string& object_json,
                 std::optional<std::int64_t> reward_id, std::string_view at);

    const Config& config_;
};

// Why `w` cannot be redeemed ("was already redeemed on ...", "is pending
// until ...", "is paid through Stripe ..."); empty when it can.
std::string not_redeemable(const RewardInfo& w);

// Unix milliseconds of an ISO 8601 UTC time "YYYY-MM-DDTHH:MM:SSZ"; -1 if not one.
std::int64_t iso_to_ms(std::string_view iso) noexcept;

}  // namespace referral::worker

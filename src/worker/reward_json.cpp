#include "worker/reward_json.h"

namespace referral::worker {
namespace {

nlohmann::json text_or_null(const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); }

}  // namespace

std::string reward_label(const RewardInfo& w) {
    return reward_label(w.kind == "credit" ? GrantKind::credit : GrantKind::trial_days, w.amount, w.currency);
}

nlohmann::json reward_json(const RewardInfo& w) {
    return nlohmann::json{{"id", w.id},
                          {"user", w.user_id},
                          {"referral_type", w.referral_type},
                          {"role", w.role},
                          {"referred_user", w.referred_user_id},
                          {"kind", w.kind},
                          {"amount", w.amount},
                          {"currency", text_or_null(w.currency)},
                          {"label", reward_label(w)},
                          {"status", w.status},
                          {"reason", text_or_null(w.reason)},
                          {"deliver", w.deliver},
                          {"order", text_or_null(w.order_id)},
                          {"external_id", text_or_null(w.external_id)},
                          {"date_credited", w.date_credited},
                          {"available_at", text_or_null(w.available_at)},
                          {"paid_at", text_or_null(w.paid_at)},
                          {"reversed_at", text_or_null(w.reversed_at)},
                          {"redeemed", w.redeemed},
                          {"date_redeemed", text_or_null(w.date_redeemed)}};
}

}  // namespace referral::worker

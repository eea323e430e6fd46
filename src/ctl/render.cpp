#include "ctl/render.h"

#include "worker/config.h"
#include "worker/util.h"

namespace referral::ctl {

using json = nlohmann::json;
using namespace referral::worker;

json link_json(const std::string& link_base, const std::string& code) {
    if (link_base.empty() || code.empty()) return nullptr;
    return link_base + code;
}

json code_json(const CodeInfo& c, const std::string& link_base) {
    return json{{"id", c.id},       {"user", c.user_id},          {"code", c.code},
                {"label", c.label}, {"created_at", c.created_at}, {"link", link_json(link_base, c.code)}};
}

std::string reward_label(const RewardInfo& w) {
    GrantKind kind = w.kind == "credit" ? GrantKind::credit : GrantKind::trial_days;
    return worker::reward_label(kind, w.amount, w.currency);
}

json reward_json(const RewardInfo& w) {
    json j{{"id", w.id},
           {"user", w.user_id},
           {"referral_type", w.referral_type},
           {"role", w.role},
           {"referred_user", w.referred_user_id},
           {"kind", w.kind},
           {"amount", w.amount},
           {"currency", w.currency.empty() ? json(nullptr) : json(w.currency)},
           {"label", reward_label(w)},
           {"date_credited", w.date_credited},
           {"redeemed", w.redeemed},
           {"date_redeemed", w.date_redeemed.empty() ? json(nullptr) : json(w.date_redeemed)}};
    return j;
}

bool valid_label(const std::string& label) {
    return label.size() <= 64 && clean_text(label, 64) == label && label.find('\t') == std::string::npos;
}

}  // namespace referral::ctl

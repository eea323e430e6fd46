// A reward as programs see it: `referralctl --json rewards`, the API and
// the `reward.*` webhooks all show this one shape.
#pragma once
#include <nlohmann/json.hpp>

#include "worker/store.h"

namespace referral::worker {

// "$10.00 credit", "7 extra trial days".
std::string reward_label(const RewardInfo& w);
nlohmann::json reward_json(const RewardInfo& w);

}  // namespace referral::worker

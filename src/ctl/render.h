// What referralctl and `referralctl serve` show of codes: one JSON shape
// for `--json` and for the HTTP API (rewards: worker/reward_json.h).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "worker/store.h"

namespace referral::ctl {

// link_base + code, or null when no link_base is configured.
nlohmann::json link_json(const std::string& link_base, const std::string& code);
nlohmann::json code_json(const worker::CodeInfo& c, const std::string& link_base);

// At most 64 printable characters, no tab (the `label` of a code).
bool valid_label(const std::string& label);

}  // namespace referral::ctl

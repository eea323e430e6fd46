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
    auto opt = [](const std::string& v) { return v.empty() ? json(nullptr) : json(v); };
    return json{{"id", c.id},
                {"user", c.user_id},
                {"code", c.code},
                {"label", c.label},
                {"created_at", c.created_at},
                {"expires_at", opt(c.expires_at)},
                {"revoked_at", opt(c.revoked_at)},
                {"link", link_json(link_base, c.code)}};
}

bool valid_label(const std::string& label) {
    return label.size() <= 64 && clean_text(label, 64) == label && label.find('\t') == std::string::npos;
}

}  // namespace referral::ctl

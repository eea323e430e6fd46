#include "core/code.h"

namespace referral {

bool is_valid_code(std::string_view code) noexcept {
    if (code.size() < kCodeMinLen || code.size() > kCodeMaxLen) return false;
    for (unsigned char c : code) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

}  // namespace referral

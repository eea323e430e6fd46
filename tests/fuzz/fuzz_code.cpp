// libFuzzer target: is_valid_code agrees with a naive reference of the rule
// "4 to 64 characters of [A-Za-z0-9_-]".
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "core/code.h"

namespace {

bool reference(const std::string& s) {
    static const char kAllowed[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
    if (s.size() < 4 || s.size() > 64) return false;
    for (char c : s) {
        // memchr, not strchr: strchr would "find" the terminating NUL.
        if (std::memchr(kAllowed, c, sizeof(kAllowed) - 1) == nullptr) return false;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string s(reinterpret_cast<const char*>(data), size);
    bool got = referral::is_valid_code(std::string_view(s));
    if (got != reference(s)) std::abort();
    // Every prefix and every suffix as well (cheap, covers lengths 3/4/64/65
    // for long inputs).
    if (size <= 128) {
        for (std::size_t n = 0; n <= size; n++) {
            std::string p = s.substr(0, n);
            if (referral::is_valid_code(p) != reference(p)) std::abort();
            std::string q = s.substr(n);
            if (referral::is_valid_code(q) != reference(q)) std::abort();
        }
    }
    return 0;
}

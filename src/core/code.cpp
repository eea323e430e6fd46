#include "core/code.h"

#include <array>

namespace referral {
namespace {

// 1 for the bytes a code may hold: [A-Za-z0-9_-].
constexpr std::array<unsigned char, 256> kCodeByte = [] {
    std::array<unsigned char, 256> t{};
    for (int c = 'a'; c <= 'z'; c++) t[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) t[c] = 1;
    for (int c = '0'; c <= '9'; c++) t[c] = 1;
    t['_'] = 1;
    t['-'] = 1;
    return t;
}();

}  // namespace

bool is_valid_code(std::string_view code) noexcept {
    if (code.size() < kCodeMinLen || code.size() > kCodeMaxLen) return false;
    // A table and no early exit: one load per byte and no branch on the
    // byte's class, which the codes in real traffic make unpredictable.
    unsigned ok = 1;
    for (unsigned char c : code) ok &= kCodeByte[c];
    return ok != 0;
}

}  // namespace referral

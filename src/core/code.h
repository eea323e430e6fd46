// Referral code validation: the one rule shared by the module and the worker.
#pragma once
#include <cstddef>
#include <string_view>

namespace referral {

constexpr std::size_t kCodeMinLen = 4;
constexpr std::size_t kCodeMaxLen = 64;

// A valid code is 4 to 64 characters of [A-Za-z0-9_-]. Anything else
// (empty, CR/LF, quotes, percent-encoding, '.') is refused.
bool is_valid_code(std::string_view code) noexcept;

}  // namespace referral
